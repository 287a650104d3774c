"""Run the API in one or more processes behind one port, and stop them gracefully on SIGTERM.

One Python process uses one core, so ``--workers N`` starts N processes that
each listen on the same address with ``SO_REUSEPORT``; the kernel spreads new
connections across them. The parent only supervises:

* it binds the port first (without listening) to fail early with a clear
  message when the port is taken, and keeps it reserved; the workers then bind
  the same port beside it. Before that it binds the port once without
  ``SO_REUSEPORT``: another process listening there (another ``freshrec api``
  included, whose sockets would otherwise let ours join theirs and take a
  share of its requests) makes that fail;
* it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory so ``/metrics``
  adds up every worker (see :mod:`serving.metrics`), and removes it at the end;
* it forwards SIGTERM and SIGINT to the workers, each of which stops
  accepting, lets in-flight requests finish (a request makes at most two
  Redis reads, each bounded by the read deadline, so twice that is the
  shutdown timeout), closes Redis and exits;
* if a worker dies on its own, it stops the others and exits 1, so the
  orchestrator restarts the whole unit rather than running short-handed.

Workers are spawned rather than forked so that each imports prometheus_client
after the variable is set, whatever the parent imported before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from freshrec.errors import ConfigError
from freshrec.ports import bind_problem
from freshrec.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # serving.metrics.MULTIPROC_ENV, without importing it


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; the exit code for the CLI."""
    with _reserve_port(settings.api_host, settings.api_port) as port:
        settings = settings.replace(api_port=port)
        log.info(
            "freshrec api: serving on http://%s:%d with %d worker process(es)",
            settings.api_host,
            port,
            settings.api_workers,
        )
        if settings.api_workers == 1:
            run_worker(settings)
            return 0
        with _metrics_dir():
            return _supervise(settings)


def run_worker(settings: Settings) -> None:
    """Serve in this process until SIGTERM or SIGINT, then finish in-flight requests and return."""
    import uvloop

    from serving.app import create_app

    app = create_app(settings)
    app.on_startup.append(_freeze_startup_objects)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_until_signalled(app, settings))


async def _serve_until_signalled(app: web.Application, settings: Settings) -> None:
    """What ``web.run_app`` does, with :class:`~serving.protocol.GuardedRunner`'s connections."""
    from aiohttp import web

    from serving.protocol import GuardedRunner
    from serving.redis_client import read_deadline_s

    runner = GuardedRunner(
        app, settings, access_log=None, shutdown_timeout=2 * read_deadline_s(settings)
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, settings.api_host, settings.api_port, reuse_port=True)
        await site.start()
        await stop.wait()
    finally:
        await runner.cleanup()


async def _freeze_startup_objects(app: object) -> None:
    """Exempt everything alive at startup from garbage collection.

    Modules, the app and the Redis client live as long as the process; a full
    collection that walks them all takes tens of milliseconds here, which
    shows up directly in the API's p99 latency. After ``gc.freeze()`` a full
    collection only walks what requests allocated.
    """
    gc.freeze()


def _worker_main(settings: Settings) -> None:
    """Entry point of a spawned worker: it starts without the parent's logging setup."""
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s",
    )
    run_worker(settings)


def _supervise(settings: Settings) -> int:
    ctx = multiprocessing.get_context("spawn")
    workers: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(settings.api_workers):
            if stopping:
                break
            worker = ctx.Process(target=_worker_main, args=(settings,), name=f"freshrec-api-{i}")
            worker.start()
            workers.append(worker)
        code = 0
        pending = {worker.sentinel: worker for worker in workers}
        while pending:
            for sentinel in multiprocessing.connection.wait(list(pending)):
                assert isinstance(sentinel, int)
                exited = pending.pop(sentinel)
                exited.join()
                if not stopping:
                    log.error(
                        "worker %s (pid %s) exited with code %s; stopping the others",
                        exited.name,
                        exited.pid,
                        exited.exitcode,
                    )
                    code = 1
                    stop(signal.SIGTERM, None)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _reserve_port(host: str, port: int) -> Iterator[int]:
    """Bind (not listen on) ``host:port`` with SO_REUSEPORT for the workers' lifetime.

    The socket accepts nothing; it makes a taken port fail here, once, with a
    clear message, and keeps that port ours between the workers' restarts.
    SO_REUSEPORT alone would let this bind succeed beside any other process of
    the same user that listens with it (a second ``freshrec api`` on the same
    port, issue 26), so the port is first probed without it: an exclusive bind
    fails on any socket bound there.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            problem = bind_problem(host, port)
            if problem is not None:
                raise OSError(errno.EADDRINUSE, problem)
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(another process listens there; stop it, or set "
                "FRESHREC_API_HOST/FRESHREC_API_PORT or --host/--port)"
            ) from exc
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def _metrics_dir() -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers, unless the operator set one."""
    if os.environ.get(_MULTIPROC_ENV):
        yield
        return
    path = tempfile.mkdtemp(prefix="freshrec-api-metrics-")
    os.environ[_MULTIPROC_ENV] = path
    try:
        yield
    finally:
        del os.environ[_MULTIPROC_ENV]
        shutil.rmtree(path, ignore_errors=True)

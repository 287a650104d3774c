"""``freshrec demo`` (what ``./dev run`` runs): the whole system on one machine, supervised.

It starts the local stack and ``freshrec worker`` and ``freshrec api`` as
child processes, publishes the older part of a synthetic history, waits until
the worker holds it, makes the first model with ``freshrec retrain`` (the
CronJob's command: the model learns from the stream, as a deployment's does),
publishes the example events (rebased to now) and waits for a visitor's
personal list; then it publishes the newer part of the history, so a retrain against
the running demo has something new to learn and to be gated on. Then it watches the
children until Ctrl-C (or SIGTERM) and stops what it started, and only that.

What a new user met before this was a bash script, and each of these fixes one
of the ways it failed them:

* **A child that dies is noticed at once.** Every wait polls the children;
  when one exits, the demo says which, with its exit code and the last lines
  of its log, stops the others and the stack, and exits 1. Before the children
  start, the API's and the worker's web ports are tried, so a taken port fails
  within a second or two, naming the process and the port.
* **One run per state directory.** The demo holds an exclusive lock on
  ``STATE_DIR/run.lock`` for its lifetime (the kernel drops it when the process
  dies, however it dies). A second run in the same directory refuses with the
  first one's pid and touches nothing; a run in another ``--state-dir`` gets its
  own stack, ports and logs. A stack left behind by a run that was killed is
  stopped before a new one starts, which is safe only because the lock is held.
* **Each run has its own logs**: ``worker.log`` and ``api.log`` in the state
  directory are started afresh.

Once the visitor's list is shown, the demo says where the page is (``/`` on
the API) and keeps a gentle stream of synthetic ``watch`` events going through
``POST /events`` (one every ``--live-interval-s``; ``--no-live-events`` turns
it off), so the page moves by itself. The synthetic items get readable names:
the demo writes ``catalog.jsonl`` in the state directory and publishes it to
the items topic (``freshrec catalog publish``); the worker builds the item
table from it, which the API shows titles and tags from.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from freshrec import stack
from freshrec.argtypes import positive_float
from freshrec.errors import FreshrecError
from freshrec.ports import bind_problem
from freshrec.settings import Settings
from models import synthetic
from models.interactions import KIND_RATE

LOCK_FILE = "run.lock"
#: Lines of a dead child's log shown with the message.
LOG_TAIL_LINES = 15
#: How long the demo waits for the visitor's personal list once the events are published.
PERSONAL_LIST_TIMEOUT_S = 60.0
#: How often waits look at the children and the API.
POLL_INTERVAL_S = 0.2
#: How long a child may take to stop on SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
#: The first model comes from the CronJob's own command, with a short search: the demo should
#: start in seconds.
RETRAIN_ARGS = ("retrain", "--tune-budget-s", "10")
#: The synthetic history published as events: users, items and events (``freshrec train``'s
#: synthetic defaults). Item ``item-<i>`` is in cluster ``i % CLUSTERS``, and ``item-<c>`` is
#: its cluster's most popular.
SYNTHETIC_USERS = 2000
SYNTHETIC_ITEMS = 500
SYNTHETIC_EVENTS = 60_000
CLUSTERS = 8
#: Share of the history (the older events) the first model learns from; the newer rest is
#: published once the visitor's list is shown, so a retrain against the running demo has
#: events its current model never saw, and its gate scores both models on them.
FIRST_MODEL_SHARE = 0.6
#: How long the worker may take to hold the history published before the first retrain.
HISTORY_HELD_TIMEOUT_S = 300.0
#: What each cluster is called in the catalog, and the words the titles are made of.
GENRES = (
    "space opera",
    "film noir",
    "comedy",
    "nature documentary",
    "horror",
    "romance",
    "western",
    "animation",
)
_ADJECTIVES = [
    "Silent",
    "Crimson",
    "Hidden",
    "Last",
    "Golden",
    "Broken",
    "Distant",
    "Burning",
    "Frozen",
    "Midnight",
    "Electric",
    "Lonely",
    "Wild",
    "Secret",
    "Falling",
    "Iron",
    "Velvet",
    "Quiet",
    "Restless",
    "Paper",
    "Hollow",
    "Bright",
    "Endless",
    "Northern",
    "Lucky",
]
_NOUNS = [
    "Harbor",
    "Orbit",
    "Garden",
    "Signal",
    "Empire",
    "Highway",
    "Lantern",
    "Canyon",
    "Echo",
    "Station",
    "Meadow",
    "Frontier",
    "Mirror",
    "Voyage",
    "Island",
    "Circus",
    "Horizon",
    "Citadel",
    "Orchard",
    "Reef",
    "Summit",
    "Tide",
    "Carnival",
    "Archive",
    "Comet",
]
#: The users of ``examples/events.jsonl``, whom the live events keep busy.
VISITORS = tuple(f"visitor-{n}" for n in range(1, 9))


class DemoError(FreshrecError):
    """The demo cannot go on; the message says what failed and what to do."""


class ChildDied(DemoError):
    """A supervised child exited on its own."""


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` (empty when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Child:
    """One supervised process and the log its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    """Starts children in their own sessions (so Ctrl-C reaches only the demo, which stops
    them in order), notices when one exits, and stops them all."""

    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log: Path, env: Mapping[str, str]) -> Child:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise :class:`ChildDied` naming the first child that exited, with its log's tail."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise ChildDied(
                    f"the {child.name} exited with code {code}; last lines of {child.log}:\n"
                    + (tail(child.log) or "(empty)")
                )

    def stop_all(self) -> None:
        """SIGTERM every child still running, then SIGKILL the ones that outlive the timeout."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.terminate()
        for child in self.children:
            try:
                child.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()


@contextlib.contextmanager
def run_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``state_dir/run.lock`` or raise :class:`DemoError` naming the run that holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fh: IO[str] = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise DemoError(
                f"another run (pid {holder}) is using {state_dir}; stop it (Ctrl-C in its "
                "terminal) first, or give this one its own --state-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def check_port_free(what: str, host: str, port: int, setting: str) -> None:
    """Raise :class:`DemoError` when ``host:port`` cannot be bound now."""
    problem = bind_problem(host, port)
    if problem is not None:
        raise DemoError(
            f"the {what} cannot listen on {host}:{port} ({problem}); "
            f"free the port or set {setting} to another one"
        )


def check_events_readable(path: Path) -> None:
    """Raise :class:`DemoError` when the events to publish cannot be read, before the stack
    starts and a model is trained only to fail at the publish."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DemoError(
            f"cannot read the events {path}: {exc.strerror or exc}; "
            "run from the repository's root or give --events a JSON-lines file"
        ) from None


def write_history(older: Path, newer: Path, now_ms: int) -> tuple[int, int]:
    """The synthetic history as ``watch``/``rate`` events, its newest a minute before
    ``now_ms``: the older :data:`FIRST_MODEL_SHARE` into ``older``, the rest into ``newer``.
    Returns how many events each holds.

    The demo's model learns from the stream as a deployment's does (issue 26): the
    history goes through the worker into its state changelog, and ``freshrec retrain``
    reads it from there.
    """
    log = synthetic.generate(SYNTHETIC_USERS, SYNTHETIC_ITEMS, SYNTHETIC_EVENTS, seed=42).log
    shift = now_ms - 60_000 - int(log.ts.max())
    cut = int(len(log) * FIRST_MODEL_SHARE)
    users, items = log.users.ids, log.items.ids
    with open(older, "w", encoding="utf-8") as first, open(newer, "w", encoding="utf-8") as rest:
        for i in range(len(log)):
            event: dict[str, Any] = {
                "event_id": f"history-{i}",
                "user_id": users[log.user[i]],
                "item_id": items[log.item[i]],
                "ts": int(log.ts[i]) + shift,
            }
            if log.kind[i] == KIND_RATE:
                event |= {"type": "rate", "rating": float(log.value[i])}
            else:
                event |= {"type": "watch", "watched_s": float(log.value[i])}
                if not math.isnan(log.duration_s[i]):
                    event["duration_s"] = float(log.duration_s[i])
            (first if i < cut else rest).write(json.dumps(event) + "\n")
    return cut, len(log) - cut


def write_catalog(path: Path, n_items: int = SYNTHETIC_ITEMS) -> None:
    """A JSON-lines catalog naming the synthetic items: a title each, the cluster's genre as tag."""
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n_items):
            adjective = _ADJECTIVES[i % len(_ADJECTIVES)]
            noun = _NOUNS[i // len(_ADJECTIVES) % len(_NOUNS)]
            title = f"The {adjective} {noun}"
            entry = {"id": f"item-{i}", "title": title, "tags": [GENRES[i % CLUSTERS]]}
            out.write(json.dumps(entry) + "\n")


@dataclass
class LiveEvents:
    """A gentle stream of plausible ``watch`` events through ``POST /events``.

    Each visitor has a favourite cluster; an event is one of that cluster's
    items, popular ones more often, and now and then another cluster's, so the
    visitors' lists drift the way a person's would.
    """

    url: str
    rng: random.Random = field(default_factory=lambda: random.Random(15))
    sent: int = 0

    def __post_init__(self) -> None:
        self.favourite = {v: self.rng.randrange(CLUSTERS) for v in VISITORS}

    def next_event(self) -> dict[str, Any]:
        user = self.rng.choice(VISITORS)
        cluster = self.favourite[user] if self.rng.random() < 0.8 else self.rng.randrange(CLUSTERS)
        rank = min(int(self.rng.paretovariate(1.2)) - 1, SYNTHETIC_ITEMS // CLUSTERS - 1)
        self.sent += 1
        return {
            "type": "watch",
            "event_id": f"demo-{os.getpid()}-{self.sent}",
            "user_id": user,
            "item_id": f"item-{cluster + CLUSTERS * rank}",
            "watched_s": round(self.rng.uniform(600, 5400), 1),
            "duration_s": 5400,
            "ts": int(time.time() * 1000),
        }

    def send_one(self) -> None:
        """POST one event; a failure is reported on standard error and the stream goes on."""
        body = json.dumps([self.next_event()]).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=15):
                pass
        except OSError as exc:
            print(f"freshrec demo: a live event was not taken ({exc})", file=sys.stderr)


def _publish(env: Mapping[str, str], sup: Supervisor, *args: str) -> None:
    """``freshrec publish ARGS`` (its summary line shows); a failure ends the demo."""
    published = subprocess.run(_freshrec("publish", *args), env=env, stdin=subprocess.DEVNULL)
    sup.check()
    if published.returncode != 0:
        raise DemoError(f"publishing {args[-1]} failed (exit code {published.returncode})")


def _freshrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


def wait_personal(url: str, supervisor: Supervisor, timeout_s: float) -> Any:
    """The answer at ``url`` once its source is ``personal``; the children are checked meanwhile."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        supervisor.check()
        with contextlib.suppress(OSError, ValueError):
            body = _get_json(url)
            if body.get("source") == "personal":
                return body
        time.sleep(POLL_INTERVAL_S)
    raise DemoError(
        f"no personal list at {url} within {timeout_s:.0f}s (last answer: {body}); "
        "see the worker's and the API's logs"
    )


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all its labels) in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_held(metrics_url: str, events: int, supervisor: Supervisor, timeout_s: float) -> None:
    """Wait until the worker has read ``events`` and has nothing left to read, and its lists
    (written once a batch's state is in the changelog) stopped moving for a second."""
    deadline = time.monotonic() + timeout_s
    written, quiet_since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        supervisor.check()
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(metrics_url, timeout=2) as resp:
                text = resp.read().decode()
            consumed = metric_sum(text, "freshrec_worker_events_consumed_total")
            lag = metric_sum(text, "freshrec_worker_consumer_lag")
            now_written = metric_sum(text, "freshrec_worker_lists_written_total")
            if now_written != written:
                written, quiet_since = now_written, time.monotonic()
            if consumed >= events and lag == 0 and time.monotonic() - quiet_since >= 1.0:
                return
        time.sleep(POLL_INTERVAL_S)
    raise DemoError(
        f"the worker did not take the {events} history events within {timeout_s:.0f}s; "
        "see the worker's log"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    state_dir: Path = args.state_dir
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with run_lock(state_dir):
            check_events_readable(args.events)
            check_port_free("API", settings.api_host, settings.api_port, "FRESHREC_API_PORT")
            check_port_free(
                "worker's web server",
                settings.worker_web_host,
                settings.worker_web_port,
                "FRESHREC_WORKER_WEB_PORT",
            )
            stack.down(state_dir)  # a stack a killed run left behind: ours, we hold the lock
            supervisor = Supervisor()
            try:
                _run(args, settings, state_dir, supervisor)
            except KeyboardInterrupt:
                print("stopping the worker, the API and the stack", file=sys.stderr)
            finally:
                supervisor.stop_all()
                stack.down(state_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _run(args: argparse.Namespace, settings: Settings, state_dir: Path, sup: Supervisor) -> None:
    state = stack.up(state_dir)
    env = {
        **os.environ,
        **state.env,  # the model store too: what `freshrec stack env` exports
        "FRESHREC_DATA_DIR": os.environ.get("FRESHREC_DATA_DIR", str(state_dir / "worker")),
        "FRESHREC_API_PORT": str(settings.api_port),
    }
    catalog = state_dir / "catalog.jsonl"
    write_catalog(catalog)
    items = subprocess.run(
        _freshrec("catalog", "publish", str(catalog)), env=env, stdin=subprocess.DEVNULL
    )
    if items.returncode != 0:
        raise DemoError(f"publishing the catalog failed (exit code {items.returncode})")
    older, newer = state_dir / "history-older.jsonl", state_dir / "history-newer.jsonl"
    n_older, n_newer = write_history(older, newer, int(time.time() * 1000))
    sup.start("worker", _freshrec("worker"), state_dir / "worker.log", env)
    sup.start("API", _freshrec("api"), state_dir / "api.log", env)
    print(f"publishing the older part of a synthetic history ({n_older} events)", flush=True)
    _publish(env, sup, str(older))
    host = "127.0.0.1" if settings.worker_web_host in ("0.0.0.0", "") else settings.worker_web_host
    metrics = f"http://{host}:{settings.worker_web_port}/metrics"
    wait_held(metrics, n_older, sup, HISTORY_HELD_TIMEOUT_S)
    print("the worker holds it; the first model: freshrec " + " ".join(RETRAIN_ARGS), flush=True)
    retrained = subprocess.run(_freshrec(*RETRAIN_ARGS), env=env, stdin=subprocess.DEVNULL)
    sup.check()
    if retrained.returncode != 0:
        raise DemoError(
            f"freshrec retrain gave no first model (exit code {retrained.returncode}); "
            "its message is above"
        )
    # the visitors' events come after the first model (rebased to now, they would make its
    # data end now, and no later event could be one the model never saw)
    _publish(env, sup, "--rebase-ts", str(args.events))
    visitors = sum(1 for line in args.events.read_text().splitlines() if line.strip())
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "") else settings.api_host
    url = f"http://{host}:{settings.api_port}/recs/{args.user}?k=5&fields=title"
    body = wait_personal(url, sup, PERSONAL_LIST_TIMEOUT_S)
    print(f"GET {url}\n{json.dumps(body, indent=2)}")
    _publish(env, sup, str(newer))
    wait_held(metrics, n_older + visitors + n_newer, sup, HISTORY_HELD_TIMEOUT_S)
    print(
        f"\nthe newer part of the history is in too ({newer.name}): a retrain now learns "
        "from it and its gate scores both models on it:\n"
        f'  eval "$(freshrec stack env --state-dir {state_dir})"; freshrec retrain',
        flush=True,
    )
    base = f"http://{host}:{settings.api_port}"
    print(f"\nthe page: {base}/#{args.user}  (pick a user, click an item to watch it)")
    live = None if args.no_live_events else LiveEvents(f"{base}/events")
    if live is not None:
        print(
            f"sending a synthetic watch event every {args.live_interval_s:g}s to {base}/events "
            "so the page moves by itself (--no-live-events turns it off)"
        )
    print(
        f"worker and API are running (logs in {state_dir}/); Ctrl-C stops them and the stack",
        flush=True,
    )
    next_event = time.monotonic() + args.live_interval_s
    while True:
        sup.check()
        if live is not None and time.monotonic() >= next_event:
            live.send_one()
            next_event = time.monotonic() + args.live_interval_s
        time.sleep(POLL_INTERVAL_S)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run everything locally (what ./dev run runs): stack, model, worker, API",
        description="Starts the local stack, the worker and the API, publishes a synthetic "
        "history and the example events (rebased to now), makes the first model with "
        "freshrec retrain and prints a visitor's personal list; runs until Ctrl-C, then "
        "stops what it started. "
        "One run per state directory. Exit codes: 0 stopped by Ctrl-C; 1 a process died or "
        "could not start (the message names it and shows its log), a port is taken, or "
        "another run holds the state directory.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".freshrec"),
        help="the run's stack, model store, worker state and logs (default: .freshrec)",
    )
    parser.add_argument(
        "--events",
        type=Path,
        default=Path("examples/events.jsonl"),
        help="events to publish (default: %(default)s)",
    )
    parser.add_argument(
        "--user", default="visitor-1", help="whose list to show (default: %(default)s)"
    )
    parser.add_argument(
        "--no-live-events",
        action="store_true",
        help="do not send the gentle stream of synthetic watch events once the list is shown",
    )
    parser.add_argument(
        "--live-interval-s",
        type=positive_float,
        default=1.5,
        help="seconds between two synthetic watch events (default: %(default)s)",
    )
    parser.set_defaults(func=run)

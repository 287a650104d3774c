"""Profile the streaming worker at full load: main-thread CPU microseconds per event, by stage.

For each mix of ``bench_stream`` (``uniform``, every event a different user;
``zipf``, a realistic mix), this publishes a backlog of ``--events`` events,
starts the worker on it (``bench_stream.Stack``, the benchmark's own stack and
settings), and once ``--skip`` of the backlog is processed attaches
``py-spy record --format raw --threads`` to the worker process until ``--upto``
of it is. The main thread's CPU time over that window comes from
``/proc/PID/task/PID/stat`` (exact, not sampled), divided by the events
processed in it (the worker's freshness-histogram count, as the benchmark
counts them); py-spy's samples of the main thread only split that time over
:data:`STAGES`. Each sample goes to the stage of its innermost frame that a
rule of :data:`RULES` knows (so numpy under ``models/topk.py`` is top-k, and
aiokafka's connection code under the producer's sender is the changelog),
except that a sample inside the web server is a scrape, whatever its frames.
The bare Faust agent of ``bench_stream`` (``--bare``) is profiled the same way
on the same backlog, for its total: the limit of Faust's read path.

The rules name files and functions as they are on ``main`` when this was
written (issue 16); a renamed function falls to its file's rule, and a new
file to ``other``: rerun after a change and look at ``other`` first.

The report is a Markdown table per mix, on standard output, with the machine's
load average beside it (figures from a shared machine are noisy); the last line
is one JSON object ``{"bench": "profile_worker", "uniform": {...}, "zipf": {...}}``,
also written to ``loadtests/results/profile_worker.json``. Raw py-spy output
stays in the stack's work directory (printed).

Run: ``python loadtests/profile_worker.py`` (about 70 s on two cores;
needs ``py-spy``, in the ``dev`` extra, and permission to ptrace the worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import (
    BARE_CMD,
    MIXES,
    ROOT,
    WORKER_CMD,
    Stack,
    bare_count,
    poll_count,
    produce_backlog,
    worker_count,
)

from freshrec.settings import Settings

RESULT = ROOT / "loadtests" / "results" / "profile_worker.json"

#: The stages, in the report's order.
STAGES = (
    "validation",
    "state decode + apply",
    "history to confidences",
    "fold-in solve",
    "top-k / score product",
    "explanations",
    "list encoding",
    "changelog produce",
    "Redis pipeline",
    "metric updates",
    "batch orchestration (agent, pipeline)",
    "Faust's per-message path",
    "event loop (uvloop, asyncio)",
    "scrapes (this tool's polling)",
    "other",
)


@dataclass(frozen=True, slots=True)
class Rule:
    """Frames of a file whose path contains ``path``, and of one of ``functions`` (the last
    part of the qualified name; any function when empty), belong to ``stage``."""

    stage: str
    path: str
    functions: frozenset[str] = frozenset()

    def matches(self, function: str, path: str) -> bool:
        if self.path not in path:
            return False
        return not self.functions or function.rsplit(".", 1)[-1] in self.functions


def _rule(stage: str, path: str, *functions: str) -> Rule:
    return Rule(stage, path, frozenset(functions))


#: Samples with any of these frames are the stage whatever lies under them.
ANYWHERE = (
    _rule("scrapes (this tool's polling)", "/faust/web/"),
    _rule("scrapes (this tool's polling)", "/aiohttp/web"),
)

#: The innermost frame that one of these matches (first rule first) names the stage.
RULES = (
    # uvloop runs in C under the frame that started it: a sample that ends there
    # is the loop's own work (polling, socket I/O, scheduling callbacks).
    _rule("event loop (uvloop, asyncio)", "/asyncio/"),
    _rule("event loop (uvloop, asyncio)", "/uvloop/"),
    _rule("event loop (uvloop, asyncio)", "/mode/worker.py", "execute_from_commandline"),
    _rule("validation", "/schemas/validator.py"),
    _rule("validation", "/schemas/events.py"),
    _rule("validation", "/streams/dead_letter.py"),
    _rule("validation", "/streams/batch.py", "key_rejection", "failure_rejection"),
    _rule("changelog produce", "/schemas/state.py", "encode"),
    _rule("state decode + apply", "/schemas/state.py"),
    _rule("state decode + apply", "/streams/state.py", "get", "users", "__len__"),
    _rule("state decode + apply", "/streams/batch.py"),
    _rule("history to confidences", "/models/weighting.py"),
    _rule("history to confidences", "/models/ids.py"),
    _rule("history to confidences", "/models/recommender.py", "encode", "_excluded", "_select"),
    _rule("history to confidences", "/streams/lists.py", "_unranked"),
    _rule("explanations", "/models/foldin.py", "because"),
    _rule("fold-in solve", "/models/foldin.py"),
    _rule("top-k / score product", "/models/topk.py"),
    _rule("top-k / score product", "/models/recommender.py"),
    _rule("list encoding", "/schemas/recs.py"),
    _rule("list encoding", "/streams/lists.py"),
    _rule("changelog produce", "/streams/state.py"),
    _rule("changelog produce", "/streams/delivery.py"),
    # aiokafka's connection, client and record code serve the producer and the
    # consumer alike: no rule, so the frame above them decides.
    _rule("changelog produce", "/aiokafka/producer/"),
    _rule("changelog produce", "/faust/transport/producer.py"),
    _rule("changelog produce", "/confluent_kafka/"),
    _rule("Redis pipeline", "/streams/sink.py"),
    _rule("Redis pipeline", "/redis/"),
    _rule("metric updates", "/prometheus_client/"),
    _rule("metric updates", "/streams/metrics.py"),
    # A sample that ends on an await of these is mostly the step it awaited
    # freeing its objects (decoded states, arrays) as it returns.
    _rule("batch orchestration (agent, pipeline)", "/streams/app.py"),
    _rule("batch orchestration (agent, pipeline)", "/streams/pipeline.py"),
    _rule("batch orchestration (agent, pipeline)", "/streams/ownership.py"),
    _rule("batch orchestration (agent, pipeline)", "/streams/liveness.py"),
    _rule("Faust's per-message path", "/streams/transport.py"),
    _rule("Faust's per-message path", "/faust/"),
    _rule("Faust's per-message path", "/mode/"),
    _rule("Faust's per-message path", "/aiokafka/consumer/"),
    _rule("Faust's per-message path", "/intervaltree/"),
)


def parse_frame(frame: str) -> tuple[str, str]:
    """``"func (path:line)"`` (py-spy's raw frame) -> ``(func, path)``."""
    name, _, where = frame.rpartition(" (")
    if not name:
        return frame, ""
    return name, where.rstrip(")").rsplit(":", 1)[0]


def stage_of(frames: list[str]) -> str:
    """The stage of one sample, ``frames`` outermost first (see module doc)."""
    parsed = [parse_frame(f) for f in frames]
    for rule in ANYWHERE:
        if any(rule.matches(func, path) for func, path in parsed):
            return rule.stage
    for func, path in reversed(parsed):
        for rule in RULES:
            if rule.matches(func, path):
                return rule.stage
    return "other"


def main_thread_stages(raw: str, pid: int) -> Counter[str]:
    """Samples per stage of thread ``pid`` (the main thread: its id is the process id)
    in py-spy's ``--format raw --threads`` output: one ``thread (ID): NAME;frame;... COUNT``
    line per distinct stack."""
    counts: Counter[str] = Counter()
    head = f"thread ({pid})"
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith(head) or not count.isdigit():
            continue
        counts[stage_of(frames[1:])] += int(count)
    return counts


def per_event_us(samples: Counter[str], cpu_s: float, events: int) -> dict[str, float]:
    """Main-thread CPU µs per event of every stage: ``cpu_s`` split by sample shares."""
    total = sum(samples.values())
    if total == 0 or events <= 0:
        raise ValueError("no samples or no events in the window")
    scale = cpu_s * 1e6 / events / total
    return {stage: round(samples.get(stage, 0) * scale, 1) for stage in STAGES}


def thread_cpu_s(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of its thread ``tid``."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    # fields[0] is the state (field 3 of proc(5)): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_count(
    count: Callable[[], float], target: float, timeout_s: float, proc: subprocess.Popen[bytes]
) -> float:
    """Poll ``count`` (each poll costs the worker a scrape: twice a second) until ``target``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = poll_count(count, [proc])
        if seen >= target:
            return seen
        time.sleep(0.5)
    raise TimeoutError(f"{target:.0f} events not counted within {timeout_s:.0f}s")


def profile(
    stack: Stack,
    cmd: list[str],
    settings: Settings,
    count_of: Callable[[Settings], float],
    args: argparse.Namespace,
    name: str,
) -> dict[str, Any]:
    """One process of ``cmd`` on ``settings``'s backlog, profiled from ``--skip`` to ``--upto``."""
    proc = stack.spawn(cmd, settings, f"{name}.log")
    try:
        wait_for_count(lambda: count_of(settings), args.events * args.skip, args.timeout, proc)
        out = stack.work / f"{name}.pyspy.txt"
        spy = subprocess.Popen(
            [
                args.py_spy,
                "record",
                "--pid",
                str(proc.pid),
                "--format",
                "raw",
                "--threads",
                # native frames need the process stopped for each sample
                *(["--native"] if args.native else ["--nonblocking"]),
                "--full-filenames",
                "--rate",
                str(args.rate),
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        load_before = load_average()
        began, first = time.monotonic(), count_of(settings)
        cpu0, all0 = thread_cpu_s(proc.pid, proc.pid), thread_cpu_s(proc.pid)
        last = wait_for_count(
            lambda: count_of(settings), args.events * args.upto, args.timeout, proc
        )
        cpu1, all1 = thread_cpu_s(proc.pid, proc.pid), thread_cpu_s(proc.pid)
        window = time.monotonic() - began
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')}")
    finally:
        stack.stop(proc)
    events = int(last - first)
    samples = main_thread_stages(out.read_text(), proc.pid)
    main_cpu = cpu1 - cpu0
    return {
        "events": events,
        "window_s": round(window, 2),
        "events_per_s": round(events / window),
        "main_thread_us_per_event": round(main_cpu * 1e6 / events, 1),
        "main_thread_busy": round(main_cpu / window, 3),
        "other_threads_us_per_event": round(((all1 - all0) - main_cpu) * 1e6 / events, 1),
        "samples": sum(samples.values()),
        "stages_us_per_event": per_event_us(samples, main_cpu, events),
        "load_average_1m": [load_before, load_average()],
    }


def table(mix: str, worker: dict[str, Any], bare: dict[str, Any] | None) -> Iterable[str]:
    """The Markdown report of one mix."""
    total = worker["main_thread_us_per_event"]
    yield f"### {mix} mix"
    yield ""
    yield (
        f"{worker['events']:,} events in {worker['window_s']} s ({worker['events_per_s']:,}/s), "
        f"main thread busy {worker['main_thread_busy']:.0%}, {worker['samples']:,} samples; "
        f"load average {worker['load_average_1m'][0]} -> {worker['load_average_1m'][1]}"
    )
    yield ""
    yield "| stage | µs/event | share |"
    yield "| --- | ---: | ---: |"
    for stage, us in worker["stages_us_per_event"].items():
        yield f"| {stage} | {us} | {us / total:.0%} |"
    yield f"| **main thread, all** | **{total}** | 100% |"
    yield f"| other threads (consumer's fetcher) | {worker['other_threads_us_per_event']} | |"
    if bare is not None:
        yield (
            f"| bare Faust agent, main thread ({bare['events_per_s']:,}/s) "
            f"| {bare['main_thread_us_per_event']} | |"
        )
    yield ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000, help="backlog size, each mix")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--mix", choices=MIXES, action="append", help="default: every mix")
    parser.add_argument("--skip", type=float, default=0.15, help="share of the backlog unprofiled")
    parser.add_argument("--upto", type=float, default=0.9, help="share profiled up to")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--no-bare", action="store_true", help="leave out the bare agent")
    parser.add_argument(
        "--native",
        action="store_true",
        help="sample C frames too (py-spy --native, which stops the process for each sample)",
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="limit of each wait, seconds")
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
        help="the py-spy binary (default: beside this Python, else on PATH)",
    )
    args = parser.parse_args()
    if not args.py_spy:
        parser.error("py-spy not found: pip install py-spy (the dev extra has it)")
    result: dict[str, Any] = {"bench": "profile_worker", "cpus": os.cpu_count()}
    lines: list[str] = []
    with Stack(args.items) as stack:
        for mix in args.mix or MIXES:
            settings = stack.settings(mix)
            produce_backlog(settings, mix, args.events, args.users, args.items)
            bare = None
            if not args.no_bare:
                bare = profile(stack, BARE_CMD, settings, bare_count, args, f"bare-{mix}")
            worker = profile(stack, WORKER_CMD, settings, worker_count, args, f"worker-{mix}")
            result[mix] = {"worker": worker, "bare": bare}
            lines.extend(table(mix, worker, bare))
        print("\n".join(lines))
        print(f"(py-spy output and logs in {stack.work})")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

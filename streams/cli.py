"""Subcommands of the Kafka side: ``publish``, ``catalog publish``, ``worker``, ``dlq``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from freshrec.argtypes import non_negative_int
from freshrec.errors import BadInputError, ConfigError
from freshrec.ports import bind_problem
from freshrec.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "publish",
        help="validate and send events from a JSON-lines file ('-' for stdin)",
        description="Each line is one event object with a 'type' of watch, rate or forget. "
        "Bad lines are reported with their reason and skipped; every valid line is sent. "
        "Exit code 0: all sent; 1: some lines rejected, or the file cannot be read; "
        "75: the broker cannot be reached or did not acknowledge (run it again).",
    )
    parser.add_argument("file", help="JSON-lines file of events, or - for standard input")
    parser.add_argument(
        "--rebase-ts",
        action="store_true",
        help="shift every event's ts by the same amount so that the newest is now "
        "(for recorded example files; order and gaps are kept)",
    )
    parser.set_defaults(func=run_publish)

    worker = sub.add_parser(
        "worker",
        help="run the streaming worker (Faust): events in, users' lists in Redis",
        description="Consumes the watch, rate and forget topics, folds each touched user into "
        "the current model in micro-batches and writes their lists to Redis. Creates the "
        "topics when missing. Metrics at "
        "http://FRESHREC_WORKER_WEB_HOST:FRESHREC_WORKER_WEB_PORT/metrics. "
        "Exit code 75: a batch could not be completed within FRESHREC_RETRY_DEADLINE_S; "
        "restart it, it resumes from the last committed offsets.",
    )
    worker.set_defaults(func=run_worker)

    catalog = sub.add_parser(
        "catalog",
        help="publish item records (title, tags, availability) to the items topic",
        description="The item table in Redis is built by the worker from the items topic; "
        "publishing a catalog file is one way to fill it.",
    )
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    publish_items = catalog_sub.add_parser(
        "publish",
        help="validate and send item records from a JSON-lines or CSV file ('-' for stdin)",
        description="JSON lines: one record per line ({'item_id', 'ts', 'title', 'tags', "
        "'available', 'attrs'}; 'id' stands for 'item_id'). CSV (*.csv): a header naming the "
        "columns, tags separated by |, other columns become attributes. A record without ts is "
        "stamped with the time of the publish. Bad lines are reported with their reason and "
        "skipped; every valid record is sent. Exit code 0: all sent; 1: some lines rejected, or "
        "the file cannot be read; 75: the broker cannot be reached or did not acknowledge.",
    )
    publish_items.add_argument("file", help="JSON-lines or CSV file of item records, or -")
    publish_items.set_defaults(func=run_catalog_publish)

    dlq = sub.add_parser(
        "dlq",
        help="list or replay the dead-letter topic",
        description="Dead letters are invalid events with their original bytes, source "
        "topic/partition/offset and the reason they were rejected.",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = dlq_sub.add_parser("list", help="print dead letters and counts per reason")
    listing.add_argument(
        "--limit",
        type=non_negative_int,
        default=20,
        help="dead letters to print, 0 for none (the counts cover all; default: %(default)s)",
    )
    listing.set_defaults(func=run_dlq_list)
    again = dlq_sub.add_parser(
        "replay",
        help="re-validate dead letters and publish the ones that now pass",
        description="Exit code 0: every dead letter was replayed; 1: some are still invalid.",
    )
    again.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed, send nothing"
    )
    again.set_defaults(func=run_dlq_replay)


def _open_events(name: str, what: str = "a JSON-lines file of events") -> BinaryIO:
    """The events file (``-``: stdin), or a ``BadInputError`` that says what to give instead."""
    if name == "-":
        return sys.stdin.buffer
    try:
        return Path(name).open("rb")
    except OSError as exc:
        raise BadInputError(
            f"cannot read {name}: {exc.strerror or exc}; give {what}, or - for standard input"
        ) from None


def run_publish(args: argparse.Namespace, settings: Settings) -> int:
    from streams.publisher import Publisher
    from streams.rebase import rebase
    from streams.topics import ensure_topics

    with _open_events(args.file) as source:
        ensure_topics(settings)
        lines: Iterable[bytes] = (line.rstrip(b"\r\n") for line in source)
        if args.rebase_ts:
            lines = rebase(lines, now_ms=int(time.time() * 1000))
        with Publisher(settings) as publisher:
            report = publisher.publish_many(lines)
    for line_no, reason in report.rejected:
        print(f"{args.file}:{line_no}: rejected: {reason}", file=sys.stderr)
    print(f"sent {report.sent} event(s), rejected {len(report.rejected)}")
    return 1 if report.rejected else 0


def run_catalog_publish(args: argparse.Namespace, settings: Settings) -> int:
    from streams.catalog_file import read_records
    from streams.publisher import Publisher
    from streams.topics import ensure_topics

    with _open_events(args.file, "a JSON-lines or CSV file of item records") as source:
        raw = source.read()
    rows = list(read_records(args.file, raw, now_ms=int(time.time() * 1000)))
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        report = publisher.publish_items(record for _, record in rows)
    for position, reason in report.rejected:
        print(f"{args.file}:{rows[position - 1][0]}: rejected: {reason}", file=sys.stderr)
    print(f"sent {report.sent} item record(s), rejected {len(report.rejected)}")
    return 1 if report.rejected else 0


#: Python's garbage-collection thresholds in the worker (generation 0 allocations,
#: then collections of the younger generation per older one; Python's defaults are
#: 700, 10, 10). A batch allocates hundreds of thousands of short-lived objects,
#: and the decoded states kept in memory are a million long-lived ones that every
#: older collection walks: with the defaults the worker spent 5-8% of its time
#: collecting (about 2,100 collections, 16 of them full, in 50,000 events), and a
#: full collection paused it for 0.2-0.45 s (docs/worker.md, "In memory").
GC_THRESHOLDS = (50_000, 20, 10)


def use_fast_loop() -> None:
    """Run Faust on uvloop (a runtime dependency): Faust's per-event cost is mostly
    event-loop callbacks, and uvloop cuts that by about a fifth on the benchmark."""
    import mode.loop

    mode.loop.use("uvloop")


def tune_gc() -> None:
    """Collect garbage less often (:data:`GC_THRESHOLDS`), and never walk what start-up
    loaded: the modules, the app, the model code (``gc.freeze``).

    Reference counting still frees every object that is not in a cycle at once,
    so this changes only how long cyclic garbage (rare here: the states and
    lists hold none) waits to be collected.
    """
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def check_worker_can_start(settings: Settings) -> None:
    """Raise :class:`ConfigError` when the web server's port is taken or the data directory
    cannot be made: inside Faust either ended the worker in a traceback."""
    host, port = settings.worker_web_host, settings.worker_web_port
    problem = bind_problem(host, port)
    if problem is not None:
        raise ConfigError(
            f"the worker's web server cannot listen on {host}:{port} ({problem}); free the "
            "port or set FRESHREC_WORKER_WEB_PORT (or FRESHREC_WORKER_WEB_HOST)"
        )
    try:
        os.makedirs(settings.data_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the worker's data directory {settings.data_dir}: "
            f"{exc.strerror or exc}; set FRESHREC_DATA_DIR to a writable directory"
        ) from None


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from faust.worker import Worker

    from streams.app import create_app
    from streams.topics import ensure_topics

    check_worker_can_start(settings)
    use_fast_loop()
    ensure_topics(settings)
    app = create_app(settings)
    tune_gc()
    Worker(app, loglevel=settings.log_level.lower(), quiet=True).execute_from_commandline()
    return 0  # not reached: the worker exits the process


def run_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from streams.dead_letter import count_by_reason
    from streams.dlq import read_dead_letters

    letters = read_dead_letters(settings)
    for letter in letters[: args.limit]:
        print(
            f"{letter.topic}[{letter.partition}]@{letter.offset} {letter.reason} "
            f"value={letter.value[:80]!r}"
        )
    print(f"{len(letters)} dead letter(s) in {settings.topic_dead_letter}")
    for reason, count in count_by_reason(letters).items():
        print(f"{count:8d}  {reason}")
    return 0


def run_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.dlq import read_dead_letters, replay

    letters = read_dead_letters(settings)
    report = replay(settings, letters, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {report.replayed} of {len(letters)} dead letter(s)")
    for reason, count in report.still_invalid.items():
        print(f"{count:8d}  still invalid: {reason}")
    return 1 if report.still_invalid else 0

"""Subcommands of the Kafka side: ``publish`` (and, with the worker, ``worker`` and ``dlq``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freshrec.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "publish",
        help="validate and send events from a JSON-lines file ('-' for stdin)",
        description="Each line is one event object with a 'type' of watch, rate or forget. "
        "Bad lines are reported with their reason and skipped; every valid line is sent. "
        "Exit code 0: all sent; 1: some lines rejected; 2: the broker did not acknowledge.",
    )
    parser.add_argument("file", help="JSON-lines file of events, or - for standard input")
    parser.set_defaults(func=run_publish)


def run_publish(args: argparse.Namespace, settings: Settings) -> int:
    from freshrec.errors import DeliveryError
    from streams.publisher import Publisher
    from streams.topics import ensure_topics

    source = sys.stdin.buffer if args.file == "-" else Path(args.file).open("rb")  # noqa: SIM115
    ensure_topics(settings)
    with source, Publisher(settings) as publisher:
        lines = (line.rstrip(b"\r\n") for line in source)
        try:
            report = publisher.publish_many(lines)
        except DeliveryError as exc:
            print(f"freshrec publish: {exc}", file=sys.stderr)
            return 2
    for line_no, reason in report.rejected:
        print(f"{args.file}:{line_no}: rejected: {reason}", file=sys.stderr)
    print(f"sent {report.sent} event(s), rejected {len(report.rejected)}")
    return 1 if report.rejected else 0

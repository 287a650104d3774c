"""The ``freshrec`` command: one entry point, subcommands contributed by each part.

Each part (``freshrec`` for the local stack, ``streams``, ``serving``,
``models``) has a ``cli`` module with a ``register(subparsers)`` function that
adds its subcommands; each subcommand sets ``func(args, settings) -> exit
code``. This module only assembles them, which is why it lives above the parts
rather than in ``freshrec/``. Settings are read from the environment once,
here, so every command fails early on a bad ``FRESHREC_*`` value.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from freshrec import stack_cli
from freshrec.errors import ConfigError, FreshrecError
from freshrec.settings import Settings
from models import cli as models_cli
from serving import cli as serving_cli
from streams import cli as streams_cli

#: Each part's ``register(subparsers)``, in the order of ``freshrec --help``.
PARTS = (
    stack_cli.register,
    streams_cli.register,
    serving_cli.register,
    models_cli.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freshrec",
        description="Real-time recommender: events in Kafka, ALS fold-in, top-k lists in Redis.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in PARTS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"freshrec: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code: int = args.func(args, settings)
    except FreshrecError as exc:
        print(f"freshrec {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

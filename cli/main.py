"""The ``freshrec`` command: one entry point, subcommands contributed by each part.

Each part (``freshrec`` for the local stack, ``streams``, ``serving``,
``models``) has a ``cli`` module with a ``register(subparsers)`` function that
adds its subcommands; each subcommand sets ``func(args, settings) -> exit
code``. This module only assembles them, which is why it lives above the parts
rather than in ``freshrec/``. Settings are read from the environment once,
here, so every command fails early on a bad ``FRESHREC_*`` value.

Every failure a user can cause or meet ends in one line on stderr that says
what to do, and one of the exit codes of :data:`EXIT_CODES` (commands add
their own, documented in their ``--help``); a traceback is left for bugs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import demo
from freshrec import __version__, stack_cli
from freshrec.errors import ConfigError, FreshrecError, TransientError, UsageError
from freshrec.settings import Settings
from retrain import cli as retrain_cli
from serving import cli as serving_cli
from streams import cli as streams_cli

#: Each part's ``register(subparsers)``, in the order of ``freshrec --help``.
PARTS = (
    stack_cli.register,
    demo.register,
    streams_cli.register,
    serving_cli.register,
    retrain_cli.register,
)


EXIT_OK = 0
#: The command failed for the reason its message gives (bad input, a missing file, a conflict).
EXIT_FAILED = 1
#: Bad arguments or ``FRESHREC_*`` settings (argparse uses 2 for usage errors too).
EXIT_USAGE = 2
#: A transient fault (broker or Redis unreachable, no acknowledgement): run it again.
EXIT_TRANSIENT = 75
EXIT_INTERRUPTED = 130

#: The exit codes every subcommand shares, as ``freshrec --help`` and the README list them.
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "the command failed; the message says why (bad input, missing file, conflict)",
    EXIT_USAGE: "bad arguments or FRESHREC_* settings",
    EXIT_TRANSIENT: "broker or Redis unreachable or not acknowledging: run it again",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freshrec",
        description="Real-time recommender: events in Kafka, ALS fold-in, top-k lists in Redis.",
        epilog="exit codes: "
        + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
        + ". Some commands add their own (see their --help).",
    )
    parser.add_argument("--version", action="version", version=f"freshrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in PARTS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), sys.argv[1:] if argv is None else list(argv))
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"freshrec: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code: int = args.func(args, settings)
    except TransientError as exc:
        print(f"freshrec {args.command}: {exc}", file=sys.stderr)
        return EXIT_TRANSIENT
    except UsageError as exc:
        print(f"freshrec {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FreshrecError as exc:
        print(f"freshrec {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        # a file the user named, or a directory a setting names, is missing or unreadable
        where = f": {exc.filename}" if exc.filename else ""
        print(f"freshrec {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code


def parse(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.Namespace:
    """The command line's arguments; a usage error exits 2 with the usage of the command given."""
    _refuse_unknown_option_before_command(parser, words)
    args, unknown = parser.parse_known_args(words)
    if unknown:
        # argparse reports them on the top parser, with its usage; the command's own says more
        _command_parser(parser, words).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _command_parser(
    parser: argparse.ArgumentParser, words: Sequence[str]
) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``words`` name, the deepest one: its usage is the one a
    user who gave it a wrong flag needs (``freshrec demo --no-such-flag``, issue 26)."""
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and word in subs[0].choices:
            parser = subs[0].choices[word]
    return parser


def _refuse_unknown_option_before_command(
    parser: argparse.ArgumentParser, words: Sequence[str]
) -> None:
    """Name an unknown option given before any command (``freshrec --bogus``): argparse checks
    the missing command first and said only that a command is required (issue 26)."""
    known = {opt for action in parser._actions for opt in action.option_strings}
    first = words[0] if words else ""
    if first.startswith("-") and first.split("=", 1)[0] not in known:
        parser.error(
            f"unrecognized option {first} (a command's options go after it: freshrec COMMAND "
            "--help lists them)"
        )


if __name__ == "__main__":
    sys.exit(main())

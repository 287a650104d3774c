"""The data files `freshrec train`, `evaluate` and `retrain --data` read, as one log.

One function for every command that takes ``--data``/``--format``: it names
what was read (path, digest, counts) in the snapshot the version records, and
turns a file's problems into :class:`~freshrec.errors.BadInputError` lines.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from freshrec.errors import BadInputError, UsageError
from models import synthetic
from models.interactions import InteractionLog
from retrain import eventlog, movielens

#: The layouts ``--format`` takes.
FORMATS = (*movielens.FORMATS, "synthetic", "events")


def load_data(args: argparse.Namespace) -> tuple[InteractionLog, dict[str, Any]]:
    """The log named by ``--data``/``--format`` and the snapshot it was read from."""
    if args.format == "synthetic":
        try:
            users, items, events = (int(x) for x in args.synthetic.split(","))
        except ValueError:
            raise BadInputError(
                f"--synthetic {args.synthetic!r} is not USERS,ITEMS,EVENTS (three integers)"
            ) from None
        synth = synthetic.generate(users, items, events, seed=args.seed)
        return synth.log, {"format": "synthetic", "size": [users, items, events], "seed": args.seed}
    if not args.data:
        raise UsageError(f"--data FILE is required with --format {args.format}")
    path = Path(args.data).resolve()
    snapshot: dict[str, Any] = {"format": args.format, "path": str(path)}
    if args.format == "events":
        read = eventlog.load(path)
        if read.rejected:
            print(
                f"freshrec: {read.rejected} invalid line(s) in {path} skipped; first: "
                + "; ".join(read.reasons[:3]),
                file=sys.stderr,
            )
        snapshot |= {
            "sha256": read.sha256,
            "lines": read.lines,
            "rejected": read.rejected,
            "duplicates": read.duplicates,
            "forgotten": read.forgotten,
        }
        return read.log, snapshot
    ratings = movielens.load(path, args.format)
    snapshot |= {"sha256": _sha256(path), "rows": len(ratings)}
    return ratings, snapshot


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

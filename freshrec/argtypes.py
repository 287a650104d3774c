"""argparse ``type=`` functions: a bad flag is refused naming the flag the user typed.

The settings validate ``FRESHREC_*`` values, but a flag that overrides one
must be refused as the flag (``--workers 0``), not as the variable it
overrides, so that the message points at what the user actually typed.
argparse adds the flag's name to the ``ArgumentTypeError`` message and exits
with status 2.
"""

from __future__ import annotations

import argparse
import math


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative (got {value})")
    return value


def synthetic_size(text: str) -> str:
    """``USERS,ITEMS,EVENTS``: three whole numbers of at least 1 (kept as given)."""
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not USERS,ITEMS,EVENTS (three whole numbers of at least 1)"
        )
    return text


def port(text: str) -> int:
    """A TCP port, 1 to 65535 (0, "any free one", would leave clients not knowing where)."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535 (got {value})")
    return value


def finite_float(text: str) -> float:
    """A number that is neither nan nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
    return value


def non_negative_float(text: str) -> float:
    """A finite number of at least 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative (got {text})")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0 (got {text})")
    return value

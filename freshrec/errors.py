"""The exception hierarchy: transient faults are retried, bad input is rejected with a reason.

Callers catch by meaning, never by library: adapters translate a
``redis.ConnectionError`` or a Kafka delivery error into :class:`TransientError`
or :class:`DeliveryError` at the edge, so the retry policy and the agents only
know these classes.
"""

from __future__ import annotations


class FreshrecError(Exception):
    """Base of every error freshrec raises on purpose."""


class ConfigError(FreshrecError):
    """A setting is missing, malformed or out of bounds; fix the environment and restart."""


class UsageError(FreshrecError):
    """The command line cannot be acted on (a flag another one needs is missing): the ``freshrec``
    command exits 2, as for any argument error argparse itself catches."""


class TransientError(FreshrecError):
    """A fault that may go away by itself (service down, timeout): retry with backoff."""


class DeliveryError(TransientError):
    """The broker did not acknowledge an event within the publish timeout."""


class BadInputError(FreshrecError):
    """Input that no retry can fix. ``reason`` says what is wrong, for the sender to act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ModelStoreError(FreshrecError):
    """A model version is missing or unreadable, or the store's directory is unusable."""

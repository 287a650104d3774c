"""The forget promise for model versions: no version whose data was read before a user was
forgotten becomes current, or a canary, after the forget was applied.

Versions are immutable, and one trained before a forget still holds what the
forgotten user gave it (item factors, and in its metadata the ids of items that
only they had). So the worker records, when it applies a forget, the newest
forget time in Redis (:func:`forgets_key`), and every pointer move to another
version (a publish, a rollback, a canary's start or promotion) first compares
it with the time that version's data was read (:func:`data_read_ms`), under the
store's pointer lock (the ``guard`` of :meth:`~freshrec.model_store.ModelStore.set_current`).

Both times are read from one clock, the clock of the Redis node that holds the
key: the worker's mark (:data:`MARK_SCRIPT`, ``mark``) takes Redis's ``TIME``
after the forget marker is acknowledged by the changelog, and the retrain reads
the same ``TIME`` (``read``) before it takes the changelog's end offsets. A
snapshot read after the mark therefore holds the marker, and leaves the user
out; one read before it may not, and is refused. Hosts' clocks never meet.

This lives in the floor because the worker writes the record and the retrain and
the ``freshrec models`` command read it, and neither may import the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.exceptions

from freshrec.errors import FreshrecError, TransientError
from freshrec.redis_client import SyncRedis

#: ``EVAL MARK_SCRIPT 1 KEY mark|read``: the node's time in epoch ms and the newest forget
#: time stored (0 for none); ``mark`` first raises the stored time to now (never lowers it:
#: two workers' marks, or a redelivered batch's, keep the newest).
MARK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == 'mark' and now > stored then
  redis.call('SET', KEYS[1], now)
  stored = now
end
return {now, stored}
"""


def forgets_key(prefix: str) -> str:
    """The key holding the newest forget's time (epoch ms, the Redis node's clock)."""
    return f"{prefix}forget-newest"


@dataclass(frozen=True)
class ForgetClock:
    """One read of :data:`MARK_SCRIPT`: Redis's time now and the newest forget's time."""

    now_ms: int
    newest_ms: int

    @classmethod
    def of(cls, reply: Any) -> ForgetClock:
        now, newest = reply
        return cls(int(now), int(newest))


def read_clock(client: SyncRedis, prefix: str) -> ForgetClock:
    """Redis's time and the newest forget's, in one round trip (a blocking client);
    :class:`TransientError` when Redis cannot answer."""
    try:
        return ForgetClock.of(client.eval(MARK_SCRIPT, 1, forgets_key(prefix), "read"))
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise TransientError(f"cannot read the newest forget's time from Redis: {exc}") from exc


def data_read_ms(meta: Mapping[str, Any]) -> int:
    """When a version's data was read (epoch ms): the retrain's ``snapshot.read_at_ms``
    (Redis's clock, before the changelog's end offsets were taken), else, for a version
    trained from a file or before this record existed, its ``created_at`` (the training
    host's clock: later than the data, so the check is the weaker for it)."""
    snapshot = meta.get("snapshot") or {}
    read_at = snapshot.get("read_at_ms") if isinstance(snapshot, Mapping) else None
    return int(read_at if read_at is not None else meta.get("created_at", 0))


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class ForgottenSince(FreshrecError):
    """A pointer move to a version whose data was read before the newest forget."""

    def __init__(self, version_id: str, read_ms: int, newest_ms: int) -> None:
        super().__init__(
            f"{version_id} was trained on data read at {_utc(read_ms)}, before a user was "
            f"forgotten at {_utc(newest_ms)}: it may hold what that user gave, so it is not "
            "served again"
        )
        self.version_id = version_id
        self.read_ms = read_ms
        self.newest_ms = newest_ms


def check_version(version_id: str, meta: Mapping[str, Any], newest_ms: int) -> None:
    """Raise :class:`ForgottenSince` when the version's data was read before ``newest_ms``."""
    read_ms = data_read_ms(meta)
    if newest_ms and read_ms < newest_ms:
        raise ForgottenSince(version_id, read_ms, newest_ms)


def guard_for(client: SyncRedis, prefix: str) -> Callable[[str, Mapping[str, Any]], None]:
    """A :data:`~freshrec.model_store.Guard` that refuses a version read before the newest
    forget recorded in Redis (read at the move, under the pointer lock)."""

    def guard(version_id: str, meta: Mapping[str, Any]) -> None:
        check_version(version_id, meta, read_clock(client, prefix).newest_ms)

    return guard

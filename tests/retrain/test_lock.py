"""The retrain lock on a real redis-server: one holder, renewed, freed by expiry or release."""

from __future__ import annotations

import time

import pytest
import redis

from freshrec.stack import wait_until
from retrain.lock import LockedError, RetrainLock

pytestmark = pytest.mark.integration


def test_a_second_job_is_refused_with_the_holders_name(redis_url: str, unique: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"t{unique}:retrain-lock"
    with RetrainLock(client, key, ttl_s=5) as first:
        with pytest.raises(LockedError) as refused, RetrainLock(client, key, ttl_s=5):
            pass
        assert refused.value.holder == first.holder
        assert first.holder in str(refused.value)
    with RetrainLock(client, key, ttl_s=5):  # released on exit: free again
        pass


def test_the_lock_is_renewed_while_held_and_expires_when_the_holder_dies(
    redis_url: str, unique: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"t{unique}:retrain-lock"
    lock = RetrainLock(client, key, ttl_s=1.0)
    with lock:
        held_since = time.monotonic()
        # three expiries long: only the renewal thread keeps it
        wait_until(lambda: time.monotonic() - held_since > 3.0, 5, "three expiries")
        lock.ensure_held()
        assert client.get(key) == lock.holder.encode()
    # a holder killed without releasing: only the expiry frees the lock
    dead = RetrainLock(client, key, ttl_s=1.0)
    dead.__enter__()
    dead._stop.set()  # the renewal thread dies with the process
    wait_until(lambda: client.get(key) is None, 5, "the dead holder's lock to expire")
    with RetrainLock(client, key, ttl_s=5):
        pass


def test_a_lost_lock_stops_the_job_before_it_publishes(redis_url: str, unique: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"t{unique}:retrain-lock"
    with RetrainLock(client, key, ttl_s=30) as lock:
        client.delete(key)  # a flushed Redis
        with pytest.raises(Exception, match="lock"):
            lock.ensure_held()

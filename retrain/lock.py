"""One retrain at a time: a Redis lock with an expiry, renewed while the job runs.

Two retrains publishing at once would both pass the gate against the same
current model and race for the pointer; Kubernetes' ``concurrencyPolicy:
Forbid`` prevents that only within one CronJob. The lock is redis-py's
(``SET NX PX`` with a random token, released and extended by Lua scripts that
check the token), so only its holder can renew or free it. Its value names the
holder (host, pid, start time) so that the job refused can say who runs.

A thread renews the expiry every third of it. A job killed with SIGKILL frees
the lock when the expiry runs out; a job that loses the lock (Redis flushed,
or a pause longer than the expiry) learns so at :meth:`RetrainLock.ensure_held`,
which the job calls before it publishes, and stops there.

On a Redis Cluster the lock is one key, so every call goes to the primary of
its slot; a failover of that primary within the expiry keeps the lock (the
replica holds the key once replicated), and a renewal that meets the failover is retried at the
next third of the expiry.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from types import TracebackType

from redis.exceptions import LockError, RedisError

from freshrec.errors import FreshrecError, TransientError
from freshrec.redis_client import SyncRedis


class LockedError(FreshrecError):
    """Another retrain holds the lock; ``holder`` names it."""

    def __init__(self, key: str, holder: str | None) -> None:
        super().__init__(
            f"another retrain is running ({holder or 'holder unknown'}; lock {key}); "
            "wait for it to finish, or for the lock to expire if it was killed"
        )
        self.holder = holder


class RetrainLock:
    """Context manager: acquire at enter (or raise :class:`LockedError`), renew, release."""

    def __init__(self, client: SyncRedis, key: str, ttl_s: float) -> None:
        self._client = client
        self.key = key
        self.ttl_s = ttl_s
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.holder = f"{socket.gethostname()} pid {os.getpid()} since {since}"
        self._lock = client.lock(key, timeout=ttl_s, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread = threading.Thread(target=self._renew, name="retrain-lock", daemon=True)

    def __enter__(self) -> RetrainLock:
        try:
            acquired = self._lock.acquire(token=self.holder.encode())
            if not acquired:
                holder = self._client.get(self.key)
                if isinstance(holder, bytes):
                    holder = holder.decode(errors="replace")
                raise LockedError(self.key, holder)
        except RedisError as exc:
            raise TransientError(f"cannot take the retrain lock in Redis: {exc}") from exc
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        # expired or unreachable: the expiry frees it anyway
        with contextlib.suppress(LockError, RedisError):
            self._lock.release()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._lock.reacquire()
            except LockError as exc:
                self._lost = f"the retrain lock was lost ({exc})"
                return
            except RedisError:
                continue  # a blip: the expiry leaves two more tries before it runs out

    def ensure_held(self) -> None:
        """Raise :class:`TransientError` when the lock was lost: do not publish then."""
        if self._lost is None and not self._lock.owned():
            self._lost = "the retrain lock expired"
        if self._lost is not None:
            raise TransientError(f"{self._lost}; stopping before publishing")

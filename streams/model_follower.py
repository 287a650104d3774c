"""Follow the current-model pointer: load the new version when it moves, keep the old on failure.

The model store is a directory (``FRESHREC_MODEL_STORE``) with versions and a
pointer that ``freshrec train --publish`` moves atomically. The worker polls
the pointer every ``model_poll_interval_s``; reading and unpacking a version
happens in a thread, so events keep flowing while a large model loads, and the
swap itself is one attribute assignment between two batches. A version that
fails to load is logged and skipped until the pointer moves again (versions are
immutable once the pointer names them); the worker keeps serving with what it
has rather than stop.
"""

from __future__ import annotations

import asyncio
import logging
import time

from models.recommender import Recommender
from models.store import ModelStore
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class ModelFollower:
    """Holds the :class:`Recommender` of the current model version (None before any exists)."""

    def __init__(self, store_root: str, metrics: WorkerMetrics) -> None:
        self._store = ModelStore(store_root)
        self._metrics = metrics
        self.recommender: Recommender | None = None
        self._failed: str | None = None

    @property
    def version(self) -> str | None:
        return None if self.recommender is None else self.recommender.version_id

    async def poll(self) -> bool:
        """Load the current version if the pointer moved; True when a new version was taken."""
        current = await asyncio.to_thread(self._store.current)
        if current is None or current == self.version or current == self._failed:
            return False
        try:
            recommender = await asyncio.to_thread(self._load, current)
        except Exception:
            # A broken version must not stop the worker; the next version the
            # pointer names is tried.
            log.exception("could not load model version %s; keeping %s", current, self.version)
            self._failed = current
            return False
        self.recommender = recommender
        self._failed = None
        self._metrics.model_loaded.set(time.time())
        self._metrics.model_switches.inc()
        log.info("now using model version %s", current)
        return True

    def _load(self, version_id: str) -> Recommender:
        return Recommender.from_version(self._store.load(version_id))

"""Follow the current-model pointer: load the new version when it moves, keep the old on failure.

The model store is a directory (``FRESHREC_MODEL_STORE``) with versions and a
pointer that ``freshrec train --publish`` moves atomically. The worker polls
the pointer every ``model_poll_interval_s``; reading and unpacking a version
happens in a thread, outside the worker's batch lock, so events keep flowing
while a large model loads, and the swap itself is one attribute assignment
between two batches. A version that
fails to load is logged and skipped until the pointer moves again (versions are
immutable once the pointer names them); the worker keeps serving with what it
has rather than stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from freshrec.model_store import ModelStore
from models.recommender import Recommender
from models.version import load_version, recommender_from_version
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A version loaded by :meth:`ModelFollower.fetch`, not yet in use."""

    recommender: Recommender
    created_at_ms: int
    """When the version was trained (its ``created_at``), for the model-age metric."""
    ticket: int
    """Order of the fetch that loaded it: a slower, older fetch never replaces a newer one."""


class ModelFollower:
    """Holds the :class:`Recommender` of the current model version (None before any exists).

    Loading and switching are two steps, so that the caller can load without
    holding up batches and switch between two of them: :meth:`fetch` reads
    and unpacks the version the pointer names (in a thread), :meth:`adopt`
    makes it the one in use.
    """

    def __init__(self, store_root: str, metrics: WorkerMetrics) -> None:
        self._store = ModelStore(store_root)
        self._metrics = metrics
        self.recommender: Recommender | None = None
        self._failed: str | None = None
        self._tickets = 0
        self._adopted_ticket = 0

    @property
    def version(self) -> str | None:
        return None if self.recommender is None else self.recommender.version_id

    async def fetch(self) -> Candidate | None:
        """Load the version the pointer names, unless it is in use or failed to load before."""
        self._tickets += 1
        ticket = self._tickets
        current = await asyncio.to_thread(self._store.current)
        if current is None or current == self.version or current == self._failed:
            return None
        try:
            recommender, created_at_ms = await asyncio.to_thread(self._load, current)
        except Exception:
            # A broken version must not stop the worker; the next version the
            # pointer names is tried.
            log.exception("could not load model version %s; keeping %s", current, self.version)
            self._failed = current
            return None
        return Candidate(recommender, created_at_ms, ticket)

    def adopt(self, candidate: Candidate | None) -> bool:
        """Use ``candidate`` from now on; False (and no change) when there is none, it is
        already in use, or a fetch that started after its own was adopted first."""
        if (
            candidate is None
            or candidate.ticket < self._adopted_ticket
            or candidate.recommender.version_id == self.version
        ):
            return False
        self.recommender = candidate.recommender
        self._adopted_ticket = candidate.ticket
        self._failed = None
        self._metrics.model_loaded.set(time.time())
        self._metrics.model_created.set(candidate.created_at_ms / 1000)
        self._metrics.model_switches.inc()
        log.info("now using model version %s", self.version)
        return True

    def _load(self, version_id: str) -> tuple[Recommender, int]:
        version = load_version(self._store, version_id)
        return recommender_from_version(version), version.created_at

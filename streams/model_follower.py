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

The follower also holds the pointer's *generation*, which every move of the
pointer raises (:class:`freshrec.model_store.Pointer`) and which the lists it
writes are ordered by. A move back to a version already in use (a rollback
to A and back to B between two polls) is adopted too, without loading
anything: its generation is new, and lists written under the old one must be
written again, or another worker's lists made meanwhile would stay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from freshrec.errors import ModelStoreError
from freshrec.model_store import ModelStore, PointerMoved, mover
from models.recommender import Recommender
from models.version import load_version, recommender_from_version
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """The versions the pointer names, loaded by :meth:`ModelFollower.fetch`, not yet in use."""

    recommender: Recommender
    created_at_ms: int
    """When the version was trained (its ``created_at``), for the model-age metric."""
    ticket: int
    """Order of the fetch that loaded it: a slower, older fetch never replaces a newer one."""
    generation: int
    """The pointer's generation when it named this version (:attr:`ModelFollower.generation`)."""
    canary: Recommender | None = None
    """The candidate of a canary release, serving ``fraction`` of the users."""
    fraction: float = 0.0


class ModelFollower:
    """Holds the :class:`Recommender` of the current model version (None before any exists),
    and during a canary release the candidate's (:attr:`canary`, for :attr:`fraction` of
    the users, :func:`models.canary.in_canary`).

    Loading and switching are two steps, so that the caller can load without
    holding up batches and switch between two of them: :meth:`fetch` reads
    and unpacks the versions the pointer names (in a thread), :meth:`adopt`
    makes them the ones in use.
    """

    def __init__(self, store_root: str, metrics: WorkerMetrics) -> None:
        self._store = ModelStore(store_root)
        self._metrics = metrics
        self.recommender: Recommender | None = None
        self.canary: Recommender | None = None
        self.fraction = 0.0
        self._failed: str | None = None
        self._failed_canary: str | None = None
        self._tickets = 0
        self._adopted_ticket = 0
        #: The pointer generation of the version in use (0 before any), which the
        #: lists' order tokens carry.
        self.generation = 0
        self._created_at_ms: dict[str, int] = {}

    @property
    def version(self) -> str | None:
        return None if self.recommender is None else self.recommender.version_id

    async def fetch(self) -> Candidate | None:
        """Load the versions the pointer names, unless the pointer has not moved or names
        a current version that failed to load before; versions in use are not loaded
        again. A canary that fails to load is left out (everyone gets the current one)."""
        self._tickets += 1
        ticket = self._tickets
        pointer = await asyncio.to_thread(self._store.pointer)
        current = pointer.version
        if current is None or current == self._failed:
            return None
        if current == self.version and pointer.generation == self.generation:
            return None
        held = {r.version_id: r for r in (self.recommender, self.canary) if r is not None}
        try:
            recommender, created_at_ms = await self._get(held, current)
        except Exception:
            # A broken version must not stop the worker; the next version the
            # pointer names is tried.
            log.exception("could not load model version %s; keeping %s", current, self.version)
            self._failed = current
            return None
        canary = None
        if pointer.canary is not None and pointer.canary != self._failed_canary:
            try:
                canary, _ = await self._get(held, pointer.canary)
            except Exception:
                log.exception(
                    "could not load the canary %s; every user gets %s", pointer.canary, current
                )
                self._failed_canary = pointer.canary
        fraction = pointer.fraction if canary is not None else 0.0
        return Candidate(recommender, created_at_ms, ticket, pointer.generation, canary, fraction)

    async def _get(self, held: dict[str, Recommender], version_id: str) -> tuple[Recommender, int]:
        if version_id in held:
            return held[version_id], self._created_at_ms.get(version_id, 0)
        recommender, created_at_ms = await asyncio.to_thread(self._load, version_id)
        self._created_at_ms[version_id] = created_at_ms
        return recommender, created_at_ms

    def adopt(self, candidate: Candidate | None) -> bool:
        """Use ``candidate`` from now on; False (and no change) when there is none, its
        generation is in use, or a fetch that started after its own was adopted first."""
        if (
            candidate is None
            or candidate.ticket < self._adopted_ticket
            or (
                candidate.generation == self.generation
                and candidate.recommender.version_id == self.version
            )
        ):
            return False
        self.recommender = candidate.recommender
        self.canary = candidate.canary
        self.fraction = candidate.fraction
        self.generation = candidate.generation
        self._adopted_ticket = candidate.ticket
        self._failed = None
        in_use = {r.version_id for r in (self.recommender, self.canary) if r is not None}
        self._created_at_ms = {v: t for v, t in self._created_at_ms.items() if v in in_use}
        self._metrics.model_loaded.set(time.time())
        self._metrics.model_created.set(candidate.created_at_ms / 1000)
        self._metrics.model_switches.inc()
        if self.canary is None:
            log.info("now using model version %s (generation %d)", self.version, self.generation)
        else:
            log.info(
                "now using model version %s and the canary %s for %.1f%% of users (generation %d)",
                self.version,
                self.canary.version_id,
                100 * self.fraction,
                self.generation,
            )
        return True

    async def abort_canary(self, reason: str) -> bool:
        """Abort the canary in use (a compare-and-set on the pointer at the generation in
        use); whether this call moved the pointer. Another mover first (another worker's
        abort, ops) is not an error: the next poll adopts whatever they did."""
        try:
            await asyncio.to_thread(
                self._store.end_canary,
                promote=False,
                by=f"{mover()} (freshrec worker: automatic abort: {reason})",
                expect=self.generation,
            )
        except PointerMoved as exc:
            log.info("the canary was not aborted here: %s", exc)
            return False
        except (ModelStoreError, OSError) as exc:
            log.error("could not abort the canary (%s): %s; abort it by hand", reason, exc)
            return False
        log.warning("aborted the canary %s: %s", self.canary and self.canary.version_id, reason)
        return True

    def _load(self, version_id: str) -> tuple[Recommender, int]:
        version = load_version(self._store, version_id)
        return recommender_from_version(version), version.created_at

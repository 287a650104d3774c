"""What the retrain reads of the catalog: the items taken down, which the popular list leaves out.

The worker keeps the takedown set in Redis (:mod:`schemas.items`); the API
filters it at serve time anyway, so this is what keeps a taken-down item from
taking a place in the stored popular list (and in every user's fallback built
from it) until it comes back.
"""

from __future__ import annotations

import logging

from freshrec.redis_client import SyncRedis
from schemas.items import decode_takedown, takedown_key
from schemas.recs import DATA_FIELD

log = logging.getLogger(__name__)


def read_unavailable(client: SyncRedis, prefix: str) -> frozenset[str]:
    """The items taken down now (empty without a catalog). A garbled value is logged and
    read as empty: the API and the workers keep their own last good set meanwhile."""
    raw = client.hget(takedown_key(prefix), DATA_FIELD)
    try:
        return decode_takedown(raw).unavailable  # type: ignore[arg-type]
    except ValueError as exc:
        log.warning("the takedown set is unreadable (%s); the popular list keeps every item", exc)
        return frozenset()

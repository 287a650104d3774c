"""What every handler of one application shares, stored on the app under :data:`API`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from freshrec.settings import Settings
from serving.catalog import Catalog
from serving.store import RecsStore

if TYPE_CHECKING:
    from freshrec.kafka_producer import AsyncBatchProducer


@dataclass
class ApiContext:
    """Settings, the Redis-backed store, the item catalog and the events producer.

    ``store_or_none`` is None only outside the application's lifetime: the
    ``cleanup_ctx`` in :mod:`serving.app` sets it at startup and clears it at
    shutdown; handlers use :attr:`store`, which says so if that is ever broken.
    """

    settings: Settings
    store_or_none: RecsStore | None = None
    catalog: Catalog = field(default_factory=Catalog)
    #: Made by the first ``POST /events`` (:mod:`serving.events`), closed with the app.
    producer_or_none: AsyncBatchProducer | None = None

    @property
    def store(self) -> RecsStore:
        if self.store_or_none is None:
            raise RuntimeError("the Redis store is used outside the application's lifetime")
        return self.store_or_none


API = web.AppKey("freshrec_api", ApiContext)

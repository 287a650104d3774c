"""A model version: what a worker needs to fold users in and rank items, and its file format.

A version is immutable once published and named by an id that sorts by
creation time. This module holds the record and its codec (the two files a
stored version is made of); where the files live, and the pointer that names
the current version, is the store's business (:mod:`freshrec.model_store`),
which moves bytes and knows nothing of numpy or ALS. Keeping the format here,
beside the numeric core, is what lets the worker (which reads versions) and
the retrain (which writes them) share it without importing each other.

Files of a version::

    item_factors.npy   float32 (n_items x f), np.save, no pickle
    meta.json          item ids, params, metrics, snapshot, popular list,
                       created_at, format; written last, it completes a version
"""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from freshrec.errors import ModelStoreError
from models.ids import IdMap
from models.recommender import Recommender
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig

FORMAT = 1
FACTORS_FILE = "item_factors.npy"
META_FILE = "meta.json"

_id_lock = threading.Lock()
_last_id_us = 0


@dataclass
class ModelVersion:
    """Everything a worker needs to fold users in and rank items, under one id."""

    version_id: str
    item_factors: np.ndarray  # (n_items, factors) float32
    item_ids: IdMap
    params: dict[str, Any]  # ALS params (regularization and alpha are needed by the fold-in)
    metrics: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)  # data it was trained on
    popular_items: list[str] = field(default_factory=list)  # best first
    popular_scores: list[float] = field(default_factory=list)
    created_at: int = 0  # epoch ms
    #: ``XᵀX + λI`` of the trained user vectors (float64, factors x factors): the item
    #: fold-in's fixed part (models.item_foldin); None in versions made before it.
    user_gram: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.item_factors.ndim != 2 or self.item_factors.shape[0] != len(self.item_ids):
            raise ValueError(
                f"item_factors has shape {self.item_factors.shape} but there are "
                f"{len(self.item_ids)} item ids"
            )
        if len(self.popular_items) != len(self.popular_scores):
            raise ValueError("popular_items and popular_scores differ in length")


def new_version_id() -> str:
    """A new id, e.g. ``20261123T054512123456Z-3f9a``: UTC time to the microsecond.

    Ids made by one process strictly increase even within a microsecond, so
    lexicographic order is creation order; the random suffix keeps ids from
    two hosts apart.
    """
    global _last_id_us
    with _id_lock:
        now_us = max(time.time_ns() // 1000, _last_id_us + 1)
        _last_id_us = now_us
    stamp = datetime.fromtimestamp(now_us // 1_000_000, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}{now_us % 1_000_000:06d}Z-{secrets.token_hex(2)}"


def encode_version(version: ModelVersion) -> dict[str, bytes]:
    """The files of ``version``, by name, :data:`META_FILE` last (it completes a version)."""
    factors = io.BytesIO()
    np.save(
        factors,
        np.ascontiguousarray(version.item_factors, dtype=np.float32),
        allow_pickle=False,
    )
    meta = {
        "format": FORMAT,
        "version_id": version.version_id,
        "item_ids": version.item_ids.ids,
        "params": version.params,
        "metrics": version.metrics,
        "snapshot": version.snapshot,
        "popular_items": version.popular_items,
        "popular_scores": [float(s) for s in version.popular_scores],
        "created_at": int(version.created_at),
    }
    if version.user_gram is not None:
        meta["user_gram"] = np.asarray(version.user_gram, dtype=np.float64).tolist()
    return {
        FACTORS_FILE: factors.getvalue(),
        META_FILE: json.dumps(meta, indent=1, sort_keys=True).encode(),
    }


def decode_version(version_id: str, files: Mapping[str, bytes]) -> ModelVersion:
    """The version whose files are ``files``; :class:`ModelStoreError` when they are
    unreadable, of another format, or inconsistent with each other."""
    try:
        meta = json.loads(files[META_FILE])
        factors = np.load(io.BytesIO(files[FACTORS_FILE]), allow_pickle=False)
    except (KeyError, OSError, ValueError) as exc:
        raise ModelStoreError(f"model version {version_id} is unreadable: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ModelStoreError(
            f"model version {version_id} has format {meta.get('format')!r}, "
            f"this code reads format {FORMAT}"
        )
    try:
        return ModelVersion(
            version_id=version_id,
            item_factors=factors.astype(np.float32, copy=False),
            item_ids=IdMap(meta["item_ids"]),
            params=meta["params"],
            metrics=meta["metrics"],
            snapshot=meta["snapshot"],
            popular_items=meta["popular_items"],
            popular_scores=meta["popular_scores"],
            created_at=meta["created_at"],
            user_gram=None
            if meta.get("user_gram") is None
            else np.asarray(meta["user_gram"], dtype=np.float64),
        )
    except (KeyError, ValueError) as exc:
        raise ModelStoreError(f"model version {version_id} is inconsistent: {exc}") from exc


class VersionFiles(Protocol):
    """What the codec needs of a store (:class:`freshrec.model_store.ModelStore` is one):
    named by a protocol so that this module stays free of fsspec and files."""

    def save(self, version_id: str, files: Mapping[str, bytes]) -> str: ...

    def load(self, version_id: str) -> dict[str, bytes]: ...

    def current(self) -> str | None: ...


def save_version(store: VersionFiles, version: ModelVersion) -> str:
    """Write ``version`` to ``store`` atomically; returns its id."""
    return store.save(version.version_id, encode_version(version))


def load_version(store: VersionFiles, version_id: str) -> ModelVersion:
    """Read one version; :class:`ModelStoreError` when it is missing or unreadable."""
    return decode_version(version_id, store.load(version_id))


def load_current_version(store: VersionFiles) -> ModelVersion | None:
    """The version the store's pointer names, or None when nothing is published yet."""
    current = store.current()
    return None if current is None else load_version(store, current)


def recommender_from_version(version: ModelVersion, num_threads: int = 1) -> Recommender:
    """The :class:`~models.recommender.Recommender` of a version.

    Here, beside the format, rather than in the recommender: reading the
    stored parameters (and the weighting rule, absent from older versions) is
    the format's business. ``YᵀY + λI`` is computed once, here. ``num_threads``
    is for implicit's top-k; 1 suits a worker that runs one process per core.
    """
    params = version.params
    weighting = params.get("weighting")
    return Recommender(
        version.version_id,
        version.item_ids,
        version.item_factors,
        float(params["regularization"]),
        float(params["alpha"]),
        version.popular_items,
        version.popular_scores,
        num_threads=num_threads,
        weighting=DEFAULT_WEIGHTING if weighting is None else WeightingConfig.from_dict(weighting),
        user_gram=version.user_gram,
    )

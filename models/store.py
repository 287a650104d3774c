"""The versioned model store: a directory of immutable model versions and a current pointer.

Layout under ``root``::

    versions/<version_id>/item_factors.npy   float32 (n_items x f), np.save, no pickle
    versions/<version_id>/meta.json          item ids, params, metrics, snapshot,
                                             popular list, created_at, format
    CURRENT                                  the current version id, one line

A version is written into ``versions/.tmp-...`` first, every file and the
directory fsynced, then renamed into place: readers either see a complete
version or none. The pointer moves by writing a temporary file and
``os.replace`` over ``CURRENT``, which is atomic on POSIX, so a worker polling
the pointer never reads half a version id. Versions are never modified after
the rename, which is what lets a worker cache one by id.

Only local directories are supported (no fsspec URLs): it is not installed
here, and a shared volume covers the deployments we run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.errors import FreshrecError
from models.ids import IdMap

FORMAT = 1
_FACTORS = "item_factors.npy"
_META = "meta.json"
_POINTER = "CURRENT"

_id_lock = threading.Lock()
_last_id_us = 0


class ModelStoreError(FreshrecError):
    """A version is missing or unreadable, or the store's directory is unusable."""


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

    def __post_init__(self) -> None:
        if self.item_factors.ndim != 2 or self.item_factors.shape[0] != len(self.item_ids):
            raise ValueError(
                f"item_factors has shape {self.item_factors.shape} but there are "
                f"{len(self.item_ids)} item ids"
            )
        if len(self.popular_items) != len(self.popular_scores):
            raise ValueError("popular_items and popular_scores differ in length")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class ModelStore:
    """Model versions under a local directory (created on first save)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._versions = self.root / "versions"

    @staticmethod
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

    def _dir(self, version_id: str) -> Path:
        if not version_id or "/" in version_id or version_id.startswith("."):
            raise ModelStoreError(f"invalid model version id {version_id!r}")
        return self._versions / version_id

    def save(self, version: ModelVersion) -> str:
        """Write ``version`` atomically; returns its id. An existing id is an error."""
        final = self._dir(version.version_id)
        if final.exists():
            raise ModelStoreError(
                f"model version {version.version_id} already exists in {self.root}"
            )
        self._versions.mkdir(parents=True, exist_ok=True)
        tmp = self._versions / f".tmp-{version.version_id}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            factors = np.ascontiguousarray(version.item_factors, dtype=np.float32)
            with open(tmp / _FACTORS, "wb") as fh:
                np.save(fh, factors, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
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
            _write_file(tmp / _META, json.dumps(meta, indent=1, sort_keys=True).encode())
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(self._versions)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version.version_id

    def load(self, version_id: str) -> ModelVersion:
        """Read one version; :class:`ModelStoreError` when it is missing or unreadable."""
        path = self._dir(version_id)
        try:
            meta = json.loads((path / _META).read_bytes())
            factors = np.load(path / _FACTORS, allow_pickle=False)
        except FileNotFoundError:
            raise ModelStoreError(f"no model version {version_id} in {self.root}") from None
        except (OSError, ValueError) as exc:
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
            )
        except (KeyError, ValueError) as exc:
            raise ModelStoreError(f"model version {version_id} is inconsistent: {exc}") from exc

    def versions(self) -> list[str]:
        """Ids of the complete versions, oldest first."""
        if not self._versions.is_dir():
            return []
        return sorted(p.name for p in self._versions.iterdir() if not p.name.startswith("."))

    def current(self) -> str | None:
        """The id the current-model pointer names, or None before the first publish."""
        try:
            text = (self.root / _POINTER).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def set_current(self, version_id: str) -> None:
        """Point ``CURRENT`` at an existing version, atomically."""
        if not (self._dir(version_id) / _META).is_file():
            raise ModelStoreError(f"cannot publish {version_id}: no such version in {self.root}")
        tmp = self.root / f".{_POINTER}.tmp-{secrets.token_hex(4)}"
        try:
            _write_file(tmp, (version_id + "\n").encode())
            os.replace(tmp, self.root / _POINTER)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.root)

    def load_current(self) -> ModelVersion | None:
        """The version the pointer names, or None when nothing is published yet."""
        current = self.current()
        return None if current is None else self.load(current)

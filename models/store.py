"""The versioned model store: immutable model versions and a current pointer, in a
local directory or under an fsspec URL (``s3://bucket/models``, ``gs://...``,
``memory://...``).

Layout under the root::

    versions/<version_id>/item_factors.npy   float32 (n_items x f), np.save, no pickle
    versions/<version_id>/meta.json          item ids, params, metrics, snapshot,
                                             popular list, created_at, format
    CURRENT                                  the current version id, one line

A version is complete once its ``meta.json`` exists, and ``meta.json`` is
always written last, so readers see a whole version or none:

* In a local directory a version is written into ``versions/.tmp-...`` first,
  every file and the directory fsynced, then renamed into place; the pointer
  moves by writing a temporary file and ``os.replace`` over ``CURRENT``, which
  is atomic on POSIX, so a worker polling the pointer never reads half an id.
* Under a URL (object stores have no atomic rename) the factors are written
  first and ``meta.json`` last; a writer killed in between leaves factors that
  no listing or load will ever name. ``CURRENT`` is one object written whole,
  which object stores replace atomically.

Versions are never modified once complete, which is what lets a worker cache
one by id. fsspec resolves the URL; the protocol's own package (``s3fs``,
``gcsfs``, ...) must be installed for anything but local paths and
``memory://``.
"""

from __future__ import annotations

import io
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

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from freshrec.errors import FreshrecError
from models.ids import IdMap
from models.recommender import Recommender
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig

FORMAT = 1
_FACTORS = "item_factors.npy"
_META = "meta.json"
_POINTER = "CURRENT"

#: Age after which a ``.tmp-*`` directory is a dead writer's leftover, not a save in progress.
STALE_TMP_S = 3600.0

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
    """Model versions under a local directory or an fsspec URL (created on first save)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        fs, path = fsspec.core.url_to_fs(self.root)
        self._fs: fsspec.AbstractFileSystem = fs
        self._local = isinstance(fs, LocalFileSystem)
        self._path = path.rstrip("/") or "/"

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

    def _join(self, *parts: str) -> str:
        return "/".join((self._path, *parts))

    def _dir(self, version_id: str) -> str:
        if not version_id or "/" in version_id or version_id.startswith("."):
            raise ModelStoreError(f"invalid model version id {version_id!r}")
        return self._join("versions", version_id)

    def save(self, version: ModelVersion) -> str:
        """Write ``version`` atomically; returns its id. An existing id is an error."""
        final = self._dir(version.version_id)
        if self._fs.exists(f"{final}/{_META}"):
            raise ModelStoreError(
                f"model version {version.version_id} already exists in {self.root}"
            )
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
        files = {  # meta.json last: it makes the version complete
            _FACTORS: factors.getvalue(),
            _META: json.dumps(meta, indent=1, sort_keys=True).encode(),
        }
        if self._local:
            self._save_local(Path(final), files)
        else:
            for name, data in files.items():
                self._fs.pipe_file(f"{final}/{name}", data)
        return version.version_id

    @staticmethod
    def _save_local(final: Path, files: dict[str, bytes]) -> None:
        versions = final.parent
        versions.mkdir(parents=True, exist_ok=True)
        tmp = versions / f".tmp-{final.name}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            for name, data in files.items():
                _write_file(tmp / name, data)
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(versions)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def load(self, version_id: str) -> ModelVersion:
        """Read one version; :class:`ModelStoreError` when it is missing or unreadable."""
        path = self._dir(version_id)
        try:
            meta = json.loads(self._fs.cat_file(f"{path}/{_META}"))
            with self._fs.open(f"{path}/{_FACTORS}", "rb") as fh:
                factors = np.load(fh, allow_pickle=False)
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

    def meta(self, version_id: str) -> dict[str, Any]:
        """A version's ``meta.json`` (everything but the factors), for listing versions."""
        path = self._dir(version_id)
        try:
            meta: dict[str, Any] = json.loads(self._fs.cat_file(f"{path}/{_META}"))
        except FileNotFoundError:
            raise ModelStoreError(f"no model version {version_id} in {self.root}") from None
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"model version {version_id} is unreadable: {exc}") from exc
        return meta

    def delete(self, version_id: str) -> None:
        """Remove a version; the current one cannot be removed.

        ``meta.json`` goes first, so a delete cut short leaves an incomplete
        version that no listing or load names, never a version missing its factors.
        """
        if version_id == self.current():
            raise ModelStoreError(f"{version_id} is the current version; roll back first")
        path = self._dir(version_id)
        if not self._fs.exists(f"{path}/{_META}"):
            raise ModelStoreError(f"no model version {version_id} in {self.root}")
        self._fs.rm_file(f"{path}/{_META}")
        self._fs.rm(path, recursive=True)

    def prune(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest versions and the current one; returns the ids
        deleted, oldest first. Leftovers of local writers killed mid-save go too, once
        they are older than :data:`STALE_TMP_S` (a younger one may still be writing)."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        current = self.current()
        versions = self.versions()
        doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
        for version_id in doomed:
            self.delete(version_id)
        if self._local:
            root = Path(self._path) / "versions"
            for tmp in root.glob(".tmp-*") if root.exists() else ():
                if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                    shutil.rmtree(tmp, ignore_errors=True)
        return doomed

    def check_writable(self) -> None:
        """Raise :class:`ModelStoreError` unless a local store's directory exists or can be
        made, so that ``freshrec train`` fails before the training whose result it could not
        save (a remote store is left to its first write)."""
        if not self._local:
            return
        try:
            os.makedirs(self._path, exist_ok=True)
        except OSError as exc:
            raise ModelStoreError(
                f"cannot create the model store {self.root}: {exc.strerror or exc}; "
                "set FRESHREC_MODEL_STORE to a writable directory"
            ) from None

    def versions(self) -> list[str]:
        """Ids of the complete versions, oldest first."""
        metas = self._fs.glob(self._join("versions", "*", _META))
        names = (m.rstrip("/").split("/")[-2] for m in metas)
        return sorted(n for n in names if not n.startswith("."))

    def current(self) -> str | None:
        """The id the current-model pointer names, or None before the first publish."""
        try:
            text = self._fs.cat_file(self._join(_POINTER)).decode().strip()
        except FileNotFoundError:
            return None
        return text or None

    def set_current(self, version_id: str) -> None:
        """Point ``CURRENT`` at an existing version, atomically."""
        if not self._fs.exists(f"{self._dir(version_id)}/{_META}"):
            raise ModelStoreError(f"cannot publish {version_id}: no such version in {self.root}")
        data = (version_id + "\n").encode()
        if not self._local:
            self._fs.pipe_file(self._join(_POINTER), data)
            return
        root = Path(self._path)
        tmp = root / f".{_POINTER}.tmp-{secrets.token_hex(4)}"
        try:
            _write_file(tmp, data)
            os.replace(tmp, root / _POINTER)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(root)

    def load_current(self) -> ModelVersion | None:
        """The version the pointer names, or None when nothing is published yet."""
        current = self.current()
        return None if current is None else self.load(current)


def recommender_from_version(version: ModelVersion, num_threads: int = 1) -> Recommender:
    """The :class:`~models.recommender.Recommender` of a stored version.

    Here, beside the format, rather than in the numeric core: reading the
    stored parameters (and the weighting rule, absent from older versions) is
    the store's business. ``YᵀY + λI`` is computed once, here. ``num_threads``
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
    )

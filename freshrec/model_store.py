"""The versioned model store: immutable model versions and a current pointer, in a
local directory or under an fsspec URL (``s3://bucket/models``, ``gs://...``,
``memory://...``).

The store moves bytes: a version is a few named files (their format, and the
:class:`~models.version.ModelVersion` they decode to, live in
:mod:`models.version`), and ``meta.json``, a JSON object, is the one file the
store reads itself, to list versions. It sits in the floor because the worker
reads versions and the retrain writes them, and neither may import the other.

Layout under the root::

    versions/<version_id>/<file>             a version's files (item_factors.npy, ...)
    versions/<version_id>/meta.json          written last: it completes the version
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

import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from freshrec.errors import ModelStoreError

#: The file that completes a version: written last, deleted first, read to list versions.
_META = "meta.json"
_POINTER = "CURRENT"

#: Age after which a ``.tmp-*`` directory is a dead writer's leftover, not a save in progress.
STALE_TMP_S = 3600.0


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

    def _join(self, *parts: str) -> str:
        return "/".join((self._path, *parts))

    def _dir(self, version_id: str) -> str:
        if not version_id or "/" in version_id or version_id.startswith("."):
            raise ModelStoreError(f"invalid model version id {version_id!r}")
        return self._join("versions", version_id)

    def save(self, version_id: str, files: Mapping[str, bytes]) -> str:
        """Write a version's ``files`` atomically; returns its id. An existing id is an
        error, and so are files without ``meta.json`` (it completes the version, so it is
        written last whatever the mapping's order)."""
        final = self._dir(version_id)
        if _META not in files:
            raise ModelStoreError(f"model version {version_id} has no {_META}")
        if self._fs.exists(f"{final}/{_META}"):
            raise ModelStoreError(f"model version {version_id} already exists in {self.root}")
        files = {name: data for name, data in files.items() if name != _META} | {
            _META: files[_META]
        }
        if self._local:
            self._save_local(Path(final), files)
        else:
            for name, data in files.items():
                self._fs.pipe_file(f"{final}/{name}", data)
        return version_id

    @staticmethod
    def _save_local(final: Path, files: Mapping[str, bytes]) -> None:
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

    def load(self, version_id: str) -> dict[str, bytes]:
        """A version's files by name; :class:`ModelStoreError` when it is missing or
        unreadable (decode them with :func:`models.version.decode_version`)."""
        path = self._dir(version_id)
        try:
            if not self._fs.exists(f"{path}/{_META}"):
                raise FileNotFoundError(path)
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(path, detail=False)]
            return {name: self._fs.cat_file(f"{path}/{name}") for name in names}
        except FileNotFoundError:
            raise ModelStoreError(f"no model version {version_id} in {self.root}") from None
        except OSError as exc:
            raise ModelStoreError(f"model version {version_id} is unreadable: {exc}") from exc

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

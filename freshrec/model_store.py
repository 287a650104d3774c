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
    CURRENT                                  the pointer: a small JSON document (below)

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

The pointer (:class:`Pointer`) names the current version and carries a
*generation*, a number that every move of the pointer (a publish, a rollback)
raises by one. Lists in Redis are ordered by it (:func:`schemas.recs.order_token`),
not by the version id: a rollback names an older id, yet its generation is the
newest, so every list and the popular list are replaced after it. It also
names who moved it, how and when, and keeps the recent moves, so that pruning
spares a version the pointer named within :data:`RECENT_S`. A move is a
compare-and-set (:meth:`ModelStore.set_current` with ``expect``): a publish moves the
pointer only if its generation is still the one the candidate was gated
against, else :class:`PointerMoved` says who moved it meanwhile. In a local
directory the read, compare and replace run under an exclusive ``flock`` on
the store's directory, so two movers on one filesystem (a rollback and a
retrain) are serialised; under a URL there is no lock, and a move that lands
between another's read and write is not detected (the retrain lock still
keeps two retrains apart). A ``CURRENT`` that holds only a version id (written
by freshrec before generations) reads as generation 0.

The pointer may also name a canary: a second version serving a fraction of
the users (:meth:`ModelStore.start_canary`), until it is promoted or aborted
(:meth:`ModelStore.end_canary`); each is a move like a publish. Pruning spares
the canary too.

A move may carry a *guard* (:data:`Guard`), asked under the same lock before
the pointer gives a version other than the current one more users (a publish,
a rollback, a canary's start or promotion): the forget promise
(:mod:`freshrec.forgets`) refuses there a version read before the newest forget.

Versions are never modified once complete, which is what lets a worker cache
one by id. fsspec resolves the URL; the protocol's own package (``s3fs``,
``gcsfs``, ...) must be installed for anything but local paths and
``memory://``.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

from freshrec.errors import FreshrecError, ModelStoreError

#: The file that completes a version: written last, deleted first, read to list versions.
_META = "meta.json"
_POINTER = "CURRENT"

#: Age after which a ``.tmp-*`` directory is a dead writer's leftover, not a save in progress.
STALE_TMP_S = 3600.0


#: Seconds after the pointer stopped naming a version during which pruning spares it:
#: a worker may still be loading or serving it, and it is the obvious rollback target.
RECENT_S = 3600.0
#: Moves the pointer's history keeps at least (older ones go once past :data:`RECENT_S`).
_HISTORY_MIN = 20

#: How the pointer got where it is: ``legacy`` is a ``CURRENT`` written before generations.
Move = Literal["publish", "rollback", "canary", "promote", "abort", "legacy"]

#: Asked, under the pointer lock, before the pointer names a version it did not name: the
#: version's id and ``meta.json``; it raises to refuse the move (the forget promise,
#: :func:`freshrec.forgets.check_version`).
Guard = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Named:
    """One past position of the pointer: ``version`` was current from ``since_ms`` to
    ``until_ms`` (epoch ms)."""

    version: str
    since_ms: int
    until_ms: int


@dataclass(frozen=True)
class Pointer:
    """What ``CURRENT`` says: the current version and how it got there."""

    version: str | None
    generation: int = 0
    """Raised by one at every move: what lists are ordered by (see the module doc)."""
    move: Move = "legacy"
    by: str = ""
    """Who moved it: user, host and pid of the process, and the command."""
    at_ms: int = 0
    history: tuple[Named, ...] = field(default_factory=tuple)
    """Earlier positions, oldest first (the recent ones at least)."""
    canary: str | None = None
    """The candidate of a canary release: ``fraction`` of the users get its lists."""
    fraction: float = 0.0

    def describe(self) -> str:
        """One line for an operator: what it names and who put it there."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at_ms / 1000))
        return (
            f"{self.version} (generation {self.generation}, {self.move} by "
            f"{self.by or 'unknown'} at {when})"
        )

    def named_since(self, since_ms: int) -> set[str]:
        """Versions the pointer named at any time since ``since_ms``, the current one and
        the canary included."""
        named = {n.version for n in self.history if n.until_ms >= since_ms}
        return named | {v for v in (self.version, self.canary) if v}

    def encode(self) -> bytes:
        return json.dumps(
            {
                "version": self.version,
                "generation": self.generation,
                "move": self.move,
                "by": self.by,
                "at_ms": self.at_ms,
                "history": [[n.version, n.since_ms, n.until_ms] for n in self.history],
                "canary": None if self.canary is None else [self.canary, self.fraction],
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Pointer:
        """Parse ``CURRENT``: the JSON document, or a bare version id (generation 0)."""
        text = data.decode().strip()
        if not text.startswith("{"):
            return cls(text or None)
        try:
            doc = json.loads(text)
            return cls(
                version=doc["version"],
                generation=int(doc["generation"]),
                move=doc["move"],
                by=str(doc.get("by", "")),
                at_ms=int(doc.get("at_ms", 0)),
                history=tuple(Named(str(v), int(a), int(b)) for v, a, b in doc.get("history", [])),
                canary=None if doc.get("canary") is None else str(doc["canary"][0]),
                fraction=0.0 if doc.get("canary") is None else float(doc["canary"][1]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelStoreError(f"the model store's pointer is unreadable: {exc}") from exc


class PointerMoved(FreshrecError):
    """A compare-and-set move found the pointer moved since the mover read it."""

    def __init__(self, expected: int, found: Pointer) -> None:
        super().__init__(
            f"the current-model pointer moved since generation {expected}: it now names "
            f"{found.describe()}"
        )
        self.expected = expected
        self.found = found


def mover() -> str:
    """Who this process is, for the pointer's ``by``: user@host pid N."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


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
        self._delete(version_id)

    def _delete(self, version_id: str) -> None:
        path = self._dir(version_id)
        if not self._fs.exists(f"{path}/{_META}"):
            raise ModelStoreError(f"no model version {version_id} in {self.root}")
        self._fs.rm_file(f"{path}/{_META}")
        self._fs.rm(path, recursive=True)

    def prune(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest versions; returns the ids deleted, oldest
        first. The current version and every version the pointer named within
        :data:`RECENT_S` are kept whatever their age: a worker may still serve one, and
        the last one is what a rollback goes back to. Leftovers of local writers killed
        mid-save go too, once they are older than :data:`STALE_TMP_S` (a younger one may
        still be writing)."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        spared = self.pointer().named_since(int((time.time() - RECENT_S) * 1000))
        versions = self.versions()
        doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in spared]
        for version_id in doomed:
            self._delete(version_id)
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

    def pointer(self) -> Pointer:
        """What ``CURRENT`` says (version None before the first publish)."""
        try:
            data = self._fs.cat_file(self._join(_POINTER))
        except FileNotFoundError:
            return Pointer(None)
        return Pointer.decode(data)

    def current(self) -> str | None:
        """The id the current-model pointer names, or None before the first publish."""
        return self.pointer().version

    def set_current(
        self,
        version_id: str,
        *,
        move: Move = "publish",
        by: str | None = None,
        expect: int | None = None,
        guard: Guard | None = None,
    ) -> Pointer:
        """Point ``CURRENT`` at an existing version, atomically, with the next generation;
        returns the new pointer. A canary release running ends (its candidate no longer
        serves anyone).

        With ``expect``, only if the pointer's generation is still ``expect``
        (the one the caller read before deciding), else :class:`PointerMoved`.
        ``by`` names the mover (default: this process, :func:`mover`). ``guard``
        may refuse the version, under the lock (:data:`Guard`).
        """
        self._require(version_id, "publish")

        def place(before: Pointer) -> tuple[str | None, str | None, float]:
            self._check(guard, version_id, before)
            return version_id, None, 0.0

        return self._move(place, move=move, by=by, expect=expect)

    def start_canary(
        self,
        version_id: str,
        fraction: float,
        *,
        by: str | None = None,
        expect: int | None = None,
        guard: Guard | None = None,
    ) -> Pointer:
        """Make ``version_id`` the canary for ``fraction`` (0 < F < 1) of the users, the
        current version staying current for the rest; a move like any other."""
        if not 0 < fraction < 1:
            raise ValueError(f"a canary's fraction is between 0 and 1, not {fraction}")
        self._require(version_id, "start a canary of")

        def place(before: Pointer) -> tuple[str | None, str | None, float]:
            if before.version is None:
                raise ModelStoreError("no current version to hold a canary against; publish one")
            if before.version == version_id:
                raise ModelStoreError(f"{version_id} is the current version already")
            self._check(guard, version_id, before)
            return before.version, version_id, fraction

        return self._move(place, move="canary", by=by, expect=expect)

    def end_canary(
        self,
        *,
        promote: bool,
        by: str | None = None,
        expect: int | None = None,
        guard: Guard | None = None,
    ) -> Pointer:
        """End the canary: ``promote`` makes it current for everyone (``guard`` may refuse
        it), else (an abort) the current version serves everyone again."""

        def place(before: Pointer) -> tuple[str | None, str | None, float]:
            if before.canary is None:
                raise ModelStoreError("no canary release is running")
            if promote:
                self._check(guard, before.canary, before)
            return (before.canary if promote else before.version), None, 0.0

        return self._move(place, move="promote" if promote else "abort", by=by, expect=expect)

    def _check(self, guard: Guard | None, version_id: str, before: Pointer) -> None:
        """Ask ``guard`` about a version about to serve more users than it does: any but
        the current one (naming it again takes nothing back)."""
        if guard is not None and version_id != before.version:
            guard(version_id, self.meta(version_id))

    def _require(self, version_id: str, doing: str) -> None:
        if not self._fs.exists(f"{self._dir(version_id)}/{_META}"):
            raise ModelStoreError(f"cannot {doing} {version_id}: no such version in {self.root}")

    def _move(
        self,
        place: Callable[[Pointer], tuple[str | None, str | None, float]],
        *,
        move: Move,
        by: str | None,
        expect: int | None,
    ) -> Pointer:
        """Compare-and-set the pointer: ``place`` says, from the pointer found, where the
        current version, the canary and its fraction go (see :meth:`set_current`)."""
        with self._pointer_lock():
            before = self.pointer()
            if expect is not None and before.generation != expect:
                raise PointerMoved(expect, before)
            version, canary, fraction = place(before)
            now = int(time.time() * 1000)
            history = before.history + tuple(
                Named(v, before.at_ms, now) for v in (before.version, before.canary) if v
            )
            cutoff = now - int(RECENT_S * 1000)
            history = tuple(
                n
                for i, n in enumerate(history)
                if n.until_ms >= cutoff or i >= len(history) - _HISTORY_MIN
            )
            after = Pointer(
                version, before.generation + 1, move, by or mover(), now, history, canary, fraction
            )
            self._write_pointer(after.encode())
        return after

    @contextlib.contextmanager
    def _pointer_lock(self) -> Iterator[None]:
        """Exclusive among local movers (``flock`` on the store's directory); nothing
        under a URL (see the module doc)."""
        if not self._local:
            yield
            return
        os.makedirs(self._path, exist_ok=True)
        fd = os.open(self._path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _write_pointer(self, data: bytes) -> None:
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

from __future__ import annotations

import re
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from freshrec.errors import ModelStoreError
from freshrec.model_store import ModelStore, Pointer, PointerMoved
from models.ids import IdMap
from models.version import (
    ModelVersion,
    load_current_version,
    load_version,
    new_version_id,
    save_version,
)


def _version(vid: str | None = None) -> ModelVersion:
    return ModelVersion(
        version_id=vid or new_version_id(),
        item_factors=np.arange(12, dtype=np.float32).reshape(3, 4),
        item_ids=IdMap(["a", "b", "c"]),
        params={"regularization": 0.1, "alpha": 2.0, "factors": 4},
        metrics={"ndcg@10": 0.5},
        snapshot={"path": "x.jsonl", "sha256": "00", "offsets": {"watch": {"0": 12}}},
        popular_items=["b", "a"],
        popular_scores=[3.0, 1.0],
        created_at=1234,
    )


def test_version_ids_sort_in_creation_order() -> None:
    ids = [new_version_id() for _ in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 200
    assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{4}", ids[0])


def test_save_load_round_trip(store_root: str) -> None:
    store = ModelStore(store_root)
    v = _version()
    assert save_version(store, v) == v.version_id
    got = load_version(store, v.version_id)
    np.testing.assert_array_equal(got.item_factors, v.item_factors)
    assert got.item_factors.dtype == np.float32
    assert got.item_ids == v.item_ids
    for name in ("params", "metrics", "snapshot", "popular_items", "popular_scores", "created_at"):
        assert getattr(got, name) == getattr(v, name)


def test_versions_and_current_pointer(store_root: str) -> None:
    store = ModelStore(store_root)
    assert (
        store.versions() == [] and store.current() is None and load_current_version(store) is None
    )
    a, b = _version(), _version()
    save_version(store, b)
    save_version(store, a)
    assert store.versions() == sorted([a.version_id, b.version_id])
    store.set_current(a.version_id)
    assert store.current() == a.version_id
    store.set_current(b.version_id)
    loaded = load_current_version(store)
    assert loaded is not None and loaded.version_id == b.version_id
    fs, path = fsspec.core.url_to_fs(store_root)
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    assert names == ["CURRENT", "versions"]  # no temp files left


def test_errors_are_specific(store_root: str) -> None:
    store = ModelStore(store_root)
    v = _version()
    save_version(store, v)
    with pytest.raises(ModelStoreError, match="already exists"):
        save_version(store, v)
    with pytest.raises(ModelStoreError, match="no model version"):
        load_version(store, "20000101T000000000000Z-0000")
    with pytest.raises(ModelStoreError, match="no such version"):
        store.set_current("20000101T000000000000Z-0000")
    with pytest.raises(ModelStoreError, match="invalid"):
        load_version(store, "../etc")
    fs, path = fsspec.core.url_to_fs(store_root)
    fs.pipe_file(f"{path}/versions/{v.version_id}/meta.json", b"{not json")
    with pytest.raises(ModelStoreError, match="unreadable"):
        load_version(store, v.version_id)


def test_a_version_without_its_meta_is_not_there() -> None:
    """Under a URL the factors go first and meta.json last: a writer that died between
    the two leaves factors that no listing, load or publish names."""
    root = f"memory://freshrec-tests/{uuid.uuid4().hex}"
    store = ModelStore(root)
    good, partial = _version(), _version()
    save_version(store, good)
    fs, path = fsspec.core.url_to_fs(root)
    fs.pipe_file(f"{path}/versions/{partial.version_id}/item_factors.npy", b"half a file")
    assert store.versions() == [good.version_id]
    with pytest.raises(ModelStoreError, match="no model version"):
        load_version(store, partial.version_id)
    with pytest.raises(ModelStoreError, match="no such version"):
        store.set_current(partial.version_id)


def test_failed_save_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    bad = _version()
    bad.params["oops"] = object()  # not JSON-serialisable: the write fails midway
    with pytest.raises(TypeError):
        save_version(store, bad)
    assert store.versions() == []
    assert list(tmp_path.rglob("*")) == []  # not even a temporary directory


def test_inconsistent_version_is_refused() -> None:
    with pytest.raises(ValueError, match="item ids"):
        ModelVersion("v", np.zeros((2, 3), np.float32), IdMap(["a"]), {})


_KILLED_WRITER = """
import os, sys, time
import numpy as np
from models.ids import IdMap
from freshrec.model_store import ModelStore, Pointer, PointerMoved
from models.version import ModelVersion, save_version

def stall(fd):
    print("writing", flush=True)
    time.sleep(60)  # killed here, mid-save
os.fsync = stall
v = ModelVersion(sys.argv[2], np.ones((2, 3), np.float32), IdMap(["a", "b"]), {})
save_version(ModelStore(sys.argv[1]), v)
"""


def test_a_writer_killed_mid_save_leaves_no_version(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = ModelStore(tmp_path)
    good = _version()
    save_version(store, good)
    store.set_current(good.version_id)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), new_version_id()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    assert store.versions() == [good.version_id]
    current = load_current_version(store)
    assert current is not None and current.version_id == good.version_id


def test_every_move_of_the_pointer_raises_its_generation_and_names_its_mover(
    store_root: str,
) -> None:
    """Issue 24: lists are ordered by the pointer's generation, so a rollback to an
    older version id must still be a newer generation."""
    store = ModelStore(store_root)
    a, b = _version(), _version()
    save_version(store, a)
    save_version(store, b)
    assert store.pointer() == Pointer(None)
    moves = [
        store.set_current(a.version_id, by="retrain"),
        store.set_current(b.version_id, by="retrain"),
        store.set_current(a.version_id, move="rollback", by="ops"),
    ]
    assert [m.generation for m in moves] == [1, 2, 3]
    got = store.pointer()
    assert got == moves[-1] and (got.version, got.move, got.by) == (a.version_id, "rollback", "ops")
    assert [n.version for n in got.history] == [a.version_id, b.version_id]
    assert "rollback by ops" in got.describe()


def test_a_move_expecting_a_generation_the_pointer_left_is_refused(store_root: str) -> None:
    """Issue 24: a publish moves the pointer only if it is where the gate saw it."""
    store = ModelStore(store_root)
    a, b, c = _version(), _version(), _version()
    for v in (a, b, c):
        save_version(store, v)
    gated = store.set_current(a.version_id).generation
    store.set_current(b.version_id, move="rollback", by="ops on call")
    with pytest.raises(PointerMoved, match="rollback by ops on call") as refused:
        store.set_current(c.version_id, expect=gated)
    assert refused.value.found.version == b.version_id
    assert store.current() == b.version_id
    assert store.set_current(c.version_id, expect=gated + 1).version == c.version_id


def test_a_pointer_written_before_generations_reads_as_generation_0(store_root: str) -> None:
    store = ModelStore(store_root)
    a = _version()
    save_version(store, a)
    fs, path = fsspec.core.url_to_fs(store_root)
    fs.pipe_file(f"{path}/CURRENT", f"{a.version_id}\n".encode())
    assert store.pointer() == Pointer(a.version_id, 0, "legacy")
    assert store.set_current(a.version_id).generation == 1


def test_prune_spares_the_current_version_and_those_named_within_the_hour(
    store_root: str,
) -> None:
    """Issue 24: a forced retrain's prune deleted the version ops had just rolled back
    from (and to); every version the pointer named within RECENT_S now stays."""
    store = ModelStore(store_root)
    old, a, b, c, d = (_version() for _ in range(5))
    for v in (old, a, b, c, d):
        save_version(store, v)
    store.set_current(a.version_id)
    store.set_current(b.version_id)
    store.set_current(a.version_id, move="rollback")
    assert store.prune(keep=1) == [old.version_id, c.version_id]
    assert store.versions() == sorted([a.version_id, b.version_id, d.version_id])


def test_a_canary_starts_promotes_and_aborts_as_moves_and_is_never_pruned(
    store_root: str,
) -> None:
    store = ModelStore(store_root)
    old, a, b, c = (_version() for _ in range(4))
    for v in (old, a, b, c):
        save_version(store, v)
    with pytest.raises(ModelStoreError, match="no current version"):
        store.start_canary(b.version_id, 0.2)
    store.set_current(a.version_id)
    started = store.start_canary(b.version_id, 0.2, by="ops")
    assert (started.version, started.canary, started.fraction) == (a.version_id, b.version_id, 0.2)
    assert (started.move, started.generation) == ("canary", 2)
    assert store.pointer() == started
    assert b.version_id in store.pointer().named_since(10**15)
    assert old.version_id in store.prune(keep=1) and b.version_id in store.versions()
    aborted = store.end_canary(promote=False)
    assert (aborted.version, aborted.canary, aborted.move) == (a.version_id, None, "abort")
    with pytest.raises(ModelStoreError, match="no canary"):
        store.end_canary(promote=True)
    store.start_canary(c.version_id, 0.5)
    promoted = store.end_canary(promote=True)
    assert (promoted.version, promoted.canary, promoted.generation) == (c.version_id, None, 5)
    with pytest.raises(PointerMoved):
        store.start_canary(b.version_id, 0.1, expect=4)

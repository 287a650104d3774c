"""ModelFollower: loading a version and switching to it are separate steps (no services needed)."""

from __future__ import annotations

import asyncio

import fsspec
import numpy as np
import pytest

from freshrec.model_store import ModelStore
from models.ids import IdMap
from models.version import ModelVersion, save_version
from streams.metrics import WorkerMetrics
from streams.model_follower import ModelFollower


def _save(store: ModelStore, version_id: str) -> str:
    ids = IdMap([f"item-{i}" for i in range(5)])
    factors = np.random.default_rng(len(store.versions())).standard_normal((5, 3))
    save_version(
        store,
        ModelVersion(
            version_id, factors.astype(np.float32), ids, {"regularization": 0.1, "alpha": 1.0}
        ),
    )
    return version_id


@pytest.fixture
def store(store_root: str) -> ModelStore:
    """A store in a directory, and one under an fsspec URL (what a shared object store is)."""
    return ModelStore(store_root)


@pytest.fixture
def follower(store: ModelStore) -> ModelFollower:
    return ModelFollower(str(store.root), WorkerMetrics())


def test_nothing_to_fetch_before_any_version(follower: ModelFollower) -> None:
    assert asyncio.run(follower.fetch()) is None
    assert follower.recommender is None and follower.version is None


def test_fetch_loads_without_switching_and_adopt_switches(
    store: ModelStore, follower: ModelFollower
) -> None:
    store.set_current(_save(store, "v1"))
    candidate = asyncio.run(follower.fetch())
    assert candidate is not None and candidate.recommender.version_id == "v1"
    assert follower.version is None, "fetch alone must not change the model in use"
    assert follower.adopt(candidate) and follower.version == "v1"
    assert asyncio.run(follower.fetch()) is None, "the version in use is not loaded again"
    assert not follower.adopt(candidate)


def test_an_older_fetch_never_replaces_a_newer_one(
    store: ModelStore, follower: ModelFollower
) -> None:
    """The batch lock is not held while a version loads, so a slow fetch of v1 can finish
    after a fetch of v2 was adopted: v1 must then be dropped."""
    store.set_current(_save(store, "v1"))
    slow = asyncio.run(follower.fetch())
    store.set_current(_save(store, "v2"))
    fast = asyncio.run(follower.fetch())
    assert follower.adopt(fast) and follower.version == "v2"
    assert not follower.adopt(slow)
    assert follower.version == "v2"


def test_a_broken_version_is_skipped_until_the_pointer_moves(
    store: ModelStore, follower: ModelFollower, caplog: pytest.LogCaptureFixture
) -> None:
    store.set_current(_save(store, "v1"))
    assert follower.adopt(asyncio.run(follower.fetch()))
    broken = _save(store, "v2")
    fs, root = fsspec.core.url_to_fs(store.root)
    for name in ("meta.json", "item_factors.npy"):
        fs.pipe_file(f"{root}/versions/{broken}/{name}", b"not a model")
    store.set_current(broken)
    assert asyncio.run(follower.fetch()) is None
    assert "could not load model version v2; keeping v1" in caplog.text
    caplog.clear()
    assert asyncio.run(follower.fetch()) is None
    assert "could not load" not in caplog.text, "a failed version is not retried"
    store.set_current(_save(store, "v3"))
    assert follower.adopt(asyncio.run(follower.fetch())) and follower.version == "v3"


def test_a_move_back_to_the_version_in_use_is_adopted_as_a_new_generation(
    store: ModelStore, follower: ModelFollower
) -> None:
    """Issue 24: a rollback to v1 and a publish of v1 again between two polls leave the
    version in use but move the pointer: lists written under the generation between
    (by another worker, with v2) must be written again, so the move is adopted,
    without loading v1 again."""
    v1 = _save(store, "v1")
    store.set_current(v1)
    assert follower.adopt(asyncio.run(follower.fetch())) and follower.generation == 1
    in_use = follower.recommender
    store.set_current(_save(store, "v2"))
    store.set_current(v1, move="rollback")
    again = asyncio.run(follower.fetch())
    assert again is not None and again.recommender is in_use and again.generation == 3
    assert follower.adopt(again) and (follower.version, follower.generation) == ("v1", 3)
    assert asyncio.run(follower.fetch()) is None

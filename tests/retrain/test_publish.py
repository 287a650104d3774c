"""train_and_publish: the one path from data to a current model, gate and pruning included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freshrec.model_store import ModelStore
from models.als import ALSConfig
from models.gate import GateDecision, decide
from models.synthetic import generate
from models.version import ModelVersion, load_current_version
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import Outcome, build_version, train_and_publish

CFG = ALSConfig(factors=4, iterations=3, num_threads=1, use_gpu=False)
DATA = generate(100, 24, 2000, factors=4, seed=1).log


def _publish(store: ModelStore, **kwargs: Any) -> Outcome:
    return train_and_publish(
        store,
        DATA,
        CFG,
        DEFAULT_WEIGHTING,
        popular_length=30,
        snapshot={"source": "test"},
        **kwargs,
    )


def test_publish_writes_a_version_with_its_popular_list_and_moves_the_pointer(
    tmp_path: Path,
) -> None:
    store = ModelStore(tmp_path)
    stages: list[str] = []
    outcome = _publish(store, on_stage=stages.append)
    version = load_current_version(store)
    assert version is not None and version.version_id == outcome.version.version_id
    assert len(version.popular_items) == 24  # every liked item, fewer than asked for
    assert version.snapshot["source"] == "test" and version.snapshot["events"] == len(DATA)
    assert version.snapshot["newest_ts"] == int(DATA.ts.max())
    assert version.params["weighting"]["negative_below"] == DEFAULT_WEIGHTING.negative_below
    assert stages == ["trained", "saved", "published"]


def test_a_refusing_gate_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = _publish(store).version.version_id

    def refuse(version: ModelVersion) -> GateDecision:
        return decide("ndcg@10", 0.1, 0.2, first, 0.02)

    outcome = _publish(store, check=refuse)
    assert not outcome.published
    assert store.versions() == [first] and store.current() == first


def test_save_without_publishing_and_prune_keeps_the_current_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    current = _publish(store).version.version_id
    later = [_publish(store, make_current=False).version.version_id for _ in range(3)]
    assert store.current() == current
    outcome = _publish(store, make_current=False, keep=2)
    assert outcome.pruned == later[:2]
    assert store.versions() == sorted([current, later[2], outcome.version.version_id])


def test_a_canary_publish_puts_the_candidate_beside_the_current_version(tmp_path: Path) -> None:
    """``freshrec retrain --canary F``: the candidate serves F of the users, the current
    version the rest, by one compare-and-set move."""
    store = ModelStore(tmp_path)
    current = _publish(store).version.version_id
    generation = store.pointer().generation
    outcome = _publish(store, canary=0.3, expect=generation)
    pointer = store.pointer()
    assert outcome.published and outcome.moved is None
    assert (pointer.version, pointer.canary, pointer.fraction) == (
        current,
        outcome.version.version_id,
        0.3,
    )
    assert (pointer.move, pointer.generation) == ("canary", generation + 1)
    late = _publish(store, canary=0.3, expect=generation)  # the pointer moved since
    assert not late.published and late.moved == pointer


def test_items_taken_down_stay_out_of_the_popular_list() -> None:
    """Issue 22: the retrain leaves a taken-down item out of the stored popular list."""
    data = generate(n_users=100, n_items=30, n_interactions=2_000, factors=4, seed=2)
    cfg = ALSConfig(factors=4, iterations=2, num_threads=1, seed=1, use_gpu=False)
    kept = build_version(data.log, cfg, DEFAULT_WEIGHTING, popular_length=30, snapshot={})
    top = kept.popular_items[0]
    without = build_version(
        data.log, cfg, DEFAULT_WEIGHTING, popular_length=30, snapshot={}, leave_out={top}
    )
    assert top not in without.popular_items
    assert without.popular_items == [i for i in kept.popular_items if i != top]

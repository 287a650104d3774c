"""``freshrec models list|show|rollback|prune`` on a real store, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis

from cli.main import main
from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from models.als import ALSConfig
from models.synthetic import generate
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import train_and_publish
from schemas.interim import InterimVector, encode_vector, generation_key, interim_key
from schemas.recs import encode_items, items_key


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    """A store with three versions, the newest current (the only one the pointer has
    named: pruning spares those for an hour), and FRESHREC_MODEL_STORE naming it."""
    root = tmp_path / "store"
    monkeypatch.setenv("FRESHREC_MODEL_STORE", str(root))
    store = ModelStore(root)
    data = generate(80, 24, 1500, factors=4, seed=2).log
    for n in range(3):
        train_and_publish(
            store,
            data,
            ALSConfig(factors=4, iterations=2, num_threads=1, use_gpu=False),
            DEFAULT_WEIGHTING,
            popular_length=10,
            snapshot={"source": "test"},
            make_current=n == 2,
        )
    return store


def test_list_marks_the_current_version_and_shows_what_made_it(
    store: ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["version"] for r in rows] == store.versions()
    assert [r["current"] for r in rows] == [False, False, True]
    assert rows[0]["tuned"]["factors"] == 4 and rows[0]["snapshot"]["source"] == "test"
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[-1].startswith("* ") and "f=4" in table[-1]


def test_show_and_rollback_move_the_pointer_to_an_older_version(
    store: ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    first = store.versions()[0]
    assert main(["models", "show", first]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["version_id"] == first and meta["current"] is False and meta["n_items"] == 24
    assert main(["models", "rollback", first]) == 0
    assert store.current() == first
    assert "workers refresh" in capsys.readouterr().out


def test_rollback_to_a_missing_version_is_one_line_and_changes_nothing(
    store: ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    current = store.current()
    assert main(["models", "rollback", "20000101T000000000000Z-0000"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no model version" in err
    assert store.current() == current


def test_prune_keeps_the_newest_and_the_current_and_their_item_tables_only(
    store: ModelStore,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRESHREC_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("FRESHREC_KEY_PREFIX", settings.key_prefix)
    oldest, middle, newest = store.versions()
    for version in (oldest, middle, newest):  # as the workers that adopted each wrote them
        redis_client.set(items_key(settings.key_prefix, version), encode_items(["a"]))
    store.set_current(oldest)
    assert main(["models", "prune", "--keep", "1"]) == 0
    assert store.versions() == [oldest, newest]
    out = capsys.readouterr().out
    assert middle in out and "item tables of 1 version" in out
    tables = [redis_client.exists(items_key(settings.key_prefix, v)) for v in store.versions()]
    assert tables == [1, 1]
    assert not redis_client.exists(items_key(settings.key_prefix, middle))


def test_items_lists_the_current_versions_interim_items_and_prune_drops_them(
    store: ModelStore,
    settings: Settings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FRESHREC_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("FRESHREC_KEY_PREFIX", settings.key_prefix)
    current = store.current()
    assert current is not None
    vector = np.ones(4, dtype=np.float32)
    redis_client.hset(
        interim_key(settings.key_prefix, current),
        mapping={
            "hot-new": encode_vector(InterimVector(vector, "fold", 12, 1_000, 2_000)),
            "tagged": encode_vector(InterimVector(vector, "content", 0, 0, 3_000)),
        },
    )
    assert main(["items", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["item"], r["source"], r["users"]) for r in rows] == [
        ("hot-new", "fold", 12),
        ("tagged", "content", 0),
    ]
    assert main(["items"]) == 0
    assert "2 interim item(s)" in capsys.readouterr().out
    oldest = store.versions()[0]
    redis_client.hset(interim_key(settings.key_prefix, oldest), "x", b"{}")
    redis_client.incr(generation_key(settings.key_prefix, oldest))
    assert main(["models", "prune", "--keep", "1"]) == 0
    assert not redis_client.exists(interim_key(settings.key_prefix, oldest))
    assert not redis_client.exists(generation_key(settings.key_prefix, oldest))
    assert redis_client.exists(interim_key(settings.key_prefix, current))

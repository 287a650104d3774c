"""``freshrec models list|show|rollback|prune`` on a real store, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis

from cli.main import main
from freshrec.forgets import MARK_SCRIPT, ForgetClock, forgets_key
from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from freshrec.stack import free_port
from models.als import ALSConfig
from models.synthetic import generate
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import train_and_publish
from schemas.interim import InterimVector, encode_vector, generation_key, interim_key
from schemas.recs import encode_items, items_key


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> ModelStore:
    """A store with three versions, the newest current (the only one the pointer has
    named: pruning spares those for an hour), and FRESHREC_MODEL_STORE naming it; the
    test's Redis (a pointer move reads the newest forget there) in FRESHREC_REDIS_URL."""
    root = tmp_path / "store"
    monkeypatch.setenv("FRESHREC_MODEL_STORE", str(root))
    monkeypatch.setenv("FRESHREC_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("FRESHREC_KEY_PREFIX", settings.key_prefix)
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


def mark_forget(client: redis.Redis, settings: Settings) -> int:
    """Record a forget now, as the worker's Redis write does when a batch forgets a user."""
    reply = client.eval(MARK_SCRIPT, 1, forgets_key(settings.key_prefix), "mark")
    return ForgetClock.of(reply).newest_ms


def test_after_a_forget_a_rollback_or_canary_to_an_older_version_is_refused_unless_forced(
    store: ModelStore,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    """Issue 28, item 5: versions read before a forget may hold what the forgotten user
    gave (items only they had); the pointer never names one again without --force."""
    first, middle, newest = store.versions()
    assert main(["models", "rollback", first]) == 0  # nobody forgotten yet
    store.set_current(newest)
    capsys.readouterr()
    mark_forget(redis_client, settings)
    generation = store.pointer().generation
    for args in (["rollback", first], ["canary", middle, "--fraction", "0.2"]):
        assert main(["models", *args]) == 1, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "before a user was forgotten" in err and "--force" in err, err
    assert store.pointer().generation == generation and store.current() == newest

    store.start_canary(middle, 0.2)  # started before the forget's check existed, say
    assert main(["models", "canary", "promote"]) == 1
    assert "before a user was forgotten" in capsys.readouterr().err
    assert store.pointer().canary == middle
    assert main(["models", "canary", "abort"]) == 0  # back to what serves already
    assert store.pointer().canary is None and store.current() == newest

    assert main(["models", "rollback", first, "--force"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "moved anyway (--force)" in err
    assert store.current() == first
    assert main(["models", "rollback", newest]) == 1  # newest was read before it too
    capsys.readouterr()

    later = train_and_publish(  # a version trained after the forget is served freely
        store,
        generate(80, 24, 1500, factors=4, seed=3).log,
        ALSConfig(factors=4, iterations=2, num_threads=1, use_gpu=False),
        DEFAULT_WEIGHTING,
        popular_length=10,
        snapshot={"source": "test"},
        make_current=False,
    ).version.version_id
    assert main(["models", "rollback", later]) == 0
    assert store.current() == later


def test_a_rollback_without_redis_is_refused_as_transient_unless_forced(
    store: ModelStore,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The newest forget lives in Redis: a move that cannot read it does not guess."""
    monkeypatch.setenv("FRESHREC_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    first = store.versions()[0]
    assert main(["models", "rollback", first]) == 75
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "newest forget" in err and "run it again" in err
    assert store.current() != first
    assert main(["models", "rollback", first, "--force"]) == 0
    assert "moved unchecked" in capsys.readouterr().err
    assert store.current() == first


def test_prune_forgotten_deletes_every_version_read_before_the_newest_forget_but_the_current(
    store: ModelStore,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    """Issue 28, item 5: the versions a forget made unservable still hold, in their files
    and metadata, item ids only the forgotten user had; `prune --forgotten` deletes them
    now (a plain prune spares the ones the pointer named within the hour)."""
    oldest, middle, newest = store.versions()
    store.set_current(oldest)
    store.set_current(newest)  # oldest named within the hour: a plain prune spares it
    for version in (oldest, middle, newest):
        redis_client.set(items_key(settings.key_prefix, version), encode_items(["a"]))
    assert main(["models", "prune", "--keep", "3", "--forgotten"]) == 0
    assert store.versions() == [oldest, middle, newest]  # nobody forgotten yet
    mark_forget(redis_client, settings)
    assert main(["models", "prune", "--keep", "3", "--forgotten"]) == 0
    assert store.versions() == [newest]
    out = capsys.readouterr().out
    assert f"deleted 2 version(s): {oldest} {middle}" in out
    assert not redis_client.exists(items_key(settings.key_prefix, oldest))
    assert redis_client.exists(items_key(settings.key_prefix, newest))


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

"""``freshrec retrain`` as ops run it, against a real broker and redis-server.

The workers' changelog is written here in their record format (the worker
itself is exercised in tests/test_retrain_end_to_end.py), so each test controls
exactly what the snapshot holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from freshrec.forgets import MARK_SCRIPT, forgets_key
from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from freshrec.stack import free_port, wait_until
from models.als import ALSConfig
from models.interactions import InteractionLog
from models.synthetic import generate, generate_ratings
from models.version import load_version
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import train_and_publish
from retrain.retrain_cli import (
    EXIT_CONFIG,
    EXIT_FORGOTTEN,
    EXIT_LOCKED,
    EXIT_MOVED,
    EXIT_PUBLISHED,
    EXIT_REFUSED,
    EXIT_TRANSIENT,
)
from retrain.snapshot import read_changelog, states_from_log
from schemas.recs import encode_items, items_key
from schemas.state import Interaction, UserState, changelog_topic, encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
#: A model the size of the planted structure (8 clusters), quick to train; flags given
#: later on a command line win over these.
SMALL_MODEL = ("--threads", "1", "--factors", "8", "--iterations", "10", "--regularization", "1")


def partition_of(user: str) -> int:
    """A user's changelog partition (all of one user's records go to one partition)."""
    return zlib.crc32(user.encode()) % PARTITIONS


def write_changelog(settings: Settings, log: InteractionLog) -> dict[int, int]:
    """One record per user, as workers write them; returns the records per partition."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5})
    counts: dict[int, int] = {}
    for user, state in states_from_log(log, settings.history_length):
        partition = partition_of(user)
        producer.produce(
            changelog_topic(settings.app_id),
            key=user.encode(),
            value=encode(state),
            partition=partition,
        )
        counts[partition] = counts.get(partition, 0) + 1
    assert producer.flush(30) == 0
    return counts


@pytest.fixture
def job_settings(settings: Settings) -> Settings:
    from confluent_kafka.admin import NewTopic

    topic = changelog_topic(settings.app_id)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    return settings.replace(retrain_tune_budget_s=0.0, retrain_lock_ttl_s=2.0)


def start_retrain(
    settings: Settings, *args: str, stderr: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env |= settings.as_env() | {"COLUMNS": "160"}
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "retrain", *SMALL_MODEL, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def wait_for_stall(proc: subprocess.Popen[str], stage: str) -> None:
    """Read the job's standard error until it says it stalled at ``stage``."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # ends when the job exits; the pytest timeout bounds the rest
        seen.append(line)
        if f"stalled at {stage}" in line:
            return
    raise AssertionError(f"the job ended without stalling at {stage}:\n{''.join(seen)}")


def retrain(settings: Settings, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run the job to its end: exit code, JSON summary, standard error."""
    proc = start_retrain(settings, *args)
    out, err = proc.communicate(timeout=240)
    lines = out.strip().splitlines()
    assert lines, f"no summary line; stderr:\n{err}"
    return proc.returncode, json.loads(lines[-1]), err


def data() -> InteractionLog:
    return generate(n_users=400, n_items=96, n_interactions=12_000, factors=8, seed=11).log


def test_retrain_publishes_a_version_recording_the_snapshot_offsets(
    job_settings: Settings,
) -> None:
    counts = write_changelog(job_settings, data())
    code, summary, err = retrain(job_settings)
    assert code == EXIT_PUBLISHED, err
    store = ModelStore(job_settings.model_store)
    assert store.current() == summary["version"]
    version = load_version(store, summary["version"])
    assert version.snapshot["topic"] == changelog_topic(job_settings.app_id)
    assert version.snapshot["end_offsets"] == {str(p): n for p, n in counts.items()}
    assert version.snapshot["users"] == 400
    assert summary["baseline_kind"] == "popular" and summary["candidate"] > summary["baseline"]
    for key in ("snapshot_s", "tune_s", "train_s", "evaluate_s", "publish_s", "total_s"):
        assert summary[key] >= 0
    # partitions assigned, no consumer group: none joined (so nothing rebalanced or committed)
    admin = AdminClient({"bootstrap.servers": job_settings.bootstrap_servers})
    groups = [g.group_id for g in admin.list_consumer_groups().result(30).valid]
    assert not [g for g in groups if g.startswith("freshrec-retrain")]


def test_a_retrain_that_prunes_deletes_the_pruned_versions_item_tables(
    job_settings: Settings, redis_client: redis.Redis
) -> None:
    s = job_settings.replace(model_keep=1)
    store = ModelStore(s.model_store)
    old = train_and_publish(
        store,
        data(),
        ALSConfig(factors=4, iterations=2, num_threads=1, use_gpu=False),
        DEFAULT_WEIGHTING,
        popular_length=10,
        snapshot={"source": "test"},
        make_current=False,  # not current: the retrain's gate compares with popularity
    ).version.version_id
    redis_client.set(items_key(s.key_prefix, old), encode_items(["a"]))  # as a worker wrote it
    write_changelog(s, data())
    code, summary, err = retrain(s)
    assert code == EXIT_PUBLISHED, err
    assert summary["pruned"] == [old] and summary["item_tables_dropped"] == [old]
    assert not redis_client.exists(items_key(s.key_prefix, old))


def test_worse_candidates_are_refused_and_nothing_changes(job_settings: Settings) -> None:
    write_changelog(job_settings, data())
    code, first, err = retrain(job_settings)
    assert code == EXIT_PUBLISHED, err
    store = ModelStore(job_settings.model_store)

    # item factors shuffled against their ids (a test hook)
    code, summary, err = retrain(job_settings, "--debug-permute-items")
    assert code == EXIT_REFUSED, err
    assert f"{summary['candidate']:.4f}" in err and f"{summary['baseline']:.4f}" in err
    assert summary["baseline_version"] == first["version"]
    assert store.versions() == [first["version"]] and store.current() == first["version"]

    # a deliberately bad configuration
    code, summary, err = retrain(
        job_settings, "--factors", "2", "--iterations", "1", "--regularization", "5000"
    )
    assert code == EXIT_REFUSED, err
    assert "worse" in summary["message"] and summary["candidate"] < summary["baseline"]
    assert f"{summary['candidate']:.4f}" in err and f"{summary['baseline']:.4f}" in err
    assert store.versions() == [first["version"]] and store.current() == first["version"]

    # --force publishes what the gate refused, and says so
    code, summary, err = retrain(job_settings, "--force", "--debug-permute-items")
    assert code == EXIT_PUBLISHED, err
    assert summary["message"].endswith("published anyway (--force)")
    assert store.current() == summary["version"] != first["version"]


def test_two_retrains_at_once_one_runs_the_other_is_told_who_holds_the_lock(
    job_settings: Settings,
) -> None:
    write_changelog(job_settings, data())
    holder = start_retrain(job_settings, "--debug-stall-at", "trained")
    try:
        wait_for_stall(holder, "trained")
        code, summary, err = retrain(job_settings)
        assert code == EXIT_LOCKED
        assert summary["outcome"] == "locked" and f"pid {holder.pid}" in summary["holder"]
        assert "another retrain is running" in err
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)


def test_a_rollback_made_while_a_retrain_runs_is_not_undone(job_settings: Settings) -> None:
    """Issue 24: the retrain read the current version once at its start and moved the
    pointer without looking again, so it published over a rollback made meanwhile
    (exit 0, nothing said). It now refuses with its own exit code and names the mover;
    its candidate is saved, not current."""
    write_changelog(job_settings, data())
    code, first, err = retrain(job_settings)
    assert code == EXIT_PUBLISHED, err
    code, _, err = retrain(job_settings, "--force")
    assert code == EXIT_PUBLISHED, err
    store = ModelStore(job_settings.model_store)
    running = start_retrain(job_settings, "--force", "--debug-stall-at", "trained")
    try:
        wait_for_stall(running, "trained")
        store.set_current(first["version"], move="rollback", by="ops on call (test)")
        running.send_signal(signal.SIGUSR1)
        out, err = running.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.pid, signal.SIGKILL)
    summary = json.loads(out.strip().splitlines()[-1])
    assert running.returncode == EXIT_MOVED, err
    assert summary["outcome"] == "pointer moved" and summary["published"] is False
    assert summary["moved_by"] == "ops on call (test)"
    assert "rollback by ops on call (test)" in err and "is saved, not current" in err
    assert store.current() == first["version"]
    assert len(store.versions()) == 3  # the candidate is kept; a rollback can publish it


@pytest.mark.parametrize("stage", ["trained", "saved"])
def test_a_retrain_killed_while_publishing_leaves_a_whole_version_current(
    job_settings: Settings, stage: str, tmp_path: Path
) -> None:
    write_changelog(job_settings, data())
    code, first, err = retrain(job_settings)
    assert code == EXIT_PUBLISHED, err
    victim = start_retrain(job_settings, "--force", "--debug-stall-at", stage)
    wait_for_stall(victim, stage)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    store = ModelStore(job_settings.model_store)
    assert store.current() == first["version"]
    for version_id in store.versions():  # every listed version loads whole
        load_version(store, version_id)
    # the lock expires (FRESHREC_RETRAIN_LOCK_TTL_S=2) and the next run goes through
    wait_until(
        lambda: retrain(job_settings, "--force")[0] == EXIT_PUBLISHED,
        30,
        "a retrain after the kill",
    )
    assert store.current() != first["version"]


def test_forgotten_users_are_not_in_the_snapshot_nor_the_models_training_data(
    job_settings: Settings,
) -> None:
    log = data()
    write_changelog(job_settings, log)
    topic = changelog_topic(job_settings.app_id)
    producer = Producer({"bootstrap.servers": job_settings.bootstrap_servers})
    # user-1 watched an item nobody else did, then was forgotten (the worker's tombstone)
    secret = UserState([Interaction("secret-item", "watch", 600.0, 1200.0, int(log.ts.max()))])
    for value in (encode(secret), None):
        producer.produce(topic, key=b"user-1", value=value, partition=partition_of("user-1"))
    assert producer.flush(10) == 0
    snap = read_changelog(job_settings.bootstrap_servers, topic)
    assert "user-1" not in snap.log.users and "user-2" in snap.log.users
    assert snap.forgotten == 1 and len(snap.log.users) == 399
    assert "secret-item" not in snap.log.items

    code, summary, err = retrain(job_settings)
    assert code == EXIT_PUBLISHED, err
    version = load_version(ModelStore(job_settings.model_store), summary["version"])
    assert version.snapshot["forgotten_users"] == 1 and version.snapshot["users"] == 399
    assert "secret-item" not in version.item_ids
    assert "secret-item" not in version.popular_items


def test_progress_shows_on_a_terminal_only_and_the_summary_is_one_json_line(
    job_settings: Settings,
) -> None:
    write_changelog(job_settings, data())
    tuned = ("--tune-budget-s", "600", "--tune-trials", "3")
    # piped, as in a CronJob: no progress, and standard output is the summary alone
    proc = start_retrain(job_settings, *tuned)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_PUBLISHED, err
    summary = json.loads(out)
    assert len(out.splitlines()) == 1 and summary["outcome"] == "published"
    assert "reading snapshot" not in err and "tuning (" not in err and "\x1b[" not in err
    # the search ran, and its choice and validation score are in the version
    tuning = load_version(ModelStore(job_settings.model_store), summary["version"]).params["tuning"]
    assert tuning["max_trials"] == 3 and tuning["score"] == summary["tuned"]["score"]
    assert len(tuning["trials"]) == summary["tuned"]["trials"] == 3
    assert summary["tuned"]["base_score"] == tuning["trials"][0]["score"]
    chosen = {k: tuning["als"][k] for k in ("factors", "regularization", "alpha", "iterations")}

    # on a terminal: every stage, with its bar's count
    primary, secondary = pty.openpty()
    shown: list[bytes] = []

    def read_terminal() -> None:
        with contextlib.suppress(OSError):  # EIO once the job closed its end
            while chunk := os.read(primary, 65536):
                shown.append(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        proc = start_retrain(job_settings, *tuned, stderr=secondary)
        os.close(secondary)
        out, _ = proc.communicate(timeout=240)
        reader.join(30)
    finally:
        os.close(primary)
    screen = b"".join(shown).decode(errors="replace")
    assert proc.returncode in (EXIT_PUBLISHED, EXIT_REFUSED), screen
    assert len(out.splitlines()) == 1 and json.loads(out)["exit_code"] == proc.returncode
    # issue 25: the second search starts from the configuration the first one published
    start = json.loads(out)["tuned"]["start"]
    assert {k: start[k] for k in chosen} == chosen
    assert start["negative_below"] == tuning["weighting"]["negative_below"]
    for label in (
        "reading snapshot (records)",
        "tuning (trials)",
        "training (ALS iterations)",
        "evaluating (the gate)",
    ):
        assert label in screen, screen
    assert "400/400" in screen  # one changelog record per user read


def test_a_first_model_from_a_file_and_a_file_without_its_format(
    job_settings: Settings, tmp_path: Path
) -> None:
    """``--data FILE --format F`` trains a first model with no changelog read; ``--data``
    alone is a bad configuration, said in one line."""
    ratings = generate_ratings(n_users=300, n_items=200, n_ratings=9000, seed=5).log
    path = tmp_path / "u.data"
    path.write_text(
        "".join(
            f"{u + 1}\t{i + 1}\t{v:g}\t{ts // 1000}\n"  # ml-100k's numeric ids
            for u, i, v, ts in zip(
                ratings.user, ratings.item, ratings.value, ratings.ts, strict=True
            )
        )
    )
    defaults = ("--factors", "32", "--regularization", "30")  # rating data wants its λ
    code, summary, err = retrain(
        job_settings, "--data", str(path), "--format", "movielens100k", *defaults
    )
    assert code == EXIT_PUBLISHED, err
    version = load_version(ModelStore(job_settings.model_store), summary["version"])
    assert version.snapshot["format"] == "movielens100k" and "end_offsets" not in version.snapshot
    assert summary["baseline_kind"] == "popular" and summary["interactions"] == 9000

    code, summary, err = retrain(job_settings, "--data", str(path))
    assert code == EXIT_CONFIG and summary["outcome"] == "bad configuration"
    assert err == "freshrec retrain: --data needs --format (see `freshrec train --help`)\n"


@pytest.mark.parametrize("down", ["broker", "redis"])
def test_an_unreachable_broker_or_redis_is_a_transient_fault_said_in_one_line(
    job_settings: Settings, down: str
) -> None:
    """Exit 75 (run it again) within the connect timeouts, not after the snapshot's.

    Bug: the job waited FRESHREC_RETRAIN_SNAPSHOT_TIMEOUT_S (300 s) for a broker that
    was not there, where FRESHREC_BROKER_CONNECT_TIMEOUT_S says every command gives
    up on a silent broker after its first few seconds."""
    port = free_port()
    broken = job_settings.replace(
        broker_connect_timeout_s=1.0,
        retry_deadline_s=1.0,
        **(
            {"bootstrap_servers": f"127.0.0.1:{port}"}
            if down == "broker"
            else {"redis_url": f"redis://127.0.0.1:{port}/0"}
        ),
    )
    started = time.monotonic()
    code, summary, err = retrain(broken)
    assert code == EXIT_TRANSIENT and summary["outcome"] == "transient fault"
    assert time.monotonic() - started < 30
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("freshrec retrain: ") and str(port) in lines[0]


def test_a_bad_setting_is_a_bad_configuration_said_in_one_line(job_settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env |= job_settings.as_env() | {"FRESHREC_RETRAIN_TOLERANCE": "-1"}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "retrain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_CONFIG
    assert len(done.stderr.splitlines()) == 1 and "FRESHREC_RETRAIN_TOLERANCE" in done.stderr


def test_a_retrain_that_lost_its_lock_publishes_nothing(job_settings: Settings) -> None:
    """Issue 28, item 8: the lock's check was tested only on the lock class, and a job that
    published after losing its lock left every test green. Break that this catches:
    ``retrain/retrain_cli.py`` not passing ``before_publish=lock.ensure_held`` (or the job
    not calling it). The lock is taken over by another holder while the job is frozen
    after training; resumed, it must stop before the gate's publish, exit 75, and leave
    the current model as it was."""
    write_changelog(job_settings, data())
    code, first, err = retrain(job_settings)
    assert code == EXIT_PUBLISHED, err
    store = ModelStore(job_settings.model_store)
    versions = set(store.versions())
    victim = start_retrain(job_settings, "--force", "--debug-stall-at", "trained")
    try:
        wait_for_stall(victim, "trained")
        client = redis.Redis.from_url(job_settings.redis_url)
        key = f"{job_settings.key_prefix}retrain-lock"
        assert client.set(key, b"another retrain", xx=True)  # expired, taken by another job
        os.kill(victim.pid, signal.SIGUSR1)
        out, rest = victim.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
    assert store.current() == first["version"], "published after losing the lock"
    assert set(store.versions()) == versions
    assert victim.returncode == EXIT_TRANSIENT, rest
    assert "lock" in json.loads(out.strip().splitlines()[-1])["message"]


@pytest.mark.parametrize("stage", ["trained", "saved"])
def test_a_retrain_whose_snapshot_was_read_before_a_forget_does_not_publish(
    job_settings: Settings, stage: str
) -> None:
    """Issue 28, item 5: a retrain started before a user was forgotten and publishing after
    would serve a model trained on that user's data. Its snapshot's read time (Redis's
    clock) is before the newest forget, so it exits 6 and the pointer stays; frozen after
    training, nothing is saved; frozen after the save (the forget lands between the save
    and the move), the candidate is saved, not current. The next run reads a snapshot
    that holds the forget and publishes."""
    write_changelog(job_settings, data())
    code, first, err = retrain(job_settings)
    assert code == EXIT_PUBLISHED, err
    assert first["snapshot"]["read_at_ms"] > 0
    store = ModelStore(job_settings.model_store)
    versions = set(store.versions())
    running = start_retrain(job_settings, "--force", "--debug-stall-at", stage)
    try:
        wait_for_stall(running, stage)
        client = redis.Redis.from_url(job_settings.redis_url)
        # what the worker's Redis write does in the batch that forgets a user
        client.eval(MARK_SCRIPT, 1, forgets_key(job_settings.key_prefix), "mark")
        os.kill(running.pid, signal.SIGUSR1)
        out, rest = running.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.pid, signal.SIGKILL)
    summary = json.loads(out.strip().splitlines()[-1])
    assert running.returncode == EXIT_FORGOTTEN, rest
    assert summary["outcome"] == "user forgotten" and summary["published"] is False
    assert "before a user was forgotten" in rest and "run the retrain again" in rest
    assert store.current() == first["version"]
    added = set(store.versions()) - versions
    assert len(added) == (0 if stage == "trained" else 1)
    code, again, err = retrain(job_settings, "--force")
    assert code == EXIT_PUBLISHED, err
    assert store.current() == again["version"] != first["version"]

"""MovieLens loaders and the event-file loader, on tiny files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freshrec.errors import BadInputError
from models.interactions import KIND_RATE, KIND_WATCH, InteractionLog
from retrain import eventlog, movielens

ROWS = [(196, 242, 3, 881250949), (186, 302, 3.5, 891717742), (196, 377, 1, 878887116)]


def _check(log: InteractionLog) -> None:
    assert len(log) == 3
    assert log.users.ids == ["196", "186"]
    assert log.items.ids == ["242", "302", "377"]
    assert log.user.tolist() == [0, 1, 0]
    assert log.value.tolist() == [3.0, 3.5, 1.0]
    assert log.ts.tolist() == [881250949000, 891717742000, 878887116000]
    assert (log.kind == KIND_RATE).all() and np.isnan(log.duration_s).all()


def test_ml100k(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in ROWS))
    _check(movielens.load(path, "movielens100k"))


def test_ml1m(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in ROWS))
    _check(movielens.load(path, "movielens1m"))


def test_ml_latest(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in ROWS)
    )
    _check(movielens.load(path, "movielens-latest"))


def test_bad_movielens_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read"):
        movielens.load(tmp_path / "missing", "movielens100k")
    bad = tmp_path / "bad.data"
    bad.write_text("1\t2\tthree\t4\n")
    with pytest.raises(BadInputError, match="not a movielens100k ratings file"):
        movielens.load(bad, "movielens100k")
    bad.write_text("1\t2\t9\t4\n")
    with pytest.raises(BadInputError, match=r"outside 0\.5\.\.5"):
        movielens.load(bad, "movielens100k")
    bad.write_text("")
    with pytest.raises(BadInputError):
        movielens.load(bad, "movielens100k")
    with pytest.raises(BadInputError, match="unknown MovieLens format"):
        movielens.load(bad, "netflix")


def test_event_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        '{"type":"watch","event_id":"e1","user_id":"u1","item_id":"m1","watched_s":900,'
        '"duration_s":1800,"ts":1763870000000}',
        '{"type":"rate","event_id":"e2","user_id":"u2","item_id":"m2","rating":4.5,"ts":1763870000001}',
        '{"type":"rate","event_id":"e2","user_id":"u2","item_id":"m2","rating":1,"ts":1763870000002}',
        '{"type":"rate","event_id":"e3","user_id":"u3","item_id":"m1","rating":7,"ts":1763870000003}',
        "not json",
        "",
        '{"type":"watch","event_id":"e4","user_id":"u3","item_id":"m3","watched_s":5,"ts":1763870000004}',
        '{"type":"forget","event_id":"e5","user_id":"u3","ts":1763870000005}',
        '{"type":"watch","event_id":"e6","user_id":"u3","item_id":"m2","watched_s":60,"ts":1763870000006}',
    ]
    path.write_text("\n".join(lines) + "\n")
    read = eventlog.load(path)
    assert (read.lines, read.rejected, read.duplicates, read.forgotten) == (8, 2, 1, 1)
    assert read.reasons[0].startswith("line 4: rating")
    assert read.reasons[1].startswith("line 5: payload")
    log = read.log
    assert [log.users.ids[u] for u in log.user] == ["u1", "u2", "u3"]
    assert [log.items.ids[i] for i in log.item] == ["m1", "m2", "m2"]
    assert log.kind.tolist() == [KIND_WATCH, KIND_RATE, KIND_WATCH]
    assert log.value.tolist() == [900.0, 4.5, 60.0]
    assert log.duration_s[0] == 1800 and np.isnan(log.duration_s[1:]).all()
    assert len(read.sha256) == 64


def test_event_file_with_nothing_valid(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{}\n")
    with pytest.raises(BadInputError, match="no valid watch or rate event"):
        eventlog.load(path)


def test_example_events_load() -> None:
    read = eventlog.load(Path(__file__).parents[2] / "examples" / "events.jsonl")
    assert len(read.log) > 0


def test_event_file_honours_a_forget_for_events_after_it_with_older_ts(tmp_path: Path) -> None:
    """Issue 10, item 3: the snapshot, like the worker, drops a forgotten user's events at or
    before the forget's ts wherever they stand in the file; newer ones are a new history."""
    path = tmp_path / "events.jsonl"
    lines = [
        '{"type":"watch","event_id":"e1","user_id":"u1","item_id":"m1","watched_s":9,"ts":1763870000001}',
        '{"type":"forget","event_id":"f1","user_id":"u1","ts":1763870000005}',
        '{"type":"watch","event_id":"e2","user_id":"u1","item_id":"m2","watched_s":9,"ts":1763870000004}',
        '{"type":"watch","event_id":"e3","user_id":"u1","item_id":"m3","watched_s":9,"ts":1763870000009}',
    ]
    path.write_text("\n".join(lines) + "\n")
    read = eventlog.load(path)
    assert read.forgotten == 2
    assert [read.log.items.ids[i] for i in read.log.item] == ["m3"]

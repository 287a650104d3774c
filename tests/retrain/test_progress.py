"""Progress of the retrain: bars on a terminal, nothing anywhere else (issue 9, item 9)."""

from __future__ import annotations

import io
import itertools
import logging

import pytest

from models.als import ALSConfig, train
from models.synthetic import generate_ratings
from models.tuning import SearchSpace, tune
from models.weighting import confidence_matrix
from retrain.progress import StageProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _show(stream: io.StringIO) -> None:
    with StageProgress(stream) as bar:
        bar.stage("reading snapshot (records)")
        bar.advance(40, 100)
        bar.stage("training (ALS iterations)")
        bar.advance(3, 15)


def test_nothing_is_printed_when_not_a_terminal() -> None:
    stream = io.StringIO()
    _show(stream)
    assert stream.getvalue() == ""


def test_a_terminal_shows_each_stage_with_its_count() -> None:
    stream = _Terminal()
    _show(stream)
    shown = stream.getvalue()
    assert "reading snapshot (records)" in shown and "training (ALS iterations)" in shown
    # a stage left is shown complete, the last one too
    assert "100/100" in shown and "15/15" in shown


def test_training_and_tuning_report_how_far_they_are() -> None:
    log = generate_ratings(60, 80, 1500, seed=3).log
    iterations: list[tuple[float, float]] = []
    train(
        confidence_matrix(log),
        ALSConfig(factors=4, iterations=4, num_threads=1),
        lambda done, total: iterations.append((done, total)),
    )
    assert iterations == [(1, 4), (2, 4), (3, 4), (4, 4)]

    trials: list[tuple[float, float]] = []
    result = tune(
        log,
        ALSConfig(factors=4, iterations=2, num_threads=1),
        budget_s=1e6,
        max_trials=3,
        space=SearchSpace(factors=(4, 8), iterations=(2, 3)),
        progress=lambda done, total: trials.append((done, total)),
    )
    # issue 25: trials, not seconds, bound the search, so they are what progress counts
    assert trials == [(1, 3), (2, 3), (3, 3)] and len(result.trials) == 3


def test_the_search_is_one_bar_with_the_best_score_and_trials_go_to_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 26, item 7: one INFO line per tuning trial (44 in the demo) and per fit, mixed
    into the progress bars. The search is one line that names the trials run and the best
    score so far; each trial is logged at DEBUG."""
    log = generate_ratings(60, 80, 1500, seed=3).log
    best: list[tuple[int, float]] = []
    stream = _Terminal()
    space = SearchSpace(factors=(4, 8), iterations=(2, 3))
    base = ALSConfig(factors=4, iterations=2, num_threads=1)
    caplog.set_level(logging.INFO)  # as the command sets it: FRESHREC_LOG_LEVEL=INFO

    def on_trial(bar: StageProgress, n: int, score: float) -> None:
        best.append((n, score))
        bar.describe(f"tuning: {n} trials, best {score:.4f}")

    with StageProgress(stream) as bar:
        bar.stage("tuning")
        result = tune(
            log,
            base,
            budget_s=1e6,
            max_trials=4,
            space=space,
            progress=bar.advance,
            on_trial=lambda n, score: on_trial(bar, n, score),
        )
    assert [n for n, _ in best] == [1, 2, 3, 4]
    assert [s for _, s in best] == list(itertools.accumulate((t.score for t in result.trials), max))
    shown = stream.getvalue()
    assert f"tuning: 4 trials, best {result.score:.4f}" in shown
    assert "tune trial" not in shown and "trained ALS" not in shown, shown
    caplog.set_level(logging.DEBUG)
    tune(log, base, budget_s=1e6, max_trials=2, space=space)
    assert sum("tune trial" in r.getMessage() for r in caplog.records) == 2
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "tune trial" in r.getMessage())

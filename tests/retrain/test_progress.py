"""Progress of the retrain: bars on a terminal, nothing anywhere else (issue 9, item 9)."""

from __future__ import annotations

import io

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

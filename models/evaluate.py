"""Offline evaluation: split, train, rank for held-out users, score; and the ``--tune`` search.

The protocol is Microsoft Recommenders' MovieLens benchmark, so our figures can
stand beside theirs: a stratified split (by item, ratio 0.75, seed 42 by
default), a model trained on the training part, every training user's top-k
with their training items removed, and the metrics of :mod:`models.metrics`
against the test part. The popular fallback is scored on the same split,
as the baseline a model has to beat.

Tuning never looks at the test part: :func:`tune` carves a validation split
out of the training data and picks the configuration that ranks best there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp

from models.als import ALSConfig, ALSFactors, train
from models.interactions import InteractionLog
from models.metrics import ranking_metrics
from models.popular import popularity
from models.split import last_n_split, stratified_split
from models.topk import top_k
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig, confidence_matrix

log = logging.getLogger(__name__)

SplitKind = Literal["stratified-item", "stratified-user", "last-n"]
SPLITS: tuple[SplitKind, ...] = ("stratified-item", "stratified-user", "last-n")

#: Values tried for each hyperparameter by :func:`tune`, one parameter at a time.
TUNE_GRID: dict[str, tuple[float, ...]] = {
    "alpha": (0.5, 1.0, 2.0, 5.0, 10.0),
    "regularization": (0.01, 0.05, 0.2, 1.0),
    "factors": (32, 64, 128),
}


def split_log(
    log_: InteractionLog,
    how: SplitKind = "stratified-item",
    ratio: float = 0.75,
    seed: int = 42,
    last_n: int = 1,
) -> tuple[InteractionLog, InteractionLog]:
    """``(train, test)`` logs sharing the id maps of ``log_``."""
    if how == "stratified-item":
        train_rows, test_rows = stratified_split(log_.item, ratio, seed)
    elif how == "stratified-user":
        train_rows, test_rows = stratified_split(log_.user, ratio, seed)
    elif how == "last-n":
        train_rows, test_rows = last_n_split(log_.user, log_.ts, last_n)
    else:
        raise ValueError(f"unknown split {how!r}; expected one of {', '.join(SPLITS)}")
    return log_.take(train_rows), log_.take(test_rows)


def seen_matrix(log_: InteractionLog) -> sp.csr_matrix:
    """Users x items, 1 where the user has any event on the item (what to exclude)."""
    shape = (len(log_.users), len(log_.items))
    m = sp.csr_matrix((np.ones(len(log_), np.float32), (log_.user, log_.item)), shape=shape)
    m.data[:] = 1.0
    return m


def _relevant(test: InteractionLog) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in zip(test.user.tolist(), test.item.tolist(), strict=True):
        out.setdefault(u, set()).add(i)
    return out


def _ranked(users: np.ndarray, top: np.ndarray) -> dict[int, list[int]]:
    return {int(u): [int(i) for i in row if i >= 0] for u, row in zip(users, top, strict=True)}


@dataclass(frozen=True)
class Evaluation:
    """Metrics of the model and of the popular baseline on one split."""

    metrics: dict[str, float]
    popular_metrics: dict[str, float]
    users: int  # users ranked (every user with training events)
    train_seconds: float
    model: ALSFactors


def evaluate(
    train_log: InteractionLog,
    test_log: InteractionLog,
    cfg: ALSConfig,
    k: int = 10,
    weighting: WeightingConfig = DEFAULT_WEIGHTING,
) -> Evaluation:
    """Train on ``train_log`` and score the top-``k`` lists against ``test_log``."""
    started = time.perf_counter()
    model = train(confidence_matrix(train_log, weighting), cfg)
    train_seconds = time.perf_counter() - started
    seen = seen_matrix(train_log)
    users = np.flatnonzero(np.diff(seen.indptr) > 0)
    train_items = set(np.unique(train_log.item).tolist())
    relevant = _relevant(test_log)
    threads = cfg.num_threads
    top, _ = top_k(model.user_factors[users], model.item_factors, k, seen[users], threads)
    pop = popularity(train_log, weighting).astype(np.float32)[:, None]
    pop_top, _ = top_k(np.ones((users.size, 1), np.float32), pop, k, seen[users], threads)
    return Evaluation(
        ranking_metrics(_ranked(users, top), relevant, train_items, k),
        ranking_metrics(_ranked(users, pop_top), relevant, train_items, k),
        int(users.size),
        train_seconds,
        model,
    )


@dataclass(frozen=True)
class Trial:
    config: ALSConfig
    score: float  # validation nDCG@k


def tune(
    train_log: InteractionLog,
    base: ALSConfig,
    k: int = 10,
    weighting: WeightingConfig = DEFAULT_WEIGHTING,
    how: SplitKind = "stratified-item",
    ratio: float = 0.75,
    seed: int = 42,
    grid: dict[str, Sequence[float]] | None = None,
) -> tuple[ALSConfig, list[Trial]]:
    """The best config by validation nDCG@k, searching one parameter at a time.

    The validation split is carved from ``train_log`` alone (with ``seed + 1``,
    so it differs from the outer split), which keeps the test part unseen.
    Coordinate search, in the order of ``grid``: try each value of a parameter
    with the others at their best so far, keep the winner, move on. It costs
    the sum, not the product, of the grid sizes in fits.
    """
    fit_log, val_log = split_log(train_log, how, ratio, seed + 1)
    trials: list[Trial] = []
    scores: dict[ALSConfig, float] = {}
    best = base
    for name, values in (grid or TUNE_GRID).items():
        for value in values:
            cand = replace(best, **{name: type(getattr(base, name))(value)})
            if cand not in scores:
                ev = evaluate(fit_log, val_log, cand, k, weighting)
                scores[cand] = ev.metrics[f"ndcg@{k}"]
                trials.append(Trial(cand, scores[cand]))
                log.info("tune %s: ndcg@%d %.4f", cand, k, scores[cand])
        best = max(scores, key=lambda c: scores[c])
    return best, trials

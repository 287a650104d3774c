"""Offline evaluation: split, train, rank for held-out users, score.

The protocol is Microsoft Recommenders' MovieLens benchmark, so our figures can
stand beside theirs: a stratified split (by item, ratio 0.75, seed 42 by
default), a model trained on the training part, every training user's top-k
with their training items removed, and the metrics of :mod:`models.metrics`
against the test part. The popular fallback is scored on the same split,
as the baseline a model has to beat.

The search over configurations is :mod:`models.tuning`; it scores with
:class:`Holdout` on a validation split carved from the training part only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from models.als import ALSConfig, ALSFactors, train
from models.interactions import InteractionLog
from models.metrics import ndcg_at_k, ranking_metrics
from models.popular import popularity
from models.split import last_n_split, stratified_split
from models.topk import top_k
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig, confidence_matrix

SplitKind = Literal["stratified-item", "stratified-user", "last-n"]
SPLITS: tuple[SplitKind, ...] = ("stratified-item", "stratified-user", "last-n")


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


def _ranked(users: np.ndarray, top: np.ndarray) -> dict[int, list[int]]:
    return {int(u): [int(i) for i in row if i >= 0] for u, row in zip(users, top, strict=True)}


@dataclass(frozen=True)
class Holdout:
    """One ``(train, test)`` pair, prepared once to score many models against it.

    Tuning scores dozens of fits on the same validation split, so what does not
    depend on the model (who is ranked, what they saw, what is relevant) is
    computed here once.
    """

    seen: sp.csr_matrix  # users x items, what each user's list must leave out
    users: np.ndarray  # users ranked: every user with training events
    relevant: dict[int, set[int]]  # user -> test items (every test row relevant)
    train_items: set[int]  # the catalogue coverage is measured against

    @classmethod
    def of(cls, train_log: InteractionLog, test_log: InteractionLog) -> Holdout:
        seen = seen_matrix(train_log)
        relevant: dict[int, set[int]] = {}
        for u, i in zip(test_log.user.tolist(), test_log.item.tolist(), strict=True):
            relevant.setdefault(u, set()).add(i)
        return cls(
            seen,
            np.flatnonzero(np.diff(seen.indptr) > 0),
            relevant,
            set(np.unique(train_log.item).tolist()),
        )

    def sample(self, n: int, seed: int) -> Holdout:
        """The hold-out scored on at most ``n`` of the users it ranks that have test rows, a
        seeded sample.

        Users without test rows count in no metric but coverage, so the
        hold-out's nDCG is unchanged by leaving them out; ranking every user was
        half a tuning trial's time on a watch log of 30,000 users
        (``loadtests/bench_tuning.py``), and nDCG over a few thousand users
        ranks configurations as the whole does.
        """
        relevant = np.array(sorted(self.relevant), dtype=np.int64)
        judged = np.intersect1d(self.users, relevant)  # ranked (training rows) and judged
        if judged.size > n:
            rng = np.random.default_rng(seed)
            judged = np.sort(rng.choice(judged, size=n, replace=False))
        kept = set(judged.tolist())
        return Holdout(
            self.seen,
            judged,
            {u: items for u, items in self.relevant.items() if u in kept},
            self.train_items,
        )

    def score(
        self, user_factors: np.ndarray, item_factors: np.ndarray, k: int, threads: int = 1
    ) -> dict[str, float]:
        """The metrics of the top-``k`` lists ``user_factors · item_factorsᵀ`` (seen items out)."""
        seen = self.seen[self.users]
        top, _ = top_k(user_factors[self.users], item_factors, k, seen, threads)
        return ranking_metrics(_ranked(self.users, top), self.relevant, self.train_items, k)

    def ndcg(
        self, user_factors: np.ndarray, item_factors: np.ndarray, k: int, threads: int = 1
    ) -> float:
        """:meth:`score`'s ``ndcg@k`` alone: what tuning ranks configurations by. The other
        metrics (Python loops over every user) were half of a tuning trial's scoring."""
        seen = self.seen[self.users]
        top, _ = top_k(user_factors[self.users], item_factors, k, seen, threads)
        return ndcg_at_k(_ranked(self.users, top), self.relevant, k)


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
    holdout = Holdout.of(train_log, test_log)
    pop = popularity(train_log, weighting).astype(np.float32)[:, None]
    return Evaluation(
        holdout.score(model.user_factors, model.item_factors, k, cfg.num_threads),
        holdout.score(np.ones((len(train_log.users), 1), np.float32), pop, k, cfg.num_threads),
        int(holdout.users.size),
        train_seconds,
        model,
    )

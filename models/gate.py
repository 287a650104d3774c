"""The publish gate: a candidate model against the current one, on the same hold-out.

A retrain publishes a new version only when it ranks at least about as well as
what the site serves now. Both are scored the way the worker serves them: each
held-out user's training history is combined with the model's own weighting
rule, folded into the model's item factors (:class:`~models.recommender.Recommender`,
the worker's code), seen items are masked, and the top ``k`` is compared with
the user's newest items (:func:`models.split.newest_items_split`). Scoring the
candidate by its trained user factors instead would flatter it: the current
model has no factors for users it never saw, and the worker never uses them.

With no current version the candidate must beat the popular fallback on the
same split, so the very first model is not worse than having none.

Pure: no store, no I/O; the retrain job (:mod:`retrain.job`) feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.interactions import InteractionLog
from models.metrics import ranking_metrics
from models.popular import popularity, top_popular
from models.recommender import Recommender
from models.split import newest_items_split
from models.weighting import WeightingConfig, combined_confidences


@dataclass(frozen=True)
class RecentHoldout:
    """A chronological hold-out: train on ``train``, score ``users`` against ``test``."""

    train: InteractionLog
    test: InteractionLog
    users: np.ndarray
    """Indices (in ``train.users``) of the users scored: those with test items."""

    @classmethod
    def split(
        cls,
        log: InteractionLog,
        n_users: int,
        fraction: float,
        seed: int = 42,
        after_ts: int | None = None,
    ) -> RecentHoldout:
        """Hold out the newest ``fraction`` of items of up to ``n_users`` sampled users,
        only items newer than ``after_ts`` when given (:func:`newest_items_split`)."""
        train_rows, test_rows = newest_items_split(
            log.user, log.item, log.ts, n_users, fraction, seed, after_ts
        )
        test = log.take(test_rows)
        return cls(log.take(train_rows), test, np.unique(test.user))

    def histories(self, weighting: WeightingConfig) -> list[dict[str, float]]:
        """Each scored user's training history as ``item_id -> confidence`` under ``weighting``."""
        mine = np.isin(self.train.user, self.users)
        user, item, conf = combined_confidences(self.train.take(np.flatnonzero(mine)), weighting)
        names = self.train.items.ids
        out: dict[int, dict[str, float]] = {int(u): {} for u in self.users}
        for u, i, c in zip(user.tolist(), item.tolist(), conf.tolist(), strict=True):
            out[u][names[i]] = c
        return [out[int(u)] for u in self.users]

    def seen(self) -> list[set[str]]:
        """Each scored user's training items (any event), what a ranking must leave out."""
        mine = np.flatnonzero(np.isin(self.train.user, self.users))
        names = self.train.items.ids
        out: dict[int, set[str]] = {int(u): set() for u in self.users}
        for u, i in zip(
            self.train.user[mine].tolist(), self.train.item[mine].tolist(), strict=True
        ):
            out[u].add(names[i])
        return [out[int(u)] for u in self.users]

    def relevant(self) -> dict[int, set[str]]:
        """Each scored user's held-out items: every one is relevant (Microsoft Recommenders)."""
        names = self.test.items.ids
        out: dict[int, set[str]] = {}
        for u, i in zip(self.test.user.tolist(), self.test.item.tolist(), strict=True):
            out.setdefault(u, set()).add(names[i])
        return out

    def train_items(self) -> set[str]:
        names = self.train.items.ids
        return {names[i] for i in np.unique(self.train.item).tolist()}


def served_metrics(
    recommender: Recommender, holdout: RecentHoldout, k: int = 10
) -> dict[str, float]:
    """Ranking metrics of ``recommender`` on ``holdout``, as the worker would serve its lists."""
    histories = holdout.histories(recommender.weighting)
    seen = holdout.seen()
    # the ranking masks the history's items; items with a zero confidence (skims)
    # are not in it, so rank that many more and drop them here
    extra = max((len(s.difference(h)) for s, h in zip(seen, histories, strict=True)), default=0)
    recs = recommender.recommend(histories, k + extra, explain=False)
    ranked = {
        int(u): [i for i in items if i not in s][:k]
        for u, items, s in zip(holdout.users, recs.items, seen, strict=True)
    }
    return ranking_metrics(ranked, holdout.relevant(), holdout.train_items(), k)


def popular_metrics(
    holdout: RecentHoldout, weighting: WeightingConfig, k: int = 10
) -> dict[str, float]:
    """Ranking metrics of the popular fallback built from ``holdout.train``."""
    order, _ = top_popular(popularity(holdout.train, weighting))
    names = [holdout.train.items.ids[i] for i in order.tolist()]
    ranked = {}
    for u, seen in zip(holdout.users, holdout.seen(), strict=True):
        picked: list[str] = []
        for name in names:
            if name not in seen:
                picked.append(name)
                if len(picked) == k:
                    break
        ranked[int(u)] = picked
    return ranking_metrics(ranked, holdout.relevant(), holdout.train_items(), k)


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate may be published, and the two figures it was decided on."""

    publish: bool
    metric: str
    candidate: float
    baseline: float
    baseline_kind: Literal["current", "popular"]
    baseline_version: str | None
    tolerance: float
    forced: bool = False

    def reason(self) -> str:
        """One sentence with both figures, for people and logs."""
        against = (
            f"current model {self.baseline_version}"
            if self.baseline_kind == "current"
            else "the popular fallback (no current model)"
        )
        figures = (
            f"candidate {self.metric} {self.candidate:.4f} against {against} {self.baseline:.4f}"
        )
        if self.forced:
            return f"{figures}; published anyway (--force)"
        if self.publish:
            return f"{figures}: good enough to publish"
        if self.baseline_kind == "popular":
            return f"{figures}: a first model must beat the popular fallback"
        return (
            f"{figures}: worse by more than the tolerance of {self.tolerance:.1%} "
            "(FRESHREC_RETRAIN_TOLERANCE)"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "publish": self.publish,
            "metric": self.metric,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "baseline_kind": self.baseline_kind,
            "baseline_version": self.baseline_version,
            "tolerance": self.tolerance,
            "forced": self.forced,
        }


def decide(
    metric: str,
    candidate: float,
    baseline: float,
    baseline_version: str | None,
    tolerance: float,
    force: bool = False,
) -> GateDecision:
    """The gate's rule (see the module doc); ``baseline_version`` None means "popular".

    The tolerance is relative: a candidate passes at ``candidate >= baseline *
    (1 - tolerance)``, so that retraining on a little more data, whose figure
    moves by noise, does not block every publish.
    """
    if baseline_version is None:
        ok = candidate > baseline
        kind: Literal["current", "popular"] = "popular"
    else:
        ok = candidate >= baseline * (1.0 - tolerance)
        kind = "current"
    return GateDecision(
        ok or force,
        metric,
        candidate,
        baseline,
        kind,
        baseline_version,
        tolerance,
        forced=force and not ok,
    )

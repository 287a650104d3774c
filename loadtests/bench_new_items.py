"""Quality of item fold-in: items introduced only through the stream, against the same
items trained into the model (issue 23).

On synthetic data with planted clusters, a set of items is held back. For
each, its first ``k`` users (by time) introduce it; its later users are the
test: is the item in their top-``n`` list?

- **folded in**: a model trained without the held-back items; each one's
  vector is the item fold-in (:mod:`models.item_foldin`) of its ``k``
  introducers' folded-in vectors, exactly what the item agent computes from
  their contributions, and lists rank the model's items plus these;
- **trained in**: a model trained on the same data with the introducers'
  interactions with the held-back items in it (the same information, learnt
  by ALS instead of folded in).

Every user's vector is the fold-in of their history, as the worker computes
it. The ratio of the two hit rates is the figure; the same run with several
``k`` is how ``FRESHREC_NEW_ITEM_MIN_USERS``'s default was chosen
(docs/worker.md, "New items").

    .venv/bin/python loadtests/bench_new_items.py [--k 1 2 3 5 10]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np

from models.als import ALSConfig, train
from models.ids import IdMap
from models.interactions import InteractionLog
from models.item_foldin import ItemStats, item_vectors, user_gram
from models.recommender import Recommender
from models.synthetic import generate
from models.weighting import DEFAULT_WEIGHTING, Interaction, confidence_matrix, user_confidences

CONFIG = ALSConfig(factors=8, iterations=12, num_threads=1, seed=42, use_gpu=False)


@dataclass(frozen=True)
class Quality:
    k: int
    folded_hit_rate: float
    trained_hit_rate: float
    folded_precision: float
    """Of the lists a held-back item entered, the share that are its test users'."""
    trained_precision: float
    test_pairs: int

    @property
    def ratio(self) -> float:
        return self.folded_hit_rate / self.trained_hit_rate if self.trained_hit_rate else 0.0


def _model(log: InteractionLog, keep: np.ndarray, version: str) -> tuple[Recommender, np.ndarray]:
    """A model trained on ``log``, knowing the items of ``keep`` (indices) only."""
    fitted = train(confidence_matrix(log, DEFAULT_WEIGHTING), CONFIG)
    ids = [log.items.ids[i] for i in keep.tolist()]
    model = Recommender(
        version,
        IdMap(ids),
        np.asarray(fitted.item_factors)[keep],
        CONFIG.regularization,
        CONFIG.alpha,
        weighting=DEFAULT_WEIGHTING,
        user_gram=user_gram(fitted.user_factors, CONFIG.regularization),
    )
    return model, keep


def quality(
    k: int, n: int = 20, seed: int = 0, users: int = 1500, interactions: int = 60_000
) -> Quality:
    """Hit rates of the held-back items, folded in from ``k`` introducers and trained in."""
    data = generate(n_users=users, n_items=160, n_interactions=interactions, factors=8, seed=seed)
    log = data.log
    n_items = len(log.items)
    # items 2nd and 3rd by popularity in each cluster (item = cluster + rank * 8)
    held = np.array([c + r * 8 for c in range(8) for r in (1, 2)])
    is_held = np.isin(log.item, held)
    introducer = np.zeros(len(log), dtype=bool)
    tests: list[tuple[int, int]] = []
    for item in held.tolist():
        rows = np.flatnonzero(log.item == item)  # in time order
        _, first = np.unique(log.user[rows], return_index=True)
        order = rows[np.sort(first)]
        intro_users = set(log.user[order[:k]].tolist())
        introducer[rows[np.isin(log.user[rows], list(intro_users))]] = True
        tests += [(int(u), item) for u in log.user[order[k:]].tolist()]
    test_rows = is_held & ~introducer
    trained, _ = _model(log.take(~test_rows), np.arange(n_items), "trained")
    keep = np.setdiff1d(np.arange(n_items), held)
    folded, _ = _model(log.take(~is_held), keep, "folded")

    test_set = set(tests)
    index = {name: j for j, name in enumerate(log.items.ids)}
    cache: dict[int, list[Interaction]] = {}

    def history(u: int) -> list[Interaction]:
        """The user's history as the worker holds it: everything but their test pairs."""
        if u not in cache:
            cache[u] = [
                row
                for row in log.history(log.users.ids[u])
                if (u, index[row.item_id]) not in test_set
            ]
        return cache[u]

    # the held-back items' vectors: the introducers' contributions, folded in
    stats = {i: ItemStats.empty(CONFIG.factors) for i in held.tolist()}
    intro_pairs = {
        (int(u), int(i)) for u, i in zip(log.user[introducer], log.item[introducer], strict=True)
    }
    for u, i in sorted(intro_pairs):
        conf = user_confidences(history(u), DEFAULT_WEIGHTING)
        c = conf.get(log.items.ids[i], 0.0)
        one, _ = folded.encode([conf])
        if c == 0 or not (one.confidences > 0).any():
            continue
        stats[i].add(folded.foldin.user_vectors(one)[0], CONFIG.alpha * c)
    assert folded.user_gram is not None
    interim = item_vectors(folded.user_gram, [stats[i] for i in held.tolist()])

    everyone = list(range(len(log.users)))
    all_confs = [user_confidences(history(u), DEFAULT_WEIGHTING) for u in everyone]
    held_names = [log.items.ids[i] for i in held.tolist()]

    def rates(model: Recommender, extra: np.ndarray, extra_ids: list[str]) -> tuple[float, float]:
        """The hit rate over the test pairs, and the precision of the held-back items'
        exposures (the share of the lists holding one that are its test users')."""
        names = list(model.item_ids.ids) + extra_ids
        place = {name: j for j, name in enumerate(names)}
        rows, _ = model.encode(all_confs)
        scores = model.foldin.user_vectors(rows) @ np.vstack([model.foldin.item_factors, extra]).T
        for u, conf in enumerate(all_confs):
            seen = [place[i] for i in conf if i in place]
            scores[u, seen] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :n]
        held_cols = {place[name]: index[name] for name in held_names}
        exposures = [(u, held_cols[j]) for u in everyone for j in top[u].tolist() if j in held_cols]
        hits = sum(pair in test_set for pair in exposures)
        return hits / len(tests), hits / max(1, len(exposures))

    folded_hit, folded_precision = rates(folded, interim, held_names)
    trained_hit, trained_precision = rates(
        trained, np.zeros((0, CONFIG.factors), dtype=np.float32), []
    )
    return Quality(k, folded_hit, trained_hit, folded_precision, trained_precision, len(tests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20, 50])
    args = parser.parse_args()
    for k in args.k:
        q = quality(k)
        print(
            json.dumps(
                {
                    "bench": "new_items_quality",
                    "min_users": k,
                    "folded_hit_rate": round(q.folded_hit_rate, 4),
                    "trained_hit_rate": round(q.trained_hit_rate, 4),
                    "new_item_quality_ratio": round(q.ratio, 3),
                    "folded_precision": round(q.folded_precision, 3),
                    "trained_precision": round(q.trained_precision, 3),
                    "test_pairs": q.test_pairs,
                }
            )
        )


if __name__ == "__main__":
    main()

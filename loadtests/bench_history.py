"""How long a history should the worker fold in? Quality against cost, per history cap.

The worker keeps each user's newest ``FRESHREC_HISTORY_LENGTH`` interactions
and folds them into the model; the whole record is rewritten to the changelog
on every event of the user. A longer cap ranks heavy users better and costs
more per event (the fold-in solve, the record's encode and decode) and more
bytes per changelog write. Items past the cap stay masked either way (the
record's seen items), so the cap only changes what the fold-in learns from.

On the long-history synthetic rating log (:func:`models.synthetic.long_history_ratings`:
histories shaped like MovieLens 1M's, where 43% of users pass 100 ratings and the
heaviest 2,000; Microsoft Recommenders' split), for each cap: nDCG@10 of every user folded in
from their newest ``cap`` training interactions, against the same users'
trained factors (the baseline, same model, same run); the record's size; and
the worker's own cost per user touched (decode + fold-in and top-k + encode).

Last line: ``{"bench": "history", "caps", "ndcg_ratio", "record_bytes",
"us_per_user", "heavy_users_share", "trained_ndcg"}``.

Run: ``python loadtests/bench_history.py`` (a few minutes; ``--users`` scales it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.als import ALSConfig, train  # noqa: E402
from models.evaluate import seen_matrix, split_log  # noqa: E402
from models.metrics import ranking_metrics  # noqa: E402
from models.synthetic import long_history_ratings  # noqa: E402
from models.topk import top_k  # noqa: E402
from models.version import recommender_from_version  # noqa: E402
from models.weighting import DEFAULT_WEIGHTING, confidence_matrix, user_confidences  # noqa: E402
from retrain.publish import build_version  # noqa: E402
from retrain.snapshot import states_from_log  # noqa: E402
from schemas.state import decode, encode  # noqa: E402

CAPS = (100, 200, 400, 800, 1600, 2400)
#: Event ids the record remembers (FRESHREC_DEDUPE_WINDOW's default), of a realistic length.
DEDUPE_WINDOW = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    log = long_history_ratings(n_users=args.users, seed=args.seed).log
    train_log, test_log = split_log(log, "stratified-item", 0.75, 42)
    cfg = ALSConfig(num_threads=1, use_gpu=False)
    trained = train(confidence_matrix(train_log, DEFAULT_WEIGHTING), cfg)
    version = build_version(train_log, cfg, DEFAULT_WEIGHTING, popular_length=350, snapshot={})
    rec = recommender_from_version(version)
    names = train_log.items.ids
    users = np.arange(len(train_log.users))
    relevant: dict[int, set[str]] = {}
    for u, i in zip(test_log.user.tolist(), test_log.item.tolist(), strict=True):
        relevant.setdefault(u, set()).add(names[i])
    seen = seen_matrix(train_log)
    top, _ = top_k(trained.user_factors, trained.item_factors, 10, seen)
    baseline = ranking_metrics(
        {int(u): [names[i] for i in row if i >= 0] for u, row in zip(users, top, strict=True)},
        relevant,
        set(names),
        10,
    )["ndcg@10"]
    per_user = np.bincount(train_log.user, minlength=users.size)
    ratios, sizes, costs, heavy = [], [], [], []
    for cap in CAPS:
        states = [state for _, state in states_from_log(train_log, cap)]
        for n, state in enumerate(states):
            state.event_ids = [f"ev-{n:06d}-{k:04d}" for k in range(DEDUPE_WINDOW)]
        records = [encode(s) for s in states]
        started = time.perf_counter()
        decoded = [decode(r) for r in records]
        histories = [user_confidences(s.history, rec.weighting) for s in decoded]
        excluded = [s.seen_items for s in decoded]
        ranking = rec.rank(histories, 150, exclude=excluded, explain=True)
        [encode(s) for s in decoded]
        costs.append(round((time.perf_counter() - started) / len(states) * 1e6, 1))
        ranked = {
            int(u): [names[i] for i in row[:10] if i >= 0]
            for u, row in zip(users, ranking.items, strict=True)
        }
        ratios.append(
            round(ranking_metrics(ranked, relevant, set(names), 10)["ndcg@10"] / baseline, 4)
        )
        sizes.append(round(float(np.mean([len(r) for r in records]))))
        heavy.append(round(float((per_user > cap).mean()), 3))
        print(
            f"cap {cap:4d}: nDCG ratio {ratios[-1]:.4f}, record {sizes[-1]} B, "
            f"{costs[-1]} µs/user, users past the cap {heavy[-1]:.1%}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "bench": "history",
                "caps": list(CAPS),
                "ndcg_ratio": ratios,
                "record_bytes": sizes,
                "us_per_user": costs,
                "heavy_users_share": heavy,
                "trained_ndcg": round(baseline, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

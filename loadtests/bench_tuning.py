"""Benchmark the hyperparameter search's strategies: time against a bare fit, and quality.

Why: the default retrain's search cost 24 bare fits on 300k interactions
(``loadtests/bench_retrain.py``'s ratio_tuned; goal 15, issue 25). Each
strategy here runs :func:`models.tuning.tune` on the same training part, with
the same seed and trial count:

``before``
    the search before these cuts: the whole space
    (:data:`models.tuning.WIDE_SPACE`), every validation user, no pruning;
``narrow``
    :data:`models.tuning.NARROW_SPACE`, at most 64 factors and 8-20 iterations;
``score5k``
    each trial scored on at most 5,000 validation users (a seeded sample);
``sample``
    trials fitted on half of the fitting users, the winner refitted on all;
``prune``
    trials stopped at :data:`models.tuning.PRUNE_AT` iterations when below the
    median there;
``narrow+score5k``, ``narrow+score5k+prune``, ``narrow+score5k+sample``
    the combinations;
``default``
    :func:`~models.tuning.tune`'s defaults (issue 25: ``narrow+score5k+prune``).

Per strategy: ``tune_s``, ``tune_ratio = tune_s / bare_fit_s`` (implicit's
own fit of the base configuration on the whole training part, the median of
three in the same run), the same in CPU seconds of the process
(``tune_cpu_ratio``: steadier than wall time on a shared machine),
``val_ndcg``: the chosen configuration's validation nDCG@10 on the whole
validation split (the chosen values fitted again here on the fitting part,
the split :func:`~models.tuning.tune` carves: the test part is never used),
the trials run and pruned, and the chosen values.

Data sets: ``watch``, the planted-cluster watch log of ``bench_retrain.py``
(``--users`` x ``--items``, ``--interactions``), and ``long``, the long-history
rating profile (:func:`models.synthetic.long_history_ratings`, ``--long-users``).

Run: ``python loadtests/bench_tuning.py [--only watch|long] [--strategies a,b]``.
Each strategy's whole row is printed as it ends; the last line of standard
output is ``{"bench": "tuning", "<data> <strategy>": {"tune_cpu_ratio",
"tune_ratio", "val_ndcg", "trials", "pruned", "chosen"}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freshrec.cores import usable_cores  # noqa: E402
from models.als import ALSConfig, train  # noqa: E402
from models.evaluate import Holdout, split_log  # noqa: E402
from models.interactions import InteractionLog  # noqa: E402
from models.synthetic import generate, long_history_ratings  # noqa: E402
from models.tuning import NARROW_SPACE, WIDE_SPACE, tune  # noqa: E402
from models.weighting import DEFAULT_WEIGHTING, confidence_matrix  # noqa: E402

#: The search before issue 25's cuts: the whole space, every validation user, no pruning.
_BEFORE: dict[str, Any] = {"space": WIDE_SPACE, "score_users": None, "prune": False}
STRATEGIES: dict[str, dict[str, Any]] = {
    "before": _BEFORE,
    "narrow": _BEFORE | {"space": NARROW_SPACE},
    "score5k": _BEFORE | {"score_users": 5000},
    "sample": _BEFORE | {"sample": 0.5},
    "prune": _BEFORE | {"prune": True},
    "narrow+score5k": _BEFORE | {"space": NARROW_SPACE, "score_users": 5000},
    "narrow+score5k+prune": {"space": NARROW_SPACE, "score_users": 5000, "prune": True},
    "narrow+score5k+sample": _BEFORE | {"space": NARROW_SPACE, "score_users": 5000, "sample": 0.5},
    "default": {},  # models.tuning's defaults, whatever they are
}


def data_set(name: str, args: argparse.Namespace) -> InteractionLog:
    if name == "watch":
        return generate(args.users, args.items, args.interactions, factors=16, seed=7).log
    return long_history_ratings(args.long_users, seed=3).log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=6_000)
    parser.add_argument("--interactions", type=int, default=300_000)
    parser.add_argument("--long-users", type=int, default=2_000)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--only", choices=("watch", "long"), default=None)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()
    base = ALSConfig(num_threads=usable_cores())
    results: list[dict[str, Any]] = []
    for name in ("watch", "long") if args.only is None else (args.only,):
        log_ = data_set(name, args)
        train_log, _ = split_log(log_, "stratified-item", 0.75, 42)  # the test part: unused
        matrix = confidence_matrix(train_log, DEFAULT_WEIGHTING)
        fit_log, val_log = split_log(train_log, "stratified-item", 0.75, 43)  # tune's, seed 42
        holdout = Holdout.of(fit_log, val_log)
        fits = []
        for _ in range(3):  # the median of three: the machine is shared
            started, cpu = time.perf_counter(), time.process_time()
            train(matrix, base)
            fits.append((time.process_time() - cpu, time.perf_counter() - started))
        bare_cpu, bare = sorted(fits)[1]
        for strategy in args.strategies.split(","):
            options = STRATEGIES[strategy]
            cpu = time.process_time()
            result = tune(train_log, base, DEFAULT_WEIGHTING, max_trials=args.trials, **options)
            tune_cpu = time.process_time() - cpu
            chosen = train(confidence_matrix(fit_log, result.weighting), result.als)
            val_ndcg = holdout.score(chosen.user_factors, chosen.item_factors, 10)["ndcg@10"]
            row = {
                "data": name,
                "interactions": len(train_log),
                "strategy": strategy,
                "tune_s": round(result.seconds, 2),
                "bare_fit_s": round(bare, 3),
                "tune_ratio": round(result.seconds / bare, 2),
                "tune_cpu_s": round(tune_cpu, 2),
                "bare_fit_cpu_s": round(bare_cpu, 3),
                "tune_cpu_ratio": round(tune_cpu / bare_cpu, 2),
                "val_ndcg": round(val_ndcg, 6),
                "search_score": result.score,
                "base_val_ndcg": result.base_score,
                "trials": len(result.trials),
                "pruned": sum(t.pruned for t in result.trials),
                "chosen": {
                    "factors": result.als.factors,
                    "regularization": result.als.regularization,
                    "alpha": result.als.alpha,
                    "iterations": result.als.iterations,
                    "negative_below": result.weighting.negative_below,
                },
                "trial_s": [
                    (t.als.factors, t.als.iterations, round(t.seconds, 2)) for t in result.trials
                ],
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {"bench": "tuning"}
    for row in results:
        summary[f"{row['data']} {row['strategy']}"] = {
            key: row[key]
            for key in ("tune_cpu_ratio", "tune_ratio", "val_ndcg", "trials", "pruned", "chosen")
        }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

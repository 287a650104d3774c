"""Offline ranking quality of the model beside the popular baseline, on the same split.

    python loadtests/bench_quality.py [--format synthetic] [--data FILE] [--tune-budget-s 10]

Runs ``freshrec evaluate --json`` (Microsoft Recommenders' definitions: a
stratified split, every training user's top-k with training items removed)
on the synthetic data set by default, or on a MovieLens file with ``--format
movielens100k --data u.data``. ``ndcg_ratio`` = the model's nDCG@k / the
popular baseline's. Last stdout line: ``{"bench": "quality", "precision@k",
..., "popular_precision@k", ..., "ndcg_ratio"}``; both sets of figures also go
to ``loadtests/results/quality.series.json`` for the plot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT / "loadtests" / "results" / "quality.series.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", default="synthetic")
    parser.add_argument("--data")
    parser.add_argument("--tune-budget-s", default="10")
    args = parser.parse_args()
    argv = [sys.executable, "-m", "cli", "evaluate", "--json", "--format", args.format]
    argv += ["--tune-budget-s", args.tune_budget_s]
    if args.data:
        argv += ["--data", args.data]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"bench_quality: freshrec evaluate failed ({done.returncode}): {done.stderr}")
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    popular = metrics.pop("popular")
    SERIES.parent.mkdir(parents=True, exist_ok=True)
    SERIES.write_text(json.dumps({"model": metrics, "popular": popular, "format": args.format}))
    ndcg = next((k for k in metrics if k.startswith("ndcg")), None)
    result = {"bench": "quality", "format": args.format, **metrics}
    result |= {f"popular_{k}": v for k, v in popular.items()}
    if ndcg is not None and popular.get(ndcg):
        result["ndcg_ratio"] = round(metrics[ndcg] / popular[ndcg], 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

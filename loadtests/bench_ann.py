"""An approximate index against freshrec's exact top-k, at a real catalogue's size (issue 27).

    pip install faiss-cpu   # not a dependency: this measures an approach not taken
    python loadtests/bench_ann.py [--items 27000] [--n 150] [--batch 1000]

Trains ALS (64 factors) on ``bench_models``'s synthetic log over ``--items``
items, folds in ``--batch`` of its users, and times, on one thread, per user:

- the bare score product ``X Yᵀ`` (``bench_models``' baseline);
- :func:`models.topk.top_k`, exact, the users' seen items excluded (the worker's path);
- faiss's exact inner-product search (``IndexFlatIP``, its BLAS product and heaps),
  no exclusions (faiss takes no per-query mask);
- faiss's HNSW graph (``IndexHNSWFlat``, inner product, ``M`` links) at several
  ``efSearch``, with its recall@n against the exact top-n (no exclusions either,
  which only flatters it: a graph search asked for n + the user's seen items
  would be slower still).

The last line is one JSON object: ``us_per_user`` of each, and ``recall_at_n``
of each HNSW setting. What it showed, and why freshrec keeps the exact path:
docs/models.md, "At a real catalogue's size".
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.als import ALSConfig, train  # noqa: E402
from models.foldin import FoldIn, HistoryRows  # noqa: E402
from models.synthetic import generate  # noqa: E402
from models.topk import top_k  # noqa: E402

#: efSearch values tried (the candidate list a query keeps; at least n for n results).
EF_SEARCH = (150, 300, 600, 1200)


def cpu_us_per_user(fn: object, users: int, repeats: int = 3) -> float:
    """Best CPU time of ``fn()`` over ``repeats``, in µs per user."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        fn()  # type: ignore[operator]
        best = min(best, time.process_time() - started)
    return round(best / users * 1e6, 1)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top-n that ``found`` holds."""
    hits = [len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True)]
    return round(float(np.mean(hits)) / exact.shape[1], 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=27_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--links", type=int, default=32, help="HNSW's M")
    args = ap.parse_args()
    try:
        import faiss
    except ImportError:
        ap.error("faiss is not installed: pip install faiss-cpu (this bench only)")
    faiss.omp_set_num_threads(1)
    with threadpool_limits(1):
        data = generate(args.users, args.items, args.interactions, factors=32, seed=1)
        from models.weighting import confidence_matrix

        matrix = confidence_matrix(data.log)
        cfg = ALSConfig(factors=64, num_threads=1, use_gpu=False)
        model = train(matrix, cfg)
        users = np.flatnonzero(np.diff(matrix.indptr) > 0)[: args.batch]
        rows = matrix[users]
        hist = HistoryRows(rows.indptr.astype(np.int64), rows.indices.astype(np.int64), rows.data)
        x = FoldIn(model.item_factors, cfg.regularization, cfg.alpha).user_vectors(hist)
        y = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        seen = rows.copy()
        seen.data[:] = 1
        n_users = len(users)

        out: dict[str, object] = {"bench": "ann", "items": args.items, "n": args.n}
        us: dict[str, float] = {}
        us["score_product"] = cpu_us_per_user(lambda: x @ y.T, n_users)
        us["exact_topk_excluding_seen"] = cpu_us_per_user(
            lambda: top_k(x, y, args.n, sp.csr_matrix(seen)), n_users
        )
        exact_ids, _ = top_k(x, y, args.n)
        flat = faiss.IndexFlatIP(y.shape[1])
        flat.add(y)
        us["faiss_flat_exact"] = cpu_us_per_user(lambda: flat.search(x, args.n), n_users)
        started = time.process_time()
        graph = faiss.IndexHNSWFlat(y.shape[1], args.links, faiss.METRIC_INNER_PRODUCT)
        graph.add(y)
        out["hnsw_build_s"] = round(time.process_time() - started, 1)
        recalls: dict[str, float] = {}
        for ef in EF_SEARCH:
            graph.hnsw.efSearch = ef
            us[f"hnsw_ef{ef}"] = cpu_us_per_user(lambda: graph.search(x, args.n), n_users)
            _, found = graph.search(x, args.n)
            recalls[f"hnsw_ef{ef}"] = recall(found, exact_ids)
        out["us_per_user"] = us
        out["recall_at_n"] = recalls
    for name, value in us.items():
        print(f"{name}: {value} µs/user" + (f", recall {recalls[name]}" if name in recalls else ""))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Top-k items for a batch of user vectors: one blocked matrix product and a partial sort.

implicit's native ``topk`` does exactly this (scores ``X Yᵀ`` block by block
and keeps a heap per user, skipping each user's excluded items), which is
faster and lighter than a full ``X @ Y.T`` plus ``np.argpartition`` on the
whole ``users x items`` score matrix (measured in ``loadtests/bench_models.py``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: What implicit's topk reports for a slot it could not fill (every other item excluded).
_UNFILLED = np.finfo(np.float32).min


def top_k(
    user_vectors: np.ndarray,
    item_factors: np.ndarray,
    n: int,
    exclude: sp.csr_matrix | None = None,
    num_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best items per user, best first, as ``(indices int64, scores float32)``.

    ``exclude`` (users x items, any stored value) masks items per user, such as
    the items they have already seen. Slots that cannot be filled, because a
    user has fewer than ``n`` items left, hold index ``-1`` and score ``-inf``.
    """
    from implicit.cpu.topk import topk

    n_users = user_vectors.shape[0]
    n_items = item_factors.shape[0]
    k = min(n, n_items)
    if n_users == 0 or k <= 0:
        return np.zeros((n_users, 0), dtype=np.int64), np.zeros((n_users, 0), dtype=np.float32)
    query = np.ascontiguousarray(user_vectors, dtype=np.float32)
    items = np.ascontiguousarray(item_factors, dtype=np.float32)
    if exclude is not None and exclude.nnz == 0:
        exclude = None
    if exclude is not None:
        exclude = sp.csr_matrix(exclude, dtype=np.float32)
        if exclude.shape != (n_users, n_items):
            raise ValueError(f"exclude has shape {exclude.shape}, expected {(n_users, n_items)}")
    ids, scores = topk(items, query, k, filter_query_items=exclude, num_threads=num_threads)
    ids = ids.astype(np.int64)
    unfilled = scores <= _UNFILLED
    ids[unfilled] = -1
    scores[unfilled] = -np.inf
    return ids, scores

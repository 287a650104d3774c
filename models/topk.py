"""Top-k items for a batch of user vectors: blocked matrix products and a partial sort.

Users are scored in blocks of at most ``BLOCK_SCORES`` user-item scores: one
BLAS product ``X_b Yᵀ`` per block, excluded items overwritten with ``-inf``
(one scatter over the block's CSR rows), ``np.argpartition`` for the best
``n`` per user, and a sort of those ``n`` only. On the worker's shapes (1,000
users, 2,000 items, 150 items per list) this is about four times faster than
implicit's native ``topk``, whose per-user heap over every item dominated a
micro-batch (``loadtests/bench_models.py`` measures it).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Most user-item scores held at once (float32): bounds the memory of one block
#: (16 MiB) whatever the catalog size, while keeping every product BLAS-sized.
BLOCK_SCORES = 1 << 22


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
    Equal scores rank the lower item index first. ``num_threads`` is accepted
    for compatibility; the product runs on the BLAS library's own threads.
    """
    n_users = user_vectors.shape[0]
    n_items = item_factors.shape[0]
    k = min(n, n_items)
    out_ids = np.full((n_users, max(k, 0)), -1, dtype=np.int64)
    out_scores = np.full((n_users, max(k, 0)), -np.inf, dtype=np.float32)
    if n_users == 0 or k <= 0:
        return out_ids, out_scores
    query = np.ascontiguousarray(user_vectors, dtype=np.float32)
    items_t = np.ascontiguousarray(item_factors, dtype=np.float32).T
    if exclude is not None:
        if exclude.shape != (n_users, n_items):
            raise ValueError(f"exclude has shape {exclude.shape}, expected {(n_users, n_items)}")
        exclude = sp.csr_matrix(exclude)
    block = max(1, BLOCK_SCORES // max(n_items, 1))
    for start in range(0, n_users, block):
        stop = min(start + block, n_users)
        scores = query[start:stop] @ items_t  # (b, items)
        if exclude is not None:
            lo, hi = exclude.indptr[start], exclude.indptr[stop]
            rows = np.repeat(np.arange(stop - start), np.diff(exclude.indptr[start : stop + 1]))
            scores[rows, exclude.indices[lo:hi]] = -np.inf
        if k < n_items:
            best = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
            best.sort(axis=1)  # ascending item index, so that the stable sort breaks ties by it
        else:
            best = np.broadcast_to(np.arange(n_items), scores.shape)
        picked = np.take_along_axis(scores, best, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        ids = np.take_along_axis(best, order, axis=1).astype(np.int64)
        top = np.take_along_axis(picked, order, axis=1)
        unfilled = np.isneginf(top)
        ids[unfilled] = -1
        out_ids[start:stop] = ids
        out_scores[start:stop] = top
    return out_ids, out_scores

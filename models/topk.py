"""Top-k items for a batch of user vectors: blocked matrix products and a thresholded partial sort.

Users are scored in blocks of at most ``BLOCK_SCORES`` user-item scores: one
BLAS product ``X_b Yᵀ`` per block into one reused buffer, excluded items
overwritten with ``-inf`` (one scatter over the block's CSR rows), then the
best ``n`` per user, and a sort of those ``n`` only.

Picking the best ``n`` of a large catalogue with ``np.argpartition`` over
every score costs more than the product itself (an introselect per row). For
catalogues much larger than ``n`` a threshold does it in a few vectorised
passes instead: split each row's items into strided groups of ``g``
(item ``i`` in group ``i mod (items // g)``), take each group's maximum, and
let ``t`` be the ``n``-th largest of those maxima. The best ``n`` groups each
hold a distinct item scoring at least ``t``, so at least ``n`` items reach
``t`` and every item of the true top ``n`` (which scores at least the
``n``-th best score, hence at least ``t``) is among them: the answer is
exact, ties included. In practice barely more than ``n`` items pass
(about 160 for ``n`` = 150 of 27,000), and one sort runs on those: each
candidate packed into one uint64 key, score bits above item index
(:func:`_rank_keys`), so that numpy's plain SIMD sort of the keys orders a
row as a stable argsort by score would (ties by index) without the argsort
and its gathers (a fifth less time for the selection at 27,000 items).
Rows where it cannot help (fewer than ``n`` groups with a finite maximum, or
masses of equal scores above the threshold) take the plain partition; a
mass of scores equal to the threshold itself (a user whose vector is zero)
is two passes instead (:func:`_best_at_a_tie`). ``loadtests/bench_models.py``
measures both paths against a per-user loop.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Most user-item scores held at once (float32): bounds the memory of the reused
#: score buffer (16 MiB) whatever the catalogue size, while keeping every product
#: BLAS-sized.
BLOCK_SCORES = 1 << 22
#: Largest group of items reduced to one maximum by the threshold path.
GROUP_MAX = 32
#: The threshold path needs at least this many groups per wanted item (fewer groups
#: mean a looser threshold); smaller catalogues take the plain partition. Measured
#: (CPU time per user, 150 of 2,000 items): the partition 12.7 us, groups of 4 (3.3
#: per item, about 170 candidates) 10.2; past 2 per item candidates multiply.
GROUPS_PER_ITEM = 3
#: A row with more than this many times ``n`` items at or above its threshold (a
#: mass of equal scores) takes the plain partition instead.
CANDIDATES_PER_ITEM = 4


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
    Equal scores rank the lower item index first; where several items tie for
    the last place, which of them is kept is unspecified unless the catalogue
    takes the threshold path (then the lower index). ``num_threads`` is accepted
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
    group = min(GROUP_MAX, n_items // (GROUPS_PER_ITEM * k))
    block = min(n_users, max(1, BLOCK_SCORES // max(n_items, 1)))
    buffer = np.empty((block, n_items), dtype=np.float32)
    for start in range(0, n_users, block):
        stop = min(start + block, n_users)
        scores = buffer[: stop - start]
        np.matmul(query[start:stop], items_t, out=scores)
        if exclude is not None:
            lo, hi = exclude.indptr[start], exclude.indptr[stop]
            rows = np.repeat(np.arange(stop - start), np.diff(exclude.indptr[start : stop + 1]))
            scores[rows, exclude.indices[lo:hi]] = -np.inf
        if group >= 2 and k < n_items:
            ids, top = _best_by_threshold(scores, k, group)
        else:
            ids, top = _best_by_partition(scores, k)
        ids[np.isneginf(top)] = -1
        out_ids[start:stop] = ids
        out_scores[start:stop] = top
    return out_ids, out_scores


def _best_by_partition(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best item indices (int64), best first, and their scores."""
    n_items = scores.shape[1]
    if k < n_items:
        best = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
        best.sort(axis=1)  # ascending item index, so that the stable sort breaks ties by it
    else:
        best = np.broadcast_to(np.arange(n_items), scores.shape)
    picked = np.take_along_axis(scores, best, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    ids = np.take_along_axis(best, order, axis=1).astype(np.int64)
    return ids, np.take_along_axis(picked, order, axis=1)


def _best_by_threshold(scores: np.ndarray, k: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_best_by_partition`, through the group-maximum threshold (module docstring)."""
    n_rows, n_items = scores.shape
    width = n_items // group
    maxima = scores[:, : group * width].reshape(n_rows, group, width).max(axis=1)
    if group * width < n_items:  # the few items left over are groups of one
        maxima = np.concatenate([maxima, scores[:, group * width :]], axis=1)
    threshold = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    plain = np.isneginf(threshold)  # fewer than k groups with any scorable item
    # Many groups whose maximum reaches the threshold mean a mass of equal scores (a
    # row of zeros): such a row would swamp the candidates' arrays below, so it is
    # left out of them before, and answered by _best_at_a_tie or the partition.
    crowded = np.count_nonzero(maxima >= threshold[:, None], axis=1) > CANDIDATES_PER_ITEM * k
    crowded &= ~plain
    plain |= crowded
    cut = np.where(plain, np.inf, threshold)  # such rows contribute no candidates here
    flat = np.flatnonzero(scores >= cut[:, None])  # row-major: by row, then item
    row = flat // n_items
    counts = np.bincount(row, minlength=n_rows)
    many = counts > CANDIDATES_PER_ITEM * k  # crowded, from fewer groups
    crowded |= many
    plain |= many
    if many.any():
        keep = ~many[row]
        flat, row = flat[keep], row[keep]
        counts[many] = 0
    starts = np.zeros(n_rows, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    slot = np.arange(flat.size) - starts[row]
    width_c = max(k, int(counts.max()))
    keys = np.full((n_rows, width_c), _EMPTY, dtype=np.uint64)
    keys[row, slot] = _rank_keys(scores.ravel()[flat], flat - row * n_items)
    keys.sort(axis=1)
    best, picked = _from_keys(keys[:, :k])
    for r in np.flatnonzero(crowded).tolist():
        tied = _best_at_a_tie(scores[r], threshold[r], k)
        if tied is not None:
            best[r], picked[r] = tied
            plain[r] = False
    if plain.any():
        best[plain], picked[plain] = _best_by_partition(scores[plain], k)
    return best, picked


def _best_at_a_tie(
    row: np.ndarray, threshold: np.float32, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``k`` best of a row with a mass of items scoring exactly its threshold, or None.

    At least ``k`` items score ``threshold`` or more (module docstring). When
    fewer than ``k`` score more, the best ``k`` are those, by score then index,
    and then the lowest-indexed items scoring ``threshold``: two passes over
    the row instead of a partition of it. A user folded in from items the model
    knows nothing of (factors all zero) has nothing but such a mass: every
    score 0 (a tenth of the users of ``bench_stream`` at 27,000 items, where
    each took a partition of 27,000 scores). None when the mass is not at the
    threshold (the caller partitions).
    """
    above = np.flatnonzero(row > threshold)
    if above.size >= k:
        return None
    at = np.flatnonzero(row == threshold)[: k - above.size]
    ids, values = _from_keys(np.sort(_rank_keys(row[above], above)))
    return np.concatenate([ids, at]), np.concatenate([values, row[at]])


#: The sort key of an empty slot: after every candidate's.
_EMPTY = np.uint64(np.iinfo(np.uint64).max)
_LOW = np.uint64(0xFFFFFFFF)
_SIGN = np.uint32(0x80000000)
_SHIFT = np.uint64(32)


def _rank_keys(values: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One uint64 per candidate whose ascending order is best score first, then lower item.

    The high 32 bits are the float32 score's bits mapped so that unsigned
    order is descending score order (``-0.0`` counted as ``0.0``), the low 32
    the item index: one plain (unstable, SIMD) sort of the keys orders a row as
    a stable sort by score would, ties by index, with no argsort or gathers.
    """
    bits = (values.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    ascending = np.where(bits & _SIGN, ~bits, bits | _SIGN)
    return ((~ascending).astype(np.uint64) << _SHIFT) | items.astype(np.uint64)


def _from_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The item indices (int64) and float32 scores of :func:`_rank_keys`' keys; an empty
    slot gives ``-1`` and ``-inf``."""
    empty = keys == _EMPTY
    ascending = ~(keys >> _SHIFT).astype(np.uint32)
    bits = np.where(ascending & _SIGN, ascending & ~_SIGN, ~ascending)
    ids = (keys & _LOW).astype(np.int64)
    scores = bits.view(np.float32)
    ids[empty] = -1
    scores[empty] = -np.inf
    return ids, scores

"""Train/test splits: Microsoft Recommenders' stratified split, row for row, and last-n.

:func:`stratified_split` reproduces ``python_stratified_split`` exactly, so a
split of the same file with the same seed holds the same rows as theirs: seed
numpy's *global* RNG, draw one uniform number per row in file order, stable-sort
by (group, number), and give the first ``round(ratio * count)`` rows of each
group (numpy rounding: half to even) to training; the test part is the rows of
rank ``round(ratio * count) < rank <= round((ratio + (1 - ratio)) * count)``,
the second threshold computed as their ``np.cumsum`` computes it.
"""

from __future__ import annotations

import numpy as np


def _group_ranks(group: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows taken in ``order`` (sorted by group): 1-based rank within group, group size."""
    g = group[order]
    starts = np.r_[True, g[1:] != g[:-1]] if g.size else np.zeros(0, dtype=bool)
    start_pos = np.flatnonzero(starts)
    sizes = np.diff(np.r_[start_pos, g.size])
    group_no = np.cumsum(starts) - 1
    rank = np.arange(g.size) - start_pos[group_no] + 1
    return rank, sizes[group_no]


def stratified_split(
    group: np.ndarray, ratio: float = 0.75, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)`` of a per-group random split (see the module docstring).

    ``group`` is the user or item column (any sortable values), one per row in
    file order. Reseeds numpy's global RNG, as the reference implementation does.
    """
    if not 0 < ratio < 1:
        raise ValueError("ratio must be strictly between 0 and 1")
    group = np.asarray(group)
    np.random.seed(seed)
    draw = np.random.rand(group.size)
    order = np.lexsort((draw, group))
    rank, count = _group_ranks(group, order)
    first, second = np.cumsum([ratio, 1 - ratio])
    in_train = rank <= np.round(first * count)
    in_test = (rank > np.round(first * count)) & (rank <= np.round(second * count))
    return np.sort(order[in_train]), np.sort(order[in_test])


def last_n_split(user: np.ndarray, ts: np.ndarray, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)``: each user's ``n`` latest rows (ties: later row) are test.

    Users with ``n`` rows or fewer stay wholly in training: with nothing left to
    train on, they could not be evaluated anyway.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    user, ts = np.asarray(user), np.asarray(ts)
    order = np.lexsort((np.arange(user.size), ts, user))
    rank, count = _group_ranks(user, order)
    in_test = (rank > count - n) & (count > n)
    return np.sort(order[~in_test]), np.sort(order[in_test])

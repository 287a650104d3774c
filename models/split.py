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


def newest_items_split(
    user: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    n_users: int,
    fraction: float = 0.2,
    seed: int = 42,
    after_ts: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)`` of a chronological hold-out of a sample of users.

    Up to ``n_users`` users with at least two distinct items are drawn at random
    (``seed``); each gives their newest ``fraction`` of distinct items (at least
    one, never all), newest by the item's latest event, to the test part, with
    every row of those (user, item) pairs. Splitting by distinct item rather
    than by row keeps a re-watched item out of both parts at once, so every test
    item is one the ranking may still recommend. Every other row, the unsampled
    users' included, stays in training: the model the gate scores is the model
    it publishes, trained on all but a few thousand users' newest items.

    With ``after_ts``, only items the user first met after it may be held out
    (and only users with such items are drawn): the gate passes the current
    model's newest training event here, so that neither model has learnt from
    what it is scored on. (An item met before and again after it was held out
    once, every row of it removed from the candidate's training while the
    current model had learnt it: candidates with more data lost, issue 26.)
    """
    if not 0 < fraction < 1:
        raise ValueError("fraction must be strictly between 0 and 1")
    user, item, ts = np.asarray(user), np.asarray(item), np.asarray(ts)
    if user.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    width = int(item.max()) + 1
    key = user.astype(np.int64) * width + item
    # newest event per (user, item) pair
    order = np.lexsort((ts, key))
    last = np.r_[key[order][1:] != key[order][:-1], True]
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    pair_key, pair_ts, pair_first_ts = key[order][last], ts[order][last], ts[order][first]
    pair_user = pair_key // width
    users, counts = np.unique(pair_user, return_counts=True)
    eligible = users[counts >= 2]
    # a pair met at or before after_ts is one the current model learnt: not held out
    fresh = np.ones(pair_key.size, dtype=bool) if after_ts is None else pair_first_ts > after_ts
    eligible = np.intersect1d(eligible, pair_user[fresh])
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=min(n_users, eligible.size), replace=False)
    sampled = np.isin(pair_user, chosen)
    p_user, p_ts, p_key = pair_user[sampled], pair_ts[sampled], pair_key[sampled]
    # newest first within each user (ties: higher key first, for determinism)
    p_order = np.lexsort((-p_key, -p_ts, p_user))
    rank, count = _group_ranks(p_user, p_order)
    n_test = np.clip(np.floor(fraction * count), 1, count - 1)
    held = (rank <= n_test) & fresh[sampled][p_order]
    test_keys = p_key[p_order][held]
    in_test = np.isin(key, test_keys)
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)

"""The popular-items fallback: what users without a usable history get.

An item's popularity is the number of distinct users whose combined
confidence for it is positive (so dislikes and skims do not count, and one
user replaying an item counts once), each user optionally discounted by the age
of their latest event on the item: weight ``0.5 ** (age / half_life)``. The
decay makes the list follow what is popular *now* rather than all time.
"""

from __future__ import annotations

import numpy as np

from models.interactions import InteractionLog
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig, combined_confidences


def popularity(
    log: InteractionLog,
    cfg: WeightingConfig = DEFAULT_WEIGHTING,
    half_life_s: float | None = None,
    now_ms: int | None = None,
) -> np.ndarray:
    """Popularity score of every item of ``log.items`` (float64, one per item).

    ``now_ms`` defaults to the newest event of the log, so that a replay of an
    old log ranks as it did then.
    """
    user, item, conf = combined_confidences(log, cfg)
    liked = conf > 0
    user, item = user[liked], item[liked]
    n_items = len(log.items)
    if half_life_s is None:
        return np.bincount(item, minlength=n_items).astype(np.float64)
    if half_life_s <= 0:
        raise ValueError("half_life_s must be above 0")
    now = int(log.ts.max()) if now_ms is None and len(log) else (now_ms or 0)
    # newest event per (user, item) pair, for the liked pairs only
    width = max(n_items, 1)
    row_key = log.user.astype(np.int64) * width + log.item
    pair_key = user * width + item
    newest = np.full(pair_key.size, np.iinfo(np.int64).min, dtype=np.int64)
    pos = np.searchsorted(pair_key, row_key)  # pair_key is sorted (combined_confidences sorts)
    hit = (pos < pair_key.size) & (pair_key[np.minimum(pos, pair_key.size - 1)] == row_key)
    np.maximum.at(newest, pos[hit], log.ts[hit])
    age_s = np.maximum(0, now - newest) / 1000.0
    weight = 0.5 ** (age_s / half_life_s)
    return np.bincount(item, weights=weight, minlength=n_items)


def top_popular(scores: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Item indices by decreasing score (ties by index), and their scores; zeros left out."""
    order = np.lexsort((np.arange(scores.size), -scores))
    order = order[scores[order] > 0]
    if n is not None:
        order = order[:n]
    return order, scores[order]

"""From watch and rate events to the signed confidences ALS trains on.

The rule, in three steps (``cfg`` is a :class:`WeightingConfig`):

1. **Watch** events: the fraction watched ``f = min(1, watched_s / duration_s)``
   (with ``cfg.unknown_duration_s`` standing in for an unknown duration).
   A watch below ``cfg.watch_min_fraction`` is a skim and carries no signal
   (confidence 0); otherwise the confidence is ``cfg.watch_weight * f``.
2. **Rate** events: a rating below ``cfg.negative_below`` is a dislike, with
   confidence ``-cfg.negative_weight``; any other rating ``r`` gives
   ``cfg.rating_weight * r``.
3. **Combining** the events of one user and item: watches add up (re-watching
   is more interest); the *latest* rating (by ``ts``, ties by order) replaces
   earlier ones, because people revise their ratings. With no rating, the
   item's confidence is the watch sum; a negative latest rating wins outright
   (watched it and disliked it); a positive one adds to the watch sum. The
   result is capped at ``cfg.max_confidence``, and items whose result is 0 are
   dropped.

Why drop zeros: implicit's ALS reads a stored value ``c`` as "weight ``|c|``
instead of the unobserved weight 1", so a stored 0 would push the item's
weight *below* an unobserved item's. A negative ``c`` is implicit's dislike:
preference 0 with confidence ``|c|``. ALS's ``alpha`` multiplies these values
at training and fold-in time; the confidences here stay in rating-like units.

:func:`user_confidences` applies the rule to one user's history (the streaming
worker's path); :func:`confidence_matrix` applies the same rule to a whole
columnar log at once (the training path). A test keeps the two in agreement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.interactions import KIND_RATE, KIND_WATCH, InteractionLog
from schemas.state import Interaction

__all__ = [
    "DEFAULT_WEIGHTING",
    "Interaction",
    "WeightingConfig",
    "combined_confidences",
    "confidence_matrix",
    "event_confidence",
    "event_confidences",
    "update_confidences",
    "user_confidences",
]


@dataclass(frozen=True)
class WeightingConfig:
    """How events become confidences (see the module docstring for the whole rule)."""

    watch_weight: float = 4.0
    """Confidence of one complete watch; a partial watch gets this times the fraction.
    4 puts a full watch level with a 4-star rating: strong, but not an explicit 5."""
    watch_min_fraction: float = 0.1
    """Watches below this fraction of the item are skims and count as no signal."""
    unknown_duration_s: float = 1800.0
    """Duration assumed when a watch event has none, so that half an hour counts as a
    full watch; short clips with unknown duration are thus undervalued, never overvalued."""
    rating_weight: float = 1.0
    """Confidence per star of a rating at or above ``negative_below``."""
    negative_below: float = 2.5
    """Ratings strictly below this are dislikes (negative confidence). 2.5 makes 0.5-2
    stars dislikes on the 0.5-5 scale; 0 turns negative feedback off. Kept at 2.5 with
    the issue 9 defaults: on MovieLens-like synthetic ratings it ranked level with 0
    (within 1% on validation, where every rated item counts as relevant, disliked or
    not), and it keeps a user's dislikes out of their list."""
    negative_weight: float = 2.0
    """Magnitude of a dislike's (negative) confidence: how sure we are the user does
    not want the item, against the weight 1 of an item never seen."""
    max_confidence: float = 10.0
    """Upper bound of one item's combined confidence, so a user who replays an item
    all day does not drown out the rest of their history."""

    def __post_init__(self) -> None:
        for name in ("watch_weight", "unknown_duration_s", "rating_weight", "max_confidence"):
            if not getattr(self, name) > 0:
                raise ValueError(f"WeightingConfig.{name} must be above 0")
        if not 0 <= self.watch_min_fraction <= 1:
            raise ValueError("WeightingConfig.watch_min_fraction must be within 0..1")
        if self.negative_weight < 0:
            raise ValueError("WeightingConfig.negative_weight must not be negative")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightingConfig:
        """Rebuild from ``dataclasses.asdict`` output (as stored in a model version's params)."""
        known = cls.__dataclass_fields__
        return cls(**{k: float(v) for k, v in data.items() if k in known})


DEFAULT_WEIGHTING = WeightingConfig()


def event_confidence(
    kind: str, value: float, duration_s: float | None, cfg: WeightingConfig = DEFAULT_WEIGHTING
) -> float:
    """The signed confidence of one event (steps 1 and 2 of the rule); negative = dislike."""
    if kind == "watch":
        length = duration_s if duration_s is not None and duration_s > 0 else cfg.unknown_duration_s
        fraction = min(1.0, value / length)
        return 0.0 if fraction < cfg.watch_min_fraction else cfg.watch_weight * fraction
    if kind == "rate":
        return -cfg.negative_weight if value < cfg.negative_below else cfg.rating_weight * value
    raise ValueError(f"unknown interaction kind {kind!r}; expected 'watch' or 'rate'")


def _combine(watch_sum: float, rating: float | None, cap: float) -> float:
    if rating is not None and rating < 0:
        return rating
    total = watch_sum if rating is None else watch_sum + rating
    return min(total, cap)


def user_confidences(
    interactions: Iterable[Interaction], cfg: WeightingConfig = DEFAULT_WEIGHTING
) -> dict[str, float]:
    """One user's history -> ``item_id -> combined confidence`` (step 3); zeros left out.

    Items come in the order of their first event in ``interactions``. The
    fold-in's arithmetic follows that order (to the last bit), and it is the
    order :func:`update_confidences` keeps without a pass over the history.
    """
    order: dict[str, None] = {}
    watch: dict[str, float] = {}
    latest: dict[str, tuple[int, float]] = {}
    for it in interactions:
        item = it.item_id
        order[item] = None
        conf = event_confidence(it.kind, it.value, it.duration_s, cfg)
        if it.kind == "watch":
            watch[item] = watch.get(item, 0.0) + conf
        else:
            seen = latest.get(item)
            if seen is None or it.ts >= seen[0]:
                latest[item] = (it.ts, conf)
    out: dict[str, float] = {}
    for item in order:
        rating = latest.get(item)
        latest_conf = None if rating is None else rating[1]
        value = _combine(watch.get(item, 0.0), latest_conf, cfg.max_confidence)
        if value != 0.0:
            out[item] = value
    return out


def update_confidences(
    previous: Mapping[str, float],
    old: Sequence[Interaction],
    new: Sequence[Interaction],
    cfg: WeightingConfig = DEFAULT_WEIGHTING,
) -> dict[str, float]:
    """``user_confidences(new, cfg)``, equal in values and order, given
    ``previous == user_confidences(old, cfg)``, at the cost of the items that changed.

    The streaming worker's path: a user's history changes by a few rows per
    batch (new events at the end, the oldest dropped by the cap or a forget),
    and recomputing all of it cost 23 µs per event on a realistic user mix.
    When ``new`` is ``old`` minus a prefix plus rows at the end (rows compared
    by value, which identity settles for shared rows), only the items of those
    rows are recomputed, from their rows in ``new``. An item whose first event
    moved, other than to the end, makes the order be rebuilt from ``new``
    (one pass over item ids); any other change (an event inserted in the
    middle) is a plain :func:`user_confidences`. ``previous`` is not changed.
    """
    delta = _delta(old, new)
    if delta is None:
        return user_confidences(new, cfg)
    dropped, added = delta
    if not dropped and not added:
        return dict(previous)
    if len(dropped) + len(added) > len(new) // 2:
        return user_confidences(new, cfg)
    gone = {it.item_id for it in dropped}
    affected = gone.union([it.item_id for it in added])
    rows = [it for it in new if it.item_id in affected]
    fresh = user_confidences(rows, cfg)
    first: dict[str, Interaction] = {}
    for it in rows:
        first.setdefault(it.item_id, it)
    position = {id(it): at for at, it in enumerate(added)}
    out = dict(previous)
    to_end: list[str] = []
    for item in affected:
        head = first.get(item)
        if head is None:  # no event of the item left
            out.pop(item, None)
        elif id(head) in position:  # its first event is new: after every kept item
            out.pop(item, None)
            to_end.append(item)
        elif item in gone or (item not in previous and item in fresh):
            # Its first event moved into the kept rows, or a kept item became
            # non-zero: its place is among the others.
            return _ordered(new, out, fresh, affected)
        elif item in fresh:
            out[item] = fresh[item]
        else:
            out.pop(item, None)
    if to_end:
        to_end.sort(key=lambda item: position[id(first[item])])
        out.update((item, fresh[item]) for item in to_end if item in fresh)
    return out


def _delta(
    old: Sequence[Interaction], new: Sequence[Interaction]
) -> tuple[Sequence[Interaction], Sequence[Interaction]] | None:
    """``(dropped, added)`` when ``new == old[len(dropped):] + added``; None otherwise."""
    if not new:
        return old, new
    start = new[0]
    for skip, it in enumerate(old):
        if it is start or it == start:
            kept = len(old) - skip
            if kept <= len(new) and new[:kept] == old[skip:]:
                return old[:skip], new[kept:]
            return None
    return old, new


def _ordered(
    new: Sequence[Interaction],
    previous: Mapping[str, float],
    fresh: Mapping[str, float],
    affected: set[str],
) -> dict[str, float]:
    """The confidences in ``new``'s first-event order: ``fresh``'s for the ``affected``
    items, ``previous``'s for the others (unaffected items kept their values)."""
    out: dict[str, float] = {}
    for item in dict.fromkeys([it.item_id for it in new]):
        value = fresh.get(item, 0.0) if item in affected else previous.get(item, 0.0)
        if value != 0.0:
            out[item] = value
    return out


def event_confidences(log: InteractionLog, cfg: WeightingConfig = DEFAULT_WEIGHTING) -> np.ndarray:
    """Steps 1 and 2 for every row of ``log`` at once (float64)."""
    is_watch = log.kind == KIND_WATCH
    length = np.where(
        np.isnan(log.duration_s) | ~(log.duration_s > 0), cfg.unknown_duration_s, log.duration_s
    )
    fraction = np.minimum(1.0, log.value / length)
    watch = np.where(fraction < cfg.watch_min_fraction, 0.0, cfg.watch_weight * fraction)
    liked = cfg.rating_weight * log.value
    rate = np.where(log.value < cfg.negative_below, -cfg.negative_weight, liked)
    unknown = ~is_watch & (log.kind != KIND_RATE)
    if unknown.any():
        raise ValueError(f"unknown interaction kind code {int(log.kind[unknown][0])}")
    return np.where(is_watch, watch, rate)


def combined_confidences(
    log: InteractionLog, cfg: WeightingConfig = DEFAULT_WEIGHTING
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 3 for the whole log: ``(user, item, confidence)`` per distinct pair, zeros dropped.

    Rows are sorted by (pair, ts) with a stable sort, so "latest rating" breaks
    ts ties by row order exactly as :func:`user_confidences` does.
    """
    conf = event_confidences(log, cfg)
    n_items = max(len(log.items), 1)
    key = log.user.astype(np.int64) * n_items + log.item
    order = np.lexsort((log.ts, key))
    key_s, conf_s, rate_s = key[order], conf[order], log.kind[order] == KIND_RATE
    if key_s.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    starts = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
    group = np.cumsum(np.r_[False, key_s[1:] != key_s[:-1]])
    watch_sum = np.add.reduceat(np.where(rate_s, 0.0, conf_s), starts)
    rate_rows = np.flatnonzero(rate_s)
    rate_group = group[rate_rows]
    # the last rating row of each pair is the latest rating
    last = np.r_[rate_group[1:] != rate_group[:-1], True][: rate_rows.size]
    has_rating = np.zeros(starts.size, dtype=bool)
    rating = np.zeros(starts.size)
    has_rating[rate_group[last]] = True
    rating[rate_group[last]] = conf_s[rate_rows[last]]
    total = np.minimum(watch_sum + np.where(has_rating, rating, 0.0), cfg.max_confidence)
    combined = np.where(has_rating & (rating < 0), rating, total)
    keep = combined != 0.0
    pair = key_s[starts][keep]
    return pair // n_items, pair % n_items, combined[keep]


def confidence_matrix(
    log: InteractionLog, cfg: WeightingConfig = DEFAULT_WEIGHTING
) -> sp.csr_matrix:
    """The user x item CSR matrix (float32) of combined confidences that ALS trains on."""
    user, item, conf = combined_confidences(log, cfg)
    shape = (len(log.users), len(log.items))
    matrix = sp.csr_matrix((conf.astype(np.float32), (user, item)), shape=shape)
    matrix.sort_indices()
    return matrix

"""Item fold-in: a vector for an item the model does not know, from its users' vectors.

The mirror of :mod:`models.foldin`. With the users' vectors ``X`` fixed,
implicit's ALS update of item ``i``, whose users ``u`` have stored confidences
``c_u`` (already multiplied by ``alpha``), is the solution of ``A y = b`` with

    A = G + Σ_u d_u x_u x_uᵀ,   G = XᵀX + λI,   d_u = |c_u| - 1
    b = Σ_u p_u x_u,            p_u = c_u if c_u > 0 else 0

``G`` belongs to the model (the Gram matrix of every user's vector, plus the
regularisation), so what an item needs of its users is the two sums alone:
an ``f x f`` matrix and an ``f`` vector, its sufficient statistics
(:class:`ItemStats`). They have a fixed size whatever the number of users, a
user's contribution is added by ``+=`` and taken back by ``-=`` (a forgotten
user, or a user whose confidence in the item changed: take back the old
contribution, add the new), and the item's vector is one ``f x f`` solve,
for many items at once in :func:`item_vectors`. This is Oryx's speed-layer
item update, done exactly rather than by a gradient step.

Before an item has any user, :func:`content_vectors` places it among the
items that share its tags, weighted by how specific each tag is: the
content-based start of a new catalog item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.content import TagSpace


@dataclass
class ItemStats:
    """An item's sufficient statistics: ``a = Σ d_u x_u x_uᵀ``, ``b = Σ p_u x_u``, and the
    number of distinct users whose contributions are in them."""

    a: np.ndarray  # (f, f) float64
    b: np.ndarray  # (f,) float64
    users: int = 0

    @classmethod
    def empty(cls, factors: int) -> ItemStats:
        return cls(np.zeros((factors, factors)), np.zeros(factors), 0)

    def add(self, x: np.ndarray, confidence: float, sign: int = 1) -> None:
        """Add (``sign=1``) or take back (``sign=-1``) one user's contribution: vector ``x``,
        stored confidence ``confidence`` (``alpha`` times the combined weight)."""
        d, p = contribution_weights(confidence)
        x64 = np.asarray(x, dtype=np.float64)
        self.a += sign * d * np.outer(x64, x64)
        self.b += sign * p * x64
        self.users += sign


def contribution_weights(confidence: float) -> tuple[float, float]:
    """``(d, p)`` of one stored confidence, by implicit's rule: a negative confidence is
    "preference 0 with confidence ``|c|``", so it adds weight to ``A`` only."""
    return abs(confidence) - 1.0, max(confidence, 0.0)


def user_gram(user_factors: np.ndarray, regularization: float) -> np.ndarray:
    """``G = XᵀX + λI`` (float64) of a model's user vectors: stored with a model version,
    since the version keeps item factors only."""
    x = np.asarray(user_factors, dtype=np.float64)
    return x.T @ x + regularization * np.eye(x.shape[1])


def item_vectors(gram: np.ndarray, stats: Sequence[ItemStats]) -> np.ndarray:
    """The float32 vectors (``len(stats) x f``) of items from their statistics, in one
    batched solve; an item with no user gets the zero vector."""
    f = gram.shape[0]
    if not stats:
        return np.zeros((0, f), dtype=np.float32)
    a = np.stack([s.a for s in stats]) + gram
    b = np.stack([s.b for s in stats])
    return np.linalg.solve(a, b[..., None])[..., 0].astype(np.float32)


def content_vectors(
    tags: Sequence[Sequence[str]],
    item_tags: Mapping[int, Sequence[str]],
    item_factors: np.ndarray,
) -> np.ndarray:
    """A vector for each new item of ``tags`` from the model's items sharing its tags
    (``item_tags``: model item index -> its tags), weighted by tag specificity: the
    rule is :mod:`models.content`'s, whose :class:`~models.content.TagSpace` the
    worker keeps per version rather than indexing the tags again per call."""
    return TagSpace(item_tags, item_factors).vectors(tags)


def merge_interim(
    items: np.ndarray,
    scores: np.ndarray,
    user_vectors: np.ndarray,
    personal: np.ndarray,
    interim: np.ndarray,
    excluded: np.ndarray,
    n_model: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's top-``k`` (``items``/``scores``, ``(users, k)``, ``-1``/``-inf`` unfilled)
    merged with a second, small block of items the model does not know.

    ``interim`` (``m x f``) are their vectors, ``excluded`` (``users x m`` bool)
    the pairs to leave out (seen, taken down). In the merged arrays an index
    ``n_model + j`` is interim item ``j``. Returns the merged ``items``,
    ``scores`` and, per user, whether an interim item entered their top-``k``
    (the other rows are unchanged). The model's own top-``k`` is computed as
    before and left alone: one extra ``users x m`` product per batch.
    """
    k = items.shape[1]
    m = interim.shape[0]
    if m == 0 or k == 0 or not personal.any():
        return items, scores, np.zeros(items.shape[0], dtype=bool)
    extra = user_vectors @ np.asarray(interim, dtype=np.float32).T
    extra[~personal] = -np.inf
    extra[excluded] = -np.inf
    all_scores = np.concatenate([np.where(items >= 0, scores, -np.inf), extra], axis=1)
    all_items = np.concatenate(
        [items, np.broadcast_to(n_model + np.arange(m), (items.shape[0], m))], axis=1
    )
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    merged_scores = np.take_along_axis(all_scores, order, axis=1)
    merged_items = np.take_along_axis(all_items, order, axis=1)
    merged_items[~np.isfinite(merged_scores)] = -1
    entered: np.ndarray = np.asarray((merged_items >= n_model).any(axis=1))
    out_items = np.where(entered[:, None], merged_items, items)
    out_scores = np.where(entered[:, None], merged_scores, scores).astype(np.float32)
    return out_items, out_scores, entered

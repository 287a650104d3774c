"""Content vectors: a new item placed among the model's items that share its tags.

:class:`TagSpace` indexes a model version's item tags once (each tag's items
and its specificity), so that placing a catalog batch's new items costs a few
numpy operations per item rather than a pass over every tagged item in
Python: the index is kept per version by the worker
(:mod:`streams.content_start`). :func:`models.item_foldin.content_vectors`
is the same computation for a one-off call.

The rule: each model item that shares a tag with the new item weighs in with
the sum of the shared tags' specificity, ``log(N / df)`` (``N`` tagged model
items, ``df`` of them with the tag), so a tag every item has says nothing.
The weighted mean of their vectors gives the direction; its length is set to
the weighted mean length of those vectors, since averaging shrinks a mean
towards zero and a short vector would rank below every real item. When every
shared tag weighs nothing, the items sharing them count alike. A new item
whose tags no model item has gets the zero vector (it stays out of lists).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class TagSpace:
    """A model version's item tags, indexed for :meth:`vectors`."""

    def __init__(self, item_tags: Mapping[int, Sequence[str]], item_factors: np.ndarray) -> None:
        """``item_tags`` maps model item indices (rows of ``item_factors``) to their tags."""
        self._y = np.asarray(item_factors, dtype=np.float64)
        self._norms = np.linalg.norm(self._y, axis=1)
        by_tag: dict[str, list[int]] = {}
        for item, its_tags in item_tags.items():
            for tag in set(its_tags):
                by_tag.setdefault(tag, []).append(item)
        n_tagged = len(item_tags)
        self._items = {tag: np.asarray(items, dtype=np.int64) for tag, items in by_tag.items()}
        self._idf = {tag: float(np.log(n_tagged / len(items))) for tag, items in by_tag.items()}

    def vectors(self, tags: Sequence[Sequence[str]]) -> np.ndarray:
        """The float32 content vector (``len(tags) x f``) of each new item's tags."""
        n, f = self._y.shape
        out = np.zeros((len(tags), f), dtype=np.float32)
        for row, new_tags in enumerate(tags):
            shared = [t for t in set(new_tags) if t in self._items]
            if not shared:
                continue
            weight = np.zeros(n)
            hit = np.zeros(n, dtype=bool)
            for tag in shared:
                weight[self._items[tag]] += self._idf[tag]
                hit[self._items[tag]] = True
            # an item of weight 0 adds nothing to the weighted sums: left out, unless
            # every shared tag is one that every item has (then they count alike)
            items = np.flatnonzero(weight > 0)
            w = weight[items]
            if not items.size:
                items = np.flatnonzero(hit)
                w = np.ones(items.size)
            mean = w @ self._y[items] / w.sum()
            norm = np.linalg.norm(mean)
            if norm > 0:
                out[row] = mean * (w @ self._norms[items] / w.sum()) / norm
        return out

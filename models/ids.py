"""Id maps: external string ids to dense int indices and back.

ALS works on matrix rows and columns; the outside world speaks string ids. An
:class:`IdMap` is the one place that translates, so that an id unknown to a
model is an ordinary value (``-1``) callers can count and skip, never a
``KeyError`` in the middle of a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np


class IdMap:
    """A bijection between external ids and ``0..n-1``, in first-seen order.

    First-seen order (not sorted order) keeps the indices stable when a map is
    rebuilt from the same log, and keeps ``ids[i]`` the id of row ``i`` of any
    matrix built alongside the map.
    """

    __slots__ = ("_index", "ids")

    def __init__(self, ids: Sequence[str] = ()) -> None:
        self.ids: list[str] = list(ids)
        self._index: dict[str, int] = {id_: i for i, id_ in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError("IdMap ids must be unique; use IdMap.from_ids to deduplicate")

    @classmethod
    def from_ids(cls, ids: Iterable[str]) -> IdMap:
        """A map of the distinct ids, numbered in the order they first appear."""
        return cls(list(dict.fromkeys(ids)))

    def index(self, id_: str) -> int:
        """The index of ``id_``, or ``-1`` when the map does not know it."""
        return self._index.get(id_, -1)

    def indices(self, ids: Sequence[str]) -> np.ndarray:
        """The indices of ``ids`` as an int64 array, ``-1`` for each unknown id."""
        get = self._index.get
        return np.fromiter((get(i, -1) for i in ids), dtype=np.int64, count=len(ids))

    @classmethod
    def factorize(cls, ids: Sequence[str] | np.ndarray) -> tuple[IdMap, np.ndarray]:
        """The map of ``ids`` (first-seen order) and each element's index, in one pass.

        Vectorised with ``np.unique`` so that a million-row log encodes in well
        under a second; the unique values are then renumbered by first position.
        """
        arr = np.asarray(ids, dtype=str)
        if arr.size == 0:
            return cls(), np.zeros(0, dtype=np.int64)
        uniq, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return cls(uniq[order].tolist()), rank[inverse.ravel()].astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self.ids == other.ids

    def __repr__(self) -> str:
        return f"IdMap({len(self.ids)} ids)"

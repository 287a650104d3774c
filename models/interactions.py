"""The columnar interaction log: what training, splitting and evaluation read.

One row per event (a watch or a rating), kept as parallel numpy arrays with the
user and item ids encoded once through :class:`~models.ids.IdMap`. Columnar
because training on a million events must not build a million Python objects;
the per-event :class:`Interaction` tuple is the streaming worker's view of the
same data (it lives with the state record in :mod:`schemas.state`, whose
rows it is), and :mod:`models.weighting` applies one rule to both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.ids import IdMap
from schemas.state import Interaction

#: Codes of the ``kind`` column; ``KINDS[code]`` is the event type's name.
KIND_WATCH = 0
KIND_RATE = 1
KINDS = ("watch", "rate")

__all__ = ["KINDS", "KIND_RATE", "KIND_WATCH", "Interaction", "InteractionLog"]


@dataclass(frozen=True)
class InteractionLog:
    """Parallel arrays, one element per event; ``user``/``item`` index ``users``/``items``.

    ``duration_s`` is NaN where unknown (and for ratings). Row order is the
    order the events were read in; the weighting rule orders by ``ts`` itself.
    """

    users: IdMap
    items: IdMap
    user: np.ndarray  # int64
    item: np.ndarray  # int64
    kind: np.ndarray  # int8, KIND_WATCH or KIND_RATE
    value: np.ndarray  # float64
    duration_s: np.ndarray  # float64, NaN = unknown
    ts: np.ndarray  # int64, epoch ms

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("item", "kind", "value", "duration_s", "ts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"InteractionLog column {name!r} has a different length")

    @classmethod
    def from_columns(
        cls,
        user_ids: Sequence[str] | np.ndarray,
        item_ids: Sequence[str] | np.ndarray,
        kinds: Sequence[str] | np.ndarray,
        values: Sequence[float] | np.ndarray,
        durations: Sequence[float | None] | np.ndarray | None = None,
        ts: Sequence[int] | np.ndarray | None = None,
    ) -> InteractionLog:
        """Encode string-id columns; ``kinds`` are ``"watch"``/``"rate"`` names or codes.

        Missing ``ts`` numbers the rows (file order is time order); missing
        ``durations`` means unknown everywhere.
        """
        users, user = IdMap.factorize(user_ids)
        items, item = IdMap.factorize(item_ids)
        n = len(user)
        kind_arr = np.asarray(kinds)
        if kind_arr.dtype.kind in "US":
            codes = np.full(n, -1, dtype=np.int8)
            for code, name in enumerate(KINDS):
                codes[kind_arr == name] = code
            if n and codes.min() < 0:
                bad = kind_arr[codes < 0][0]
                raise ValueError(f"unknown interaction kind {bad!r}; expected one of {KINDS}")
            kind_arr = codes
        dur = (
            np.full(n, np.nan)
            if durations is None
            else np.array([np.nan if d is None else d for d in durations], dtype=np.float64)
        )
        ts_arr = np.arange(n, dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
        return cls(
            users,
            items,
            user,
            item,
            kind_arr.astype(np.int8),
            np.asarray(values, dtype=np.float64),
            dur,
            ts_arr,
        )

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> InteractionLog:
        """The log restricted to ``rows`` (a boolean mask or indices); id maps are kept.

        Keeping the maps keeps train and test of one split in the same index space.
        """
        return InteractionLog(
            self.users,
            self.items,
            self.user[rows],
            self.item[rows],
            self.kind[rows],
            self.value[rows],
            self.duration_s[rows],
            self.ts[rows],
        )

    def history(self, user_id: str) -> list[Interaction]:
        """One user's events as :class:`Interaction` tuples, in time order."""
        u = self.users.index(user_id)
        rows = np.flatnonzero(self.user == u)
        rows = rows[np.argsort(self.ts[rows], kind="stable")]
        return [
            Interaction(
                self.items.ids[self.item[r]],
                KINDS[self.kind[r]],
                float(self.value[r]),
                None if np.isnan(self.duration_s[r]) else float(self.duration_s[r]),
                int(self.ts[r]),
            )
            for r in rows
        ]

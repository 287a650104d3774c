"""Fold-in and ranking against one model version: histories in, lists out.

Pure (no I/O): built once per model version from its arrays and ids
(:func:`models.version.recommender_from_version` builds one from a stored
version), then :meth:`Recommender.rank` (what the streaming worker calls per
micro-batch) takes a batch of users' combined confidences
(:func:`models.weighting.user_confidences` with the model's own
:attr:`Recommender.weighting`) and returns every user's top-n as index arrays,
in one batched fold-in solve and one blocked matrix product for the whole
batch; :meth:`Recommender.recommend` is the same with item names, scores,
explanations and the popular fallback as Python lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import scipy.sparse as sp

from models.foldin import FoldIn, HistoryRows
from models.ids import IdMap
from models.topk import top_k
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig


@dataclass(frozen=True)
class Recommendations:
    """One batch's lists, one entry per input user, in input order."""

    items: list[list[str]]
    """Per user, best first, at most ``n`` items."""
    scores: list[list[float]]
    """The matching scores (``x_u·y_i`` for personal lists, popularity otherwise)."""
    because: list[list[str | None]]
    """Per recommended item, the history item that contributed most to its score;
    None in popular lists, where no item contributed positively, or when not asked."""
    personal: list[bool]
    """False when the user had no usable history (nothing the model knows with a
    positive confidence) and got the popular fallback."""
    unknown_items: int
    """History items the model does not know, over the whole batch (ignored)."""


@dataclass(frozen=True)
class Ranking:
    """One batch's personal top-n as arrays over model item indices, one row per input user."""

    items: np.ndarray
    """``(users, n)`` int64, best first; ``-1`` for slots that could not be filled and
    throughout the rows of users who are not ``personal``."""
    scores: np.ndarray
    """``(users, n)`` float32 scores ``x_u·y_i`` (``-inf`` where ``items`` is -1)."""
    because: np.ndarray
    """``(users, n)`` int64: the history item that contributed most, ``-1`` for none."""
    personal: np.ndarray
    """bool per user; False when the user had no usable history (:meth:`Recommender.fallback`)."""
    unknown_items: int
    """History items the model does not know, over the whole batch (ignored)."""
    history: HistoryRows
    """The batch's histories over model item indices (known items, non-zero confidence)."""
    excluded: HistoryRows | None
    """Per user, the model indices left out of their list (confidences unused); None
    when nothing is."""
    vectors: np.ndarray | None = None
    """``(users, f)`` float32: each personal user's folded-in vector (zeros for the
    others), for scoring items beyond the model's (:mod:`models.item_foldin`)."""

    def seen(self, user: int) -> np.ndarray:
        """Model indices left out of row ``user``'s list: :meth:`Recommender.fallback` leaves
        them out too."""
        rows = self.excluded
        if rows is None:
            return np.zeros(0, dtype=np.int64)
        return rows.indices[rows.indptr[user] : rows.indptr[user + 1]]


class Recommender:
    """Fold-in and ranking against one model version; safe to share between calls."""

    def __init__(
        self,
        version_id: str,
        item_ids: IdMap,
        item_factors: np.ndarray,
        regularization: float,
        alpha: float,
        popular_items: Sequence[str] = (),
        popular_scores: Sequence[float] = (),
        num_threads: int = 1,
        weighting: WeightingConfig = DEFAULT_WEIGHTING,
        user_gram: np.ndarray | None = None,
    ) -> None:
        self.version_id = version_id
        #: The weighting rule the model was trained with; histories passed to
        #: :meth:`rank` and :meth:`recommend` must be combined with the same rule.
        self.weighting = weighting
        #: ``XᵀX + λI`` of the trained user vectors, for the item fold-in of items this
        #: version does not know (models.item_foldin); None when the version lacks it.
        self.user_gram = user_gram
        self.item_ids = item_ids
        self.foldin = FoldIn(item_factors, regularization, alpha)
        self.num_threads = num_threads
        self._names = np.array(item_ids.ids, dtype=object)
        self._popular_items = list(popular_items)
        self._popular_scores = [float(s) for s in popular_scores]

    def popular(self, n: int) -> tuple[list[str], list[float]]:
        """The ``n`` most popular items and their scores, best first."""
        return self._popular_items[:n], self._popular_scores[:n]

    def encode(self, histories: Sequence[Mapping[str, float]]) -> tuple[HistoryRows, int]:
        """Histories as CSR rows over model item indices, and the number of unknown items.

        Unknown items and zero confidences are left out (a stored 0 would mean
        "less weight than unseen" to the fold-in, see :mod:`models.weighting`).
        """
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        keys = [item for h in histories for item in h]
        conf = np.fromiter(
            (c for h in histories for c in h.values()), dtype=np.float32, count=len(keys)
        )
        idx = self.item_ids.indices(keys)
        known = idx >= 0
        keep = known & (conf != 0)
        owner = np.repeat(np.arange(len(histories)), lengths)[keep]
        indptr = np.zeros(len(histories) + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=len(histories)), out=indptr[1:])
        return HistoryRows(indptr, idx[keep], conf[keep]), int((~known).sum())

    def rank(
        self,
        histories: Sequence[Mapping[str, float]],
        n: int,
        exclude_seen: bool = True,
        explain: bool = True,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> Ranking:
        """The personal top-``n`` of a batch as index arrays (see :class:`Ranking`).

        :meth:`recommend` is this plus item names and the popular fallback; a
        caller that encodes many lists at once (the streaming worker) works on
        the arrays directly instead of 150 Python objects per user.

        ``exclude``, one sequence of item ids per user, leaves those items out
        of that user's list too, whatever ``exclude_seen``: the worker passes
        the items a user interacted with that ``histories`` do not hold (the
        history cap dropped them, or their confidence is 0). Ids the model does
        not know are ignored.
        """
        rows, unknown = self.encode(histories)
        excluded = self._excluded(rows, exclude_seen, exclude)
        n_users = rows.n_users
        positive = np.bincount(
            np.repeat(np.arange(n_users), rows.lengths()),
            weights=rows.confidences > 0,
            minlength=n_users,
        )
        personal = positive > 0
        users = np.flatnonzero(personal)
        k = min(n, len(self.item_ids))
        items = np.full((n_users, k), -1, dtype=np.int64)
        scores = np.full((n_users, k), -np.inf, dtype=np.float32)
        because = np.full((n_users, k), -1, dtype=np.int64)
        vectors = np.zeros((n_users, self.foldin.factors), dtype=np.float32)
        if users.size:
            sub = _select(rows, users)
            seen = None
            if excluded is not None:
                mask = _select(excluded, users)
                seen = sp.csr_matrix(
                    (np.ones(mask.indices.size, dtype=np.float32), mask.indices, mask.indptr),
                    shape=(users.size, len(self.item_ids)),
                )
            fold = self.foldin.fold(sub, explain=explain)
            top, top_scores = top_k(
                fold.vectors,
                self.foldin.item_factors,
                n,
                exclude=seen,
                num_threads=self.num_threads,
            )
            items[users], scores[users] = top, top_scores
            vectors[users] = fold.vectors
            if explain:
                because[users] = fold.because(top)
        return Ranking(items, scores, because, personal, unknown, rows, excluded, vectors)

    def _excluded(
        self, rows: HistoryRows, exclude_seen: bool, extra: Sequence[Sequence[str]] | None
    ) -> HistoryRows | None:
        """Per user, the model indices to leave out: the history's (when ``exclude_seen``)
        and those of ``extra``'s ids, as CSR rows (duplicates allowed; a mask is a mask)."""
        n_users = rows.n_users
        if extra is not None and len(extra) != n_users:
            raise ValueError(f"exclude has {len(extra)} entries for {n_users} users")
        lengths = np.fromiter(
            (len(e) for e in extra or ()), dtype=np.int64, count=0 if extra is None else n_users
        )
        if extra is None or not lengths.any():
            return rows if exclude_seen else None
        idx = self.item_ids.indices([item for e in extra for item in e])
        owner = np.repeat(np.arange(n_users), lengths)
        known = idx >= 0
        owner, idx = owner[known], idx[known]
        if exclude_seen:
            owner = np.concatenate([np.repeat(np.arange(n_users), rows.lengths()), owner])
            idx = np.concatenate([rows.indices, idx])
        order = np.argsort(owner, kind="stable")
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=n_users), out=indptr[1:])
        return HistoryRows(indptr, idx[order], np.ones(idx.size, dtype=np.float32))

    def fallback(self, seen: Sequence[int] | np.ndarray, n: int) -> tuple[list[str], list[float]]:
        """The popular list minus the items of model indices ``seen``: a user without history."""
        skip = set(self._names[np.asarray(seen, dtype=np.int64)])
        candidates = zip(self._popular_items, self._popular_scores, strict=True)
        picked = list(islice(((i, s) for i, s in candidates if i not in skip), n))
        return [item for item, _ in picked], [s for _, s in picked]

    def recommend(
        self,
        histories: Sequence[Mapping[str, float]],
        n: int,
        exclude_seen: bool = True,
        explain: bool = True,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> Recommendations:
        """Top-``n`` lists for a batch of users (see :class:`Recommendations`).

        Seen items (every known history item, disliked ones included) are
        excluded when ``exclude_seen``, and ``exclude``'s items always (see
        :meth:`rank`), from popular fallbacks too. With ``explain`` off,
        ``because`` holds None throughout and the work of the explanations
        (about a third of a batch's time at 150 items) is skipped.
        """
        ranking = self.rank(histories, n, exclude_seen, explain, exclude)
        # one conversion per array for the whole batch; unfilled slots (-1) trail each row
        names = self._names[np.maximum(ranking.items, 0)].tolist()
        values = ranking.scores.astype(np.float64).tolist()
        why_names = self._names[np.maximum(ranking.because, 0)]
        why_names[ranking.because < 0] = None
        why = why_names.tolist()
        filled = (ranking.items >= 0).sum(axis=1).tolist()
        n_users = len(ranking.personal)
        items: list[list[str]] = [[] for _ in range(n_users)]
        scores: list[list[float]] = [[] for _ in range(n_users)]
        because: list[list[str | None]] = [[] for _ in range(n_users)]
        for u in np.flatnonzero(ranking.personal).tolist():
            count = filled[u]
            items[u], scores[u], because[u] = names[u][:count], values[u][:count], why[u][:count]
        for row in np.flatnonzero(~ranking.personal).tolist():
            items[row], scores[row] = self.fallback(ranking.seen(row), n)
            because[row] = [None] * len(items[row])
        return Recommendations(
            items, scores, because, ranking.personal.tolist(), ranking.unknown_items
        )


def _select(rows: HistoryRows, users: np.ndarray) -> HistoryRows:
    """The CSR rows of ``users`` only (in that order)."""
    starts, ends = rows.indptr[users], rows.indptr[users + 1]
    lens = ends - starts
    indptr = np.zeros(users.size + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    take = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])
    return HistoryRows(indptr, rows.indices[take], rows.confidences[take])

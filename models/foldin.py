"""Batched fold-in: user vectors for many users from their histories, in one solve.

Against fixed item factors ``Y`` (``n_items x f``), implicit's ALS user update
for user ``u`` with stored confidences ``c_uj`` (already multiplied by
``alpha``) is the least-squares solution of ``A_u x_u = b_u`` with

    A_u = YᵀY + λI + Σ_j (|c_uj| - 1) y_j y_jᵀ
    b_u = Σ_{j: c_uj > 0} c_uj y_j

(implicit's ``_least_squares``: a negative ``c`` is "preference 0 with
confidence ``|c|``", so it only adds weight to ``A``; a user with no stored
items gets the zero vector). ``YᵀY + λI`` is shared by every user, so it is
computed once per model (:class:`FoldIn`); per user only the ``|history|``
rank-one terms remain, gathered for a whole batch into one batched matrix
product and one batched ``np.linalg.solve``. Users are grouped by history
length so that padding stays small.

Explanations (like implicit's ``explain``): ``x_u = A_u⁻¹ b_u = Σ_j W_u[:, j]``
with ``W_u = A_u⁻¹ [c_uj y_j]_j`` (positive ``c`` only), so an item's score
``x_u·y_i`` decomposes into per-history-item contributions ``W_u[:, j]·y_i``.
Solving for ``W_u`` instead of ``b_u`` gives the vector and the decomposition
from the same factorisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Users solved together; bounds the memory of the gathered (users x history x f) block.
CHUNK_USERS = 256


@dataclass(frozen=True)
class HistoryRows:
    """A batch of histories in CSR form over model item indices.

    ``indices[indptr[u]:indptr[u + 1]]`` are user ``u``'s items and ``confidences``
    the matching combined confidences (before ``alpha``), as
    :func:`models.weighting.user_confidences` produced them.
    """

    indptr: np.ndarray  # int64, n_users + 1
    indices: np.ndarray  # int64
    confidences: np.ndarray  # float32

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


@dataclass
class FoldResult:
    """User vectors of a batch, plus what is needed to explain their scores.

    ``vectors`` has one float32 row per user (zeros for a user without stored
    items). ``_parts`` holds, per chunk of users solved together, the user
    positions, their padded history item indices and ``W`` (see the module
    docstring); it is empty unless the fold-in was asked to explain.
    """

    vectors: np.ndarray
    _parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def because(self, item_factors: np.ndarray, top: np.ndarray) -> np.ndarray:
        """For each ``top[u, r]`` item, the history item that contributed most to its score.

        Returns model item indices shaped like ``top``; ``-1`` where no history
        item contributed positively (or ``top`` is ``-1``), or when the fold-in
        was not asked to explain.
        """
        out = np.full(top.shape, -1, dtype=np.int64)
        for users, hist, w in self._parts:
            targets = top[users]  # (b, n)
            y = item_factors[np.maximum(targets, 0)].astype(np.float64)  # (b, n, f)
            contrib = y @ w  # (b, n, H)
            contrib[np.broadcast_to((hist < 0)[:, None, :], contrib.shape)] = -np.inf
            best = contrib.argmax(axis=2)
            best_val = np.take_along_axis(contrib, best[..., None], axis=2)[..., 0]
            picked = np.take_along_axis(hist, best, axis=1)
            picked[(best_val <= 0) | (targets < 0)] = -1
            out[users] = picked
        return out


class FoldIn:
    """Fold-in against one model's item factors; ``YᵀY + λI`` is computed once here."""

    def __init__(self, item_factors: np.ndarray, regularization: float, alpha: float) -> None:
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        y64 = self.item_factors.astype(np.float64)
        factors = y64.shape[1]
        self.gram = y64.T @ y64 + self.regularization * np.eye(factors)

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])

    def user_vectors(self, rows: HistoryRows) -> np.ndarray:
        """The float32 user vectors (``n_users x f``) of a batch of histories."""
        return self.fold(rows, explain=False).vectors

    def fold(self, rows: HistoryRows, explain: bool = False) -> FoldResult:
        """Solve every user of ``rows``; with ``explain`` keep the score decomposition.

        Solved in float64: implicit solves in float32, and the extra precision
        keeps ours the more accurate of the two on ill-conditioned users.
        """
        n, f = rows.n_users, self.factors
        vectors = np.zeros((n, f), dtype=np.float32)
        result = FoldResult(vectors)
        lengths = rows.lengths()
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]  # users without stored items keep the zero vector
        for start in range(0, len(order), CHUNK_USERS):
            users = order[start : start + CHUNK_USERS]
            hist, conf = self._padded(rows, users, int(lengths[users].max()))
            y = self.item_factors[np.maximum(hist, 0)].astype(np.float64)  # (b, H, f)
            c = conf * self.alpha
            weight = np.where(hist >= 0, np.abs(c) - 1.0, 0.0)
            a = self.gram + np.matmul(y.transpose(0, 2, 1), y * weight[..., None])
            positive = np.where((hist >= 0) & (c > 0), c, 0.0)
            if explain:
                w = np.linalg.solve(a, (y * positive[..., None]).transpose(0, 2, 1))  # (b, f, H)
                vectors[users] = w.sum(axis=2)
                result._parts.append((users, hist, w))
            else:
                b = np.einsum("bh,bhf->bf", positive, y)
                vectors[users] = np.linalg.solve(a, b[..., None])[..., 0]
        return result

    @staticmethod
    def _padded(rows: HistoryRows, users: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``users``' histories as ``(b, width)`` arrays, padded with item ``-1`` / confidence 0."""
        starts = rows.indptr[users]
        lens = rows.indptr[users + 1] - starts
        col = np.arange(width)
        valid = col[None, :] < lens[:, None]
        src = np.where(valid, starts[:, None] + col[None, :], 0)
        hist = np.where(valid, rows.indices[src] if rows.indices.size else 0, -1)
        conf = np.where(valid, rows.confidences[src] if rows.confidences.size else 0, 0.0)
        return hist.astype(np.int64), conf.astype(np.float64)

"""Batched fold-in: user vectors for many users from their histories, in one solve.

Against fixed item factors ``Y`` (``n_items x f``), implicit's ALS user update
for a user with stored confidences ``c_j`` (already multiplied by ``alpha``)
is the solution of ``A x = b`` with

    A = G + Σ_j d_j y_j y_jᵀ,   G = YᵀY + λI,   d_j = |c_j| - 1
    b = Σ_j p_j y_j,            p_j = c_j if c_j > 0 else 0

(implicit's ``_least_squares``: a negative ``c`` is "preference 0 with
confidence ``|c|``", so it only adds weight to ``A``; a user with no stored
items gets the zero vector).

``G`` is shared by every user, so :class:`FoldIn` factors it once per model,
``G = L Lᵀ``, and whitens the items: ``v_i = L⁻¹ y_i``. In that basis the
system becomes ``A' u = V_hᵀ p`` with ``A' = I + V_hᵀ D V_h`` and ``x = L⁻ᵀ u``
(``V_h``: the history's rows of ``V``; ``D = diag(d)``). For a history not much
longer than the factor count, the push-through (Woodbury) identity
``A'⁻¹ V_hᵀ = V_hᵀ M⁻¹`` with the small ``H x H`` matrix ``M = I + D V_h V_hᵀ``
gives

    u = V_hᵀ M⁻¹ p

at ``O(H²f + H³)`` per user instead of ``O(Hf² + f³)`` (histories in a
stream are mostly short); histories well beyond ``f`` items solve ``A'``
(``f x f``) directly.
Either way a whole batch goes through batched matrix products and one batched
``np.linalg.solve``; users are grouped by history length so padding
(``d = p = 0``, which leaves the solution unchanged) stays small. The final
``x = L⁻ᵀ u`` is one matrix product for the batch.

Explanations: ``x·y_i = u·v_i = Σ_j v_iᵀ W[:, j]`` with ``W = A'⁻¹ V_hᵀ diag(p)``,
so an item's score splits into per-history-item contributions (implicit's
``explain``); ``W`` comes from the same factorisation as ``u``. Each
contribution is the history item's preference ``p_j`` times how much one unit
of it lifts item ``i``, ``v_iᵀ A'⁻¹ v_j``; the item named as "because" is the
one whose contribution per unit of preference is largest. Ranked by the raw
contribution, the user's strongest item (a 5-star rating among watches) won
almost every row whatever the row was (one item explained 58 of a visitor's
100, issue 26), since its ``p_j`` scales every one of its contributions alike;
per unit, each recommendation is explained by the history item that points to
it most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Most users solved together; bounds the memory of the gathered (users x history x f) block.
CHUNK_USERS = 256
#: Users are grouped so that, within a group, the longest history is at most this
#: factor longer than the shortest: padding then wastes at most ~25% of the work.
LENGTH_STEP = 1.25
#: Histories up to this many times the factor count take the H x H (Woodbury) path;
#: measured crossover with the f x f solve at 64 factors (``loadtests/bench_models.py``).
WOODBURY_MAX_RATIO = 1.25


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
    positions, their padded history item indices and ``W`` per unit of
    preference, ``W diag(p)⁻¹`` (see the module docstring); it is empty unless
    the fold-in was asked to explain.
    """

    vectors: np.ndarray
    _basis: np.ndarray  # the whitened item vectors V (float32)
    _parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def because(self, top: np.ndarray) -> np.ndarray:
        """For each ``top[u, r]`` item, the history item whose contribution to its score is
        largest per unit of the user's preference for it (see the module docstring).

        Returns model item indices shaped like ``top``; ``-1`` where no history
        item contributed positively (or ``top`` is ``-1``), or when the fold-in
        was not asked to explain.
        """
        out = np.full(top.shape, -1, dtype=np.int64)
        for users, hist, w in self._parts:
            targets = top[users]  # (b, n)
            b, n = targets.shape
            # padding columns of W are exactly 0 (p = 0 there), so they never beat a
            # positive contribution and need no mask
            gathered = np.take(self._basis, np.maximum(targets, 0), axis=0)  # (b, n, f)
            contrib = np.matmul(gathered, w).reshape(b * n, -1)  # (b n, H)
            best = contrib.argmax(axis=1)
            best_val = contrib[np.arange(b * n), best].reshape(b, n)
            picked = hist[np.repeat(np.arange(b), n), best].reshape(b, n)
            picked[(best_val <= 0) | (targets < 0)] = -1
            out[users] = picked
        return out


class FoldIn:
    """Fold-in against one model's item factors; ``G`` is factored once, here."""

    def __init__(self, item_factors: np.ndarray, regularization: float, alpha: float) -> None:
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        y = self.item_factors.astype(np.float64)
        self.gram = y.T @ y + self.regularization * np.eye(y.shape[1])
        chol = np.linalg.cholesky(self.gram)
        # L⁻¹ by a triangular solve; x = L⁻ᵀ u is then u @ L⁻¹ for a batch of rows
        self._l_inv = np.linalg.solve(chol, np.eye(y.shape[1]))
        self._v = np.ascontiguousarray((y @ self._l_inv.T).astype(np.float32))

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])

    def user_vectors(self, rows: HistoryRows) -> np.ndarray:
        """The float32 user vectors (``n_users x f``) of a batch of histories."""
        return self.fold(rows, explain=False).vectors

    def fold(self, rows: HistoryRows, explain: bool = False) -> FoldResult:
        """Solve every user of ``rows``; with ``explain`` keep the score decomposition.

        The small systems are solved in float64 (implicit solves in float32).
        """
        n, f = rows.n_users, self.factors
        whitened = np.zeros((n, f), dtype=np.float64)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        lengths = rows.lengths()
        for users in _chunks(lengths):
            hist, conf = _padded(rows, users, int(lengths[users].max()))
            valid = hist >= 0
            c = conf * self.alpha
            d = np.where(valid, np.abs(c) - 1.0, 0.0)
            p = np.where(valid & (c > 0), c, 0.0)
            v = self._v[np.maximum(hist, 0)]  # (b, H, f)
            short = hist.shape[1] <= WOODBURY_MAX_RATIO * f
            solve = self._woodbury if short else self._direct
            whitened[users], per_unit = solve(v, d, p, explain)
            if per_unit is not None:
                parts.append((users, hist, per_unit))
        vectors = (whitened @ self._l_inv).astype(np.float32)
        return FoldResult(vectors, self._v, parts)

    @staticmethod
    def _woodbury(
        v: np.ndarray, d: np.ndarray, p: np.ndarray, explain: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``u = V_hᵀ M⁻¹ p`` with ``M = I + D V_h V_hᵀ`` (``H x H``).

        With ``explain``, also ``W`` per unit of preference, ``V_hᵀ M⁻¹`` with the
        columns of items without a positive preference zeroed (float32): one
        inverse of ``M`` gives both, and ``u`` is then ``M⁻¹ p`` through it.
        """
        vt = v.transpose(0, 2, 1)  # (b, f, H), float32
        m = d[:, :, None] * np.matmul(v, vt).astype(np.float64)
        m += np.eye(v.shape[1])
        if explain:
            m_inv = np.linalg.inv(m)
            s = np.matmul(m_inv, p[..., None]).astype(np.float32)
            per_unit = np.matmul(vt, (m_inv * (p > 0)[:, None, :]).astype(np.float32))
            return np.matmul(vt, s)[..., 0], per_unit
        s = np.linalg.solve(m, p[..., None]).astype(np.float32)
        return np.matmul(vt, s)[..., 0], None

    @staticmethod
    def _direct(
        v: np.ndarray, d: np.ndarray, p: np.ndarray, explain: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``u = A'⁻¹ V_hᵀ p`` with ``A' = I + V_hᵀ D V_h`` (``f x f``), for long histories.

        With ``explain``, also ``W`` per unit of preference, ``A'⁻¹ V_hᵀ`` with the
        columns of items without a positive preference zeroed (float32).
        """
        v64 = v.astype(np.float64)
        vt = v64.transpose(0, 2, 1)  # (b, f, H)
        a = np.matmul(vt, v64 * d[..., None])
        a += np.eye(v.shape[2])
        if explain:
            per_unit = np.linalg.solve(a, vt * (p > 0)[:, None, :])  # (b, f, H)
            return np.matmul(per_unit, p[..., None])[..., 0], per_unit.astype(np.float32)
        return np.linalg.solve(a, np.matmul(vt, p[..., None]))[..., 0], None


def _padded(rows: HistoryRows, users: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``users``' histories as ``(b, width)`` arrays, padded with item ``-1`` / confidence 0."""
    starts = rows.indptr[users]
    lens = rows.indptr[users + 1] - starts
    col = np.arange(width)
    valid = col[None, :] < lens[:, None]
    src = np.where(valid, starts[:, None] + col[None, :], 0)
    hist = np.where(valid, rows.indices[src], -1)
    conf = np.where(valid, rows.confidences[src], 0.0)
    return hist.astype(np.int64), conf.astype(np.float64)


def _chunks(lengths: np.ndarray) -> list[np.ndarray]:
    """Users with items, grouped by similar history length, at most CHUNK_USERS per group.

    Users without stored items are in no group: they keep the zero vector.
    """
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]
    bucket = np.floor(np.log(lengths[order]) / np.log(LENGTH_STEP)).astype(np.int64)
    cuts = np.flatnonzero(np.diff(bucket)) + 1
    out: list[np.ndarray] = []
    for group in np.split(order, cuts):
        out.extend(group[i : i + CHUNK_USERS] for i in range(0, group.size, CHUNK_USERS))
    return out

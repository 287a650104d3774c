"""ALS training with implicit: the configuration and one function that fits a model.

implicit is the well-kept, native (and CUDA) implementation of Hu, Koren and
Volinsky's implicit-feedback ALS; this module only fixes how freshrec calls it:
user x item CSR input, a seed for determinism, BLAS limited to one thread
(implicit parallelises over users itself, and a threaded BLAS underneath makes
it many times slower), and float32 factors out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ALSConfig:
    """Hyperparameters of one ALS fit; stored with each model version."""

    factors: int = 32
    """Dimension of the user and item vectors. More factors fit more taste structure
    but need more data per user, and cost ``O(f²)`` per fold-in and ``O(f)`` per score.
    32: with the heavy regularization below, more factors scored no better on
    validation splits of MovieLens-like synthetic ratings (``generate_ratings``,
    100k to 300k ratings) and fold-in costs a quarter of 64's."""
    regularization: float = 30.0
    """L2 penalty λ on every vector (implicit does not scale it by the number of
    interactions); the fold-in uses the same value, so it is stored with the model.
    30, not implicit's 0.01: on sparse, popularity-skewed rating data weakly
    regularised models overfit and rank below the popular list, and λ = 30 (with
    alpha 1) ranked best or level-best on validation splits of every synthetic
    profile measured (MovieLens-like ratings at three sizes and the planted watch
    log). Much higher λ collapses the factors to a popularity ranking."""
    alpha: float = 1.0
    """Multiplier of the stored confidences: a stored ``c`` weighs ``alpha·c`` against
    the weight 1 of an unobserved item. Higher trusts the observed items more.
    1: a 4-star rating then weighs 4 against an unseen item's 1; the best λ grows
    with alpha, and 1 with λ = 30 scored best in the same measurements."""
    iterations: int = 15
    """Full alternations (users then items); implicit's CG solver converges in 10-20,
    and validation scores moved by under 2% between 8 and 25 at the defaults."""
    seed: int = 42
    """Seed of the random initial factors; the same data, config and seed give the
    same factors on the CPU (updates within a half-step are independent of thread order)."""
    use_gpu: bool | None = None
    """Train with implicit's CUDA implementation; None means "when CUDA is available"."""
    num_threads: int = 1
    """Threads implicit uses on the CPU; 0 means one per core. One by default, so a
    training job does not take every core of a machine it shares with workers."""

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ValueError("ALSConfig.factors and iterations must be at least 1")
        if self.regularization < 0 or self.alpha <= 0:
            raise ValueError("ALSConfig.regularization must be >= 0 and alpha > 0")
        if self.num_threads < 0:
            raise ValueError("ALSConfig.num_threads must be >= 0 (0 = one per core)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ALSConfig:
        """Rebuild from :meth:`as_dict` output, ignoring keys that are not fields."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ALSFactors:
    """A fitted model: float32 ``user_factors`` (users x f) and ``item_factors`` (items x f)."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    config: ALSConfig
    device: str  # "cpu" or "gpu"


def gpu_available() -> bool:
    """Whether implicit was built with CUDA and sees a GPU."""
    import implicit.gpu

    return bool(implicit.gpu.HAS_CUDA)


def train(
    user_items: sp.csr_matrix,
    cfg: ALSConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> ALSFactors:
    """Fit ALS on a user x item confidence matrix (see :mod:`models.weighting`).

    ``progress`` is told (iterations done, iterations) after each iteration:
    a fit of a million interactions takes tens of seconds, and the retrain
    shows it as a bar on a terminal. ``checkpoint`` is given (iterations done,
    user factors, item factors) after each iteration, so a search can score a
    fit part way and stop it (an exception it raises ends the fit and is the
    caller's): the tuning's pruner (:mod:`models.tuning`).
    """
    import implicit.als

    cfg = cfg or ALSConfig()
    iterations = cfg.iterations

    def done(iteration: int, _seconds: float, _loss: float | None) -> None:
        if progress is not None:
            progress(iteration + 1, iterations)
        if checkpoint is not None:
            users, items = model.user_factors, model.item_factors
            if use_gpu:  # implicit's device matrices
                users, items = users.to_numpy(), items.to_numpy()
            checkpoint(iteration + 1, np.asarray(users), np.asarray(items))

    use_gpu = gpu_available() if cfg.use_gpu is None else cfg.use_gpu
    matrix = sp.csr_matrix(user_items, dtype=np.float32)
    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            iterations=cfg.iterations,
            random_state=cfg.seed,
            use_gpu=use_gpu,
            num_threads=cfg.num_threads,
        )
        watched = progress is not None or checkpoint is not None
        model.fit(matrix, show_progress=False, callback=done if watched else None)
        if use_gpu:
            model = model.to_cpu()
    log.debug(  # a tuning search fits dozens: one line each would bury everything else
        "trained ALS on %d users x %d items (%d stored) on %s",
        matrix.shape[0],
        matrix.shape[1],
        matrix.nnz,
        "gpu" if use_gpu else "cpu",
    )
    return ALSFactors(
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
        cfg,
        "gpu" if use_gpu else "cpu",
    )

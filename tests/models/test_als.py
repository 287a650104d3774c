from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.als import ALSConfig, gpu_available, train
from models.synthetic import generate
from models.weighting import confidence_matrix


@pytest.fixture(scope="module")
def matrix() -> sp.csr_matrix:
    return confidence_matrix(generate(300, 80, 6000, factors=4, seed=4).log)


def test_deterministic_with_a_seed(matrix: sp.csr_matrix) -> None:
    cfg = ALSConfig(factors=8, iterations=5, seed=7, use_gpu=False)
    a, b = train(matrix, cfg), train(matrix, cfg)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    c = train(matrix, ALSConfig(factors=8, iterations=5, seed=8, use_gpu=False))
    assert not np.array_equal(a.item_factors, c.item_factors)
    assert a.item_factors.shape == (80, 8) and a.user_factors.shape == (300, 8)
    assert a.item_factors.dtype == np.float32 and a.device == "cpu"


def test_same_factors_with_more_threads(matrix: sp.csr_matrix) -> None:
    one = train(matrix, ALSConfig(factors=8, iterations=3, num_threads=1, use_gpu=False))
    two = train(matrix, ALSConfig(factors=8, iterations=3, num_threads=2, use_gpu=False))
    np.testing.assert_allclose(one.item_factors, two.item_factors, rtol=1e-5, atol=1e-6)


def test_config_round_trip_and_validation() -> None:
    cfg = ALSConfig(factors=16, alpha=3.0)
    assert ALSConfig.from_dict(cfg.as_dict() | {"device": "cpu"}) == cfg
    for bad in ({"factors": 0}, {"alpha": 0.0}, {"regularization": -1.0}, {"num_threads": -1}):
        with pytest.raises(ValueError):
            ALSConfig(**bad)
    assert isinstance(gpu_available(), bool)


def test_a_checkpoint_sees_each_iterations_factors_and_can_stop_the_fit(
    matrix: sp.csr_matrix,
) -> None:
    """The tuning's pruner scores a fit part way (issue 25) through ``checkpoint``."""
    cfg = ALSConfig(factors=8, iterations=4, use_gpu=False)
    seen: list[tuple[int, tuple[int, ...]]] = []
    done = train(matrix, cfg, checkpoint=lambda n, u, i: seen.append((n, u.shape + i.shape)))
    assert seen == [(n, (300, 8, 80, 8)) for n in (1, 2, 3, 4)]
    np.testing.assert_array_equal(done.user_factors, train(matrix, cfg).user_factors)

    class Stop(Exception):
        pass

    def stop_at_two(n: int, _u: np.ndarray, _i: np.ndarray) -> None:
        if n == 2:
            raise Stop

    with pytest.raises(Stop):
        train(matrix, cfg, checkpoint=stop_at_two)

"""Shared fixtures of the models tests: one small trained synthetic model per session."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest

from models.als import ALSConfig, ALSFactors, train
from models.synthetic import SyntheticData, generate
from models.version import ModelVersion
from models.weighting import confidence_matrix
from tests.conftest import model_version


@pytest.fixture(scope="session")
def synth() -> SyntheticData:
    return generate(n_users=1500, n_items=400, n_interactions=50_000, factors=8, seed=3)


@pytest.fixture(scope="session")
def als(synth: SyntheticData) -> ALSFactors:
    return train(confidence_matrix(synth.log), ALSConfig(factors=16, iterations=12, num_threads=1))


@pytest.fixture(scope="session")
def version(synth: SyntheticData, als: ALSFactors) -> ModelVersion:
    return model_version(synth.log, als.item_factors, als.config.as_dict(), popular=200)

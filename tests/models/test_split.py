from __future__ import annotations

import numpy as np
import pytest

from models.split import last_n_split, stratified_split


def test_stratified_split_by_hand() -> None:
    # np.random.seed(42); rand(7) = .3745 .9507 .7320 .5987 .15602 .15599 .0581
    # group 1 (rows 0-3) by draw: rows 0, 3, 2, 1; round(0.75 * 4) = 3 -> rows 0, 3, 2 train
    # group 2 (rows 4, 5): round(1.5) = 2 (half to even) -> both train
    # group 3 (row 6): round(0.75) = 1 -> train
    train, test = stratified_split(np.array([1, 1, 1, 1, 2, 2, 3]), 0.75, 42)
    assert train.tolist() == [0, 2, 3, 4, 5, 6]
    assert test.tolist() == [1]


def test_rounding_is_half_to_even() -> None:
    group = np.zeros(10, dtype=np.int64)
    assert len(stratified_split(group, 0.25, 1)[0]) == 2  # round(2.5) = 2
    assert len(stratified_split(group, 0.35, 1)[0]) == 4  # round(3.5) = 4
    assert len(stratified_split(np.zeros(2), 0.25, 1)[0]) == 0  # round(0.5) = 0


def test_stratified_split_is_a_partition_and_stratified() -> None:
    rng = np.random.default_rng(0)
    group = rng.integers(0, 50, 5000)
    train, test = stratified_split(group, 0.75, 42)
    assert np.array_equal(np.sort(np.r_[train, test]), np.arange(5000))
    for g in range(50):
        n = int((group == g).sum())
        assert int((group[train] == g).sum()) == int(np.round(0.75 * n))
    again = stratified_split(group, 0.75, 42)
    assert np.array_equal(again[0], train)
    assert not np.array_equal(stratified_split(group, 0.75, 7)[0], train)
    with pytest.raises(ValueError):
        stratified_split(group, 1.0)


def test_last_n_split() -> None:
    user = np.array([0, 0, 0, 1, 1, 2, 0])
    ts = np.array([5, 1, 9, 3, 3, 1, 9])
    train, test = last_n_split(user, ts, 1)
    # user 0: ts 9 twice -> the later row (6) is test; user 1: tie at 3 -> row 4;
    # user 2 has one event and stays in training
    assert test.tolist() == [4, 6]
    assert train.tolist() == [0, 1, 2, 3, 5]
    _, test2 = last_n_split(user, ts, 2)
    assert test2.tolist() == [2, 6]  # user 1 has only 2 events: kept whole
    with pytest.raises(ValueError):
        last_n_split(user, ts, 0)

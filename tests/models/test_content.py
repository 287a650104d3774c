"""models.content: the indexed tag space gives the content vectors of the plain rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.content import TagSpace


def _by_the_rule(
    tags: Sequence[Sequence[str]], item_tags: Mapping[int, Sequence[str]], y: np.ndarray
) -> np.ndarray:
    """The module doc's rule, one new item and one model item at a time."""
    n_tagged = len(item_tags)
    df: dict[str, int] = {}
    for its in item_tags.values():
        for tag in set(its):
            df[tag] = df.get(tag, 0) + 1
    out = np.zeros((len(tags), y.shape[1]))
    for row, new in enumerate(tags):
        weights = {
            item: sum(np.log(n_tagged / df[t]) for t in set(new) & set(its))
            for item, its in item_tags.items()
            if set(new) & set(its)
        }
        if not weights:
            continue
        w = np.array(list(weights.values()))
        if w.sum() <= 0:
            w = np.ones_like(w)
        vectors = y[list(weights)]
        mean = w @ vectors / w.sum()
        length = w @ np.linalg.norm(vectors, axis=1) / w.sum()
        out[row] = mean / np.linalg.norm(mean) * length
    return out


def test_the_indexed_space_gives_the_rules_vectors_on_random_tags() -> None:
    rng = np.random.default_rng(5)
    y = rng.standard_normal((300, 8))
    vocabulary = [f"t{i}" for i in range(12)] + ["all"]
    item_tags = {
        i: [*rng.choice(vocabulary[:-1], size=int(rng.integers(1, 4))).tolist(), "all"]
        for i in range(0, 300, 1)
        if i % 7  # some model items have no tags at all
    }
    new = [rng.choice(vocabulary, size=int(rng.integers(1, 4))).tolist() for _ in range(40)] + [
        ["all"],
        ["nowhere"],
        [],
    ]
    got = TagSpace(item_tags, y).vectors(new)
    np.testing.assert_allclose(got, _by_the_rule(new, item_tags, y), rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    assert not got[-2:].any()


def test_a_space_without_tagged_items_places_nothing() -> None:
    assert not TagSpace({}, np.ones((3, 2))).vectors([["a"], []]).any()

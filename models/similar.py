"""Similar items: every item's nearest neighbours by the model's item factors (cosine).

Computed for a whole model version at once when it is published: the factors
are normalised to unit length, and the blocked products and top-k of
:func:`models.topk.top_k` (one BLAS product per block of items against all of
them, then the thresholded partial sort) pick each item's best ``n`` other
items, with the item itself masked. No loop per item: ``loadtests/bench_items.py``
measures the whole computation against the matrix product alone.

An item whose vector is zero (no signal) is similar to nothing in particular:
its cosines are all 0 and its list is the first items by index, at score 0.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.topk import top_k


def unit_rows(factors: np.ndarray) -> np.ndarray:
    """``factors`` with every row scaled to length 1 (a zero row stays zero), as float32."""
    rows = np.asarray(factors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def similar_items(item_factors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item, its ``n`` most similar other items, best first: ``(indices int64, cosines
    float32)``, both ``(items, min(n, items - 1))``. Ties rank the lower index first."""
    unit = unit_rows(item_factors)
    n_items = unit.shape[0]
    k = max(0, min(n, n_items - 1))
    itself = sp.identity(n_items, dtype=np.float32, format="csr")
    return top_k(unit, unit, k, exclude=itself)

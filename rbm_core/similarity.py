"""Item similarity from learned weights: cosine between items' weight rows.

An item's row of a model's weights (a SoftmaxRBM's ``W[i]``, K x F; the ranker's rated
and liked rows) says how the item drives the hidden units; items with similar rows are
rated, and liked, by the same kind of users.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["nearest_items", "unit_rows"]


def nearest_items(units: NDArray[np.floating], col: int, n: int) -> list[tuple[int, float]]:
    """The ``n`` rows of ``units`` with the largest dot product with row ``col`` (not itself).

    With unit-length rows that is cosine similarity. Ties go to the lower row.
    """
    sims = units @ units[col]
    sims[col] = -np.inf
    k = min(n, len(units) - 1)
    if k <= 0:
        return []
    part = np.argpartition(-sims, k - 1)[:k]
    order = np.lexsort((part, -sims[part]))
    return [(int(c), float(sims[c])) for c in part[order]]


def unit_rows(matrix: NDArray[np.floating]) -> NDArray[np.floating]:
    """Each row of ``matrix`` (flattened per item), centred and scaled to unit length."""
    flat = matrix.reshape(matrix.shape[0], -1).astype(np.float32)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    units: NDArray[np.floating] = flat / np.maximum(norms, np.float32(1e-12))
    return units

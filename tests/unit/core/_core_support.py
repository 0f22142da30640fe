"""Helpers shared by the rbm_core unit tests: a tiny RBM and hand-written level codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

M, K, F = 3, 3, 4
"""Items, rating levels and hidden units of the tiny RBM."""


def tiny_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights (M, K, F), visible biases (M, K) and hidden biases (F,) of a tiny RBM."""
    rng = np.random.default_rng(42)
    w = rng.normal(0.0, 1.0, size=(M, K, F))
    b = rng.normal(0.0, 0.5, size=(M, K))
    c = rng.normal(0.0, 0.5, size=F)
    return w, b, c


def codes_of(rows: list[dict[int, int]], n_items: int = M) -> sp.csr_matrix:
    """CSR of level codes (level index + 1) from {item: level index} dicts."""
    r, c, d = [], [], []
    for i, row in enumerate(rows):
        for item, level in sorted(row.items()):
            r.append(i)
            c.append(item)
            d.append(level + 1)
    m = sp.csr_matrix((np.asarray(d, dtype=np.int8), (r, c)), shape=(len(rows), n_items))
    m.sort_indices()
    return m


def write_fold(directory: Path, fold: int, train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Write ``u{fold}.base`` / ``u{fold}.test`` in the ML-100K tab layout."""
    for name, frame in ((f"u{fold}.base", train), (f"u{fold}.test", test)):
        lines = [f"{u}\t{i}\t{r:g}\t0\n" for u, i, r in frame.itertuples(index=False)]
        (directory / name).write_text("".join(lines))

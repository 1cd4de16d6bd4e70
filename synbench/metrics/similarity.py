"""The two model-similarity measures users already reach for, on the same embeddings as the data kernels.

- Linear CKA (Kornblith et al. 2019): with column-centred X (n x p) and Y (n x q),
  ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``; 1 for the same embedding up to rotation and isotropic
  scaling. Computed from p x q products, so n may be large.
- Mutual k-NN alignment (Huh et al. 2024): the mean over data of ``|N_X(i) & N_Y(i)| / k``, the overlap of each
  datum's k nearest neighbours under the two models; 1 for the same neighbourhoods, about k / (n - 1) for
  unrelated ones. It reuses the neighbour lists the data kernels already computed.
"""

from __future__ import annotations

import numpy as np


def centred_gram_norm(x: np.ndarray) -> float:
    """``||X^T X||_F`` of a column-centred X: the per-model half of CKA's denominator, computed once."""
    x = x - x.mean(axis=0)
    return float(np.linalg.norm(x.T @ x))


def linear_cka(x: np.ndarray, y: np.ndarray, x_norm: float | None = None, y_norm: float | None = None) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same inputs under both models: n={len(x)} vs n={len(y)}")
    x_norm = centred_gram_norm(x) if x_norm is None else x_norm
    y_norm = centred_gram_norm(y) if y_norm is None else y_norm
    if x_norm == 0 or y_norm == 0:
        return float("nan")  # a constant embedding has no geometry to compare
    cross = (y - y.mean(axis=0)).T @ (x - x.mean(axis=0))
    return float(np.linalg.norm(cross) ** 2 / (x_norm * y_norm))


def mutual_knn(nbrs_x: np.ndarray, nbrs_y: np.ndarray, k: int) -> float:
    """Mean fraction of shared neighbours among the first k of each datum's (nearest-first) neighbour lists."""
    a, b = np.sort(nbrs_x[:, :k], axis=1), np.sort(nbrs_y[:, :k], axis=1)
    shared = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))
    return float(shared.mean() / k)

"""The robust Bayes probe on wide features: with fewer samples than features its eigenpairs come from the Gram
matrix; the probe must equal the one from the full covariance's eigendecomposition."""

import torch

from synbench.probes import RobustBayesProbe
from synbench.probes import robust_bayes
from synbench.probes.robust_bayes import covariance_eigs

EPS = [0.0, 0.1, 0.5, 0.9]


def wide_data(n: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    scale = torch.rand(dim, generator=g, dtype=torch.float64) * 3  # unequal variances: a non-trivial eigenbasis
    z = torch.randn(n, dim, generator=g, dtype=torch.float64) * scale + 0.4 * y[:, None].double()
    return z, y


def full_eigs(resid, dof, floor):
    evals, evecs = torch.linalg.eigh(resid.T @ resid / dof)
    keep = evals > floor
    return evals[keep], evecs[:, keep]


def test_gram_eigenpairs_equal_the_covariance_ones():
    z, _ = wide_data(40, 300)
    resid = z - z.mean(0)
    d, basis = covariance_eigs(resid, 38, 1e-6)
    d_full, basis_full = full_eigs(resid, 38, 1e-6)
    assert len(d) == len(d_full) == 39  # rank n - 1: the zero eigenvalues of the other 261 are dropped
    assert torch.allclose(d, d_full, rtol=1e-10)
    # eigenvectors up to sign: each pair of columns is parallel
    assert torch.allclose((basis * basis_full).sum(0).abs(), torch.ones(39, dtype=torch.float64), atol=1e-8)
    cov = resid.T @ resid / 38
    assert torch.allclose(cov @ basis, basis * d, atol=1e-9)


def test_the_probe_on_wide_features_equals_the_full_eigendecomposition(monkeypatch):
    z, y = wide_data(64, 500, seed=1)
    fast = RobustBayesProbe(1e-6, EPS).fit(z, y)
    monkeypatch.setattr(robust_bayes, "covariance_eigs", full_eigs)
    slow = RobustBayesProbe(1e-6, EPS).fit(z, y)
    for a, b in ((fast.weight, slow.weight), (fast.unit, slow.unit), (fast.radius, slow.radius)):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)
    zt, yt = wide_data(200, 500, seed=2)
    assert torch.equal(fast.accuracy(zt, yt), slow.accuracy(zt, yt))

"""Independent, spec-only tests of LogME (You, Liu, Wang, Long, ICML 2021, arXiv 2102.11005).

Written from the paper alone, without reading synbench/metrics/logme.py. Every expectation is computed here
from first principles:

* the evidence of Bayesian linear regression, prior w ~ N(0, alpha^-1 I_D), noise precision beta, is the
  Gaussian marginal  t ~ N(0, beta^-1 I_n + alpha^-1 F F^T)  (checked against scipy.stats.multivariate_normal);
* LogME's alpha, beta maximise that evidence, which we find by brute force (a grid over log alpha, log beta,
  then BFGS from its best points, with an analytic gradient), independent of MacKay's fixed point iteration;
* logme is the mean over classes (one-hot column per class) of the maximised log evidence divided by n.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from synbench.metrics.logme import fit_evidence, log_evidence, logme

# LogME stops its fixed point iteration on a loose criterion: allow 1e-4 relative on a maximised evidence.
EVIDENCE_RTOL = 1e-4
# |d(evidence/n) / d log alpha| and |d(evidence/n) / d log beta| at the fitted point; a gap of 1e-4 in
# evidence/n near a maximum of curvature O(1) goes with a gradient of O(1e-2) at worst, O(1e-3) typically.
GRAD_TOL = 2e-3


# ----------------------------------------------------------------------------------------------------------
# Independent reference: closed forms
# ----------------------------------------------------------------------------------------------------------

def scipy_evidence_per_n(F: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """log N(t; 0, I/beta + F F^T/alpha) / n, straight from scipy."""
    n = F.shape[0]
    cov = np.eye(n) / beta + F @ F.T / alpha
    return float(stats.multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(t)) / n


class EigenEvidence:
    """The same Gaussian marginal through the eigendecomposition F F^T = U diag(lam) U^T, z = U^T t:

        log p = -n/2 log 2pi - 1/2 sum_i log c_i - 1/2 sum_i z_i^2 / c_i,   c_i = 1/beta + lam_i/alpha,

    with its exact gradient in (log alpha, log beta). Used for brute-force maximisation (cheap, smooth)."""

    def __init__(self, F: np.ndarray, t: np.ndarray):
        lam, U = np.linalg.eigh(F @ F.T)
        self.lam = np.clip(lam, 0.0, None)
        self.z2 = (U.T @ t) ** 2
        self.n = F.shape[0]

    def value_grad(self, log_alpha: float, log_beta: float) -> tuple[float, np.ndarray]:
        a, b = np.exp(log_alpha), np.exp(log_beta)
        c = 1.0 / b + self.lam / a
        val = -0.5 * self.n * np.log(2 * np.pi) - 0.5 * np.log(c).sum() - 0.5 * (self.z2 / c).sum()
        dval_dc = -0.5 / c + 0.5 * self.z2 / c ** 2
        grad = np.array([(dval_dc * (-self.lam / a)).sum(), (dval_dc * (-1.0 / b)).sum()])
        return val / self.n, grad / self.n


def brute_force_max(F: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
    """(alpha*, beta*, max evidence / n): a coarse grid over (log alpha, log beta), then BFGS from the
    best few grid points."""
    ev = EigenEvidence(F, t)

    def neg(x):
        v, g = ev.value_grad(*x)
        return -v, -g

    grid = np.linspace(-8.0, 16.0, 49)
    la, lb = np.meshgrid(grid, grid, indexing="ij")
    c = 1.0 / np.exp(lb)[..., None] + ev.lam / np.exp(la)[..., None]
    vals = -0.5 * np.log(c).sum(-1) - 0.5 * (ev.z2 / c).sum(-1)
    best = None
    for idx in np.argsort(vals, axis=None)[::-1][:3]:
        i, j = np.unravel_index(idx, vals.shape)
        r = optimize.minimize(neg, np.array([grid[i], grid[j]]), jac=True, method="BFGS",
                              options=dict(gtol=1e-10, maxiter=2000))
        if best is None or r.fun < best.fun:
            best = r
    la, lb = best.x
    _, g = ev.value_grad(la, lb)
    assert np.all(np.abs(g) < 1e-6), f"reference optimiser did not converge (grad {g}); test bug"
    assert -7 < la < 15 and -7 < lb < 15, f"reference optimum on the boundary {best.x}; pick another problem"
    # the eigen form must agree with scipy's Gaussian log-density at the optimum (validates the reference)
    val = scipy_evidence_per_n(F, t, np.exp(la), np.exp(lb))
    assert val == pytest.approx(-best.fun, rel=1e-10, abs=1e-12)
    return float(np.exp(la)), float(np.exp(lb)), val


def reference_logme(F: np.ndarray, labels: np.ndarray) -> float:
    classes = np.unique(labels)
    return float(np.mean([brute_force_max(F, (labels == k).astype(np.float64))[2] for k in classes]))


# ----------------------------------------------------------------------------------------------------------
# Problems
# ----------------------------------------------------------------------------------------------------------

def problem(n: int, D: int, seed: int, rank_deficient: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features and a binary 0/1 target that the features partly explain (so the evidence has an interior max)."""
    rng = np.random.default_rng(seed)
    if rank_deficient:
        G = rng.standard_normal((n, D - 3))
        F = np.concatenate([G, G[:, :2], G[:, :1]], axis=1)  # three duplicated columns: rank D - 3
        assert np.linalg.matrix_rank(F) == min(n, D - 3) < D
    else:
        F = rng.standard_normal((n, D))
    w = rng.standard_normal(F.shape[1])
    t = (F @ w + 0.5 * rng.standard_normal(n) > 0).astype(np.float64)
    return F, t


def three_class(n: int = 60, D: int = 6, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class problem with noisy, partly informative features (every class has an interior optimum)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    centres = rng.standard_normal((3, D))
    F = centres[labels] + 1.2 * rng.standard_normal((n, D))
    return F, labels


CASES = [
    pytest.param(30, 5, False, id="n>D"),
    pytest.param(8, 15, False, id="n<D"),
    pytest.param(20, 9, True, id="rank-deficient-dup-cols"),
    pytest.param(6, 12, True, id="rank-deficient-n<D"),
]


# ----------------------------------------------------------------------------------------------------------
# 1. log_evidence is the Gaussian marginal log-density / n
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,D,rank_deficient", CASES)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.05, 7.0), (30.0, 0.3), (2.5, 120.0)])
def test_log_evidence_is_gaussian_marginal(n, D, rank_deficient, alpha, beta):
    F, t = problem(n, D, seed=n * 100 + D, rank_deficient=rank_deficient)
    expected = scipy_evidence_per_n(F, t, alpha, beta)
    got_np = log_evidence(F, t, alpha, beta)
    got_torch = log_evidence(torch.from_numpy(F), torch.from_numpy(t), alpha, beta)
    assert isinstance(got_np, float) and isinstance(got_torch, float)
    assert got_np == pytest.approx(expected, rel=1e-9, abs=1e-10)
    assert got_torch == pytest.approx(expected, rel=1e-9, abs=1e-10)


def test_log_evidence_non_binary_target_and_scaling():
    """Not just 0/1 targets: an arbitrary real-valued target."""
    rng = np.random.default_rng(7)
    F = rng.standard_normal((15, 4))
    t = rng.standard_normal(15) * 2.0 + 1.0
    for alpha, beta in [(0.7, 0.4), (9.0, 3.0)]:
        assert log_evidence(F, t, alpha, beta) == pytest.approx(scipy_evidence_per_n(F, t, alpha, beta),
                                                                rel=1e-9, abs=1e-10)


# ----------------------------------------------------------------------------------------------------------
# 2. fit_evidence reaches the maximum of the evidence
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,D,seed", [pytest.param(40, 6, 11, id="n>D"), pytest.param(60, 8, 12, id="n>D-2"),
                                      pytest.param(12, 20, 12, id="n<D")])
def test_fit_evidence_maximises_evidence(n, D, seed):
    F, t = problem(n, D, seed=seed)
    a_ref, b_ref, best = brute_force_max(F, t)

    alpha, beta, ev = fit_evidence(torch.from_numpy(F), torch.from_numpy(t))
    alpha, beta, ev = float(alpha), float(beta), float(ev)
    assert alpha > 0 and beta > 0

    # the reported evidence is the evidence at the reported (alpha, beta) ...
    at_fit = scipy_evidence_per_n(F, t, alpha, beta)
    assert ev == pytest.approx(at_fit, rel=1e-8, abs=1e-10)
    # ... which is the maximum (never above it beyond round-off, within LogME's stopping tolerance below it)
    assert ev <= best + 1e-9 * abs(best)
    assert abs(ev - best) <= EVIDENCE_RTOL * abs(best), (ev, best, (best - ev) / abs(best))
    # ... and a stationary point of the evidence in (log alpha, log beta)
    _, grad = EigenEvidence(F, t).value_grad(np.log(alpha), np.log(beta))
    assert np.all(np.abs(grad) < GRAD_TOL), grad
    # the maximiser itself (loosely: the stopping rule is on relative change of alpha/beta)
    assert np.log(alpha) == pytest.approx(np.log(a_ref), abs=0.05)
    assert np.log(beta) == pytest.approx(np.log(b_ref), abs=0.05)

    # numpy input gives the same answer as torch
    alpha2, beta2, ev2 = fit_evidence(F, t)
    assert float(ev2) == pytest.approx(ev, rel=1e-10, abs=1e-12)
    assert float(alpha2) == pytest.approx(alpha, rel=1e-8)
    assert float(beta2) == pytest.approx(beta, rel=1e-8)


def test_fit_evidence_mackay_fixed_point():
    """At the returned (alpha, beta), MacKay's update maps them (nearly) to themselves."""
    F, t = problem(50, 5, seed=21)
    alpha, beta, _ = fit_evidence(F, t)
    alpha, beta = float(alpha), float(beta)
    A = alpha * np.eye(F.shape[1]) + beta * F.T @ F
    m = beta * np.linalg.solve(A, F.T @ t)
    s = np.linalg.eigvalsh(F.T @ F)
    gamma = float(np.sum(beta * s / (alpha + beta * s)))
    alpha_new = gamma / float(m @ m)
    beta_new = (F.shape[0] - gamma) / float(np.sum((F @ m - t) ** 2))
    assert alpha_new == pytest.approx(alpha, rel=2e-2)
    assert beta_new == pytest.approx(beta, rel=2e-2)


# ----------------------------------------------------------------------------------------------------------
# 3. logme = mean over classes of the maximised evidence / n
# ----------------------------------------------------------------------------------------------------------

def test_logme_matches_bruteforce_three_classes():
    F, labels = three_class()
    expected = reference_logme(F, labels)
    got = logme(torch.from_numpy(F), torch.from_numpy(labels).long())
    assert isinstance(got, float)
    assert abs(got - expected) <= EVIDENCE_RTOL * abs(expected), (got, expected)
    # per class, too: logme is the mean of fit_evidence over the one-hot columns
    per_class = [float(fit_evidence(F, (labels == k).astype(np.float64))[2]) for k in range(3)]
    assert got == pytest.approx(float(np.mean(per_class)), rel=1e-8, abs=1e-10)
    # numpy input
    assert logme(F, labels) == pytest.approx(got, rel=1e-10, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# 4. Invariants
# ----------------------------------------------------------------------------------------------------------

def separated(n: int = 90, K: int = 3, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % K
    rng.shuffle(labels)
    F = 3.0 * np.eye(K)[labels] + 0.1 * rng.standard_normal((n, K))
    F = np.concatenate([F, 0.1 * rng.standard_normal((n, 2))], axis=1)  # two pure-noise dimensions
    return F, labels


def test_separable_features_beat_shuffled_labels():
    F, labels = separated()
    shuffled = np.random.default_rng(99).permutation(labels)
    assert (shuffled != labels).mean() > 0.4
    good, bad = logme(F, labels), logme(F, shuffled)
    assert good > bad, (good, bad)
    # the reference agrees on the ordering (sanity of the problem itself)
    assert reference_logme(F, labels) > reference_logme(F, shuffled)


def test_zero_column_does_not_change_logme():
    F, labels = three_class(seed=8)
    F0 = np.concatenate([F, np.zeros((F.shape[0], 1))], axis=1)
    base = logme(F, labels)
    assert logme(F0, labels) == pytest.approx(base, rel=1e-7, abs=1e-9)
    # and for log_evidence at fixed (alpha, beta): F F^T is unchanged
    t = (labels == 0).astype(np.float64)
    assert log_evidence(F0, t, 0.8, 2.0) == pytest.approx(log_evidence(F, t, 0.8, 2.0), rel=1e-10, abs=1e-12)


def test_orthogonal_rotation_does_not_change_logme():
    F, labels = three_class(seed=9)
    Q, _ = np.linalg.qr(np.random.default_rng(10).standard_normal((F.shape[1], F.shape[1])))
    assert np.allclose(Q.T @ Q, np.eye(F.shape[1]))
    assert logme(F @ Q, labels) == pytest.approx(logme(F, labels), rel=1e-7, abs=1e-9)
    t = (labels == 1).astype(np.float64)
    assert log_evidence(F @ Q, t, 3.0, 0.5) == pytest.approx(log_evidence(F, t, 3.0, 0.5), rel=1e-10, abs=1e-12)

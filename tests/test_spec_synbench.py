"""Independent checks of SynBench against its specification (docs: spec sections 2-5).

Every expected number here is derived from the spec with closed forms, numpy and scipy; nothing is taken
from the implementation's own outputs. Data are float64, seeded, CPU-only and small.
"""

import math
import types

import numpy as np
import pytest
import torch
from scipy import optimize
from scipy.stats import norm

from synbench.data import Split
from synbench.encoders import Embeddings
from synbench.encoders import Precision
from synbench.metrics import MetricInputs
from synbench.metrics.synbench_score import (
    SynBenchScore,
    expected_bound,
    probe_scores,
    raw_accuracy,
    raw_bound,
    score_ratio,
)
from synbench.probes import RobustBayesProbe, check_epsilons, robust_root

EIG_FLOOR = 1e-6  # spec section 3
GRID = np.linspace(0.6, 1.0, 100)  # spec section 4


# ----------------------------------------------------------------------------------------------------------
# Independent reference helpers (numpy / scipy only)
# ----------------------------------------------------------------------------------------------------------

def mixture(rng, d, n, s, prior=0.5):
    """Spec section 1: x = 0.5 + (+/- s mu) + N(0, I), mu = 1_d / sqrt(d), y ~ Bernoulli(prior)."""
    y = (rng.random(n) < prior).astype(np.int64)
    mu = np.ones(d) / np.sqrt(d)
    sign = np.where(y == 1, 1.0, -1.0)[:, None]
    x = 0.5 + sign * s * mu[None, :] + rng.standard_normal((n, d))
    return x, y


def lda_stats(z, y):
    """Class means and pooled within-class covariance S = (S1 (n1-1) + S0 (n0-1)) / (n - 2)."""
    z1, z0 = z[y == 1], z[y == 0]
    n1, n0 = len(z1), len(z0)
    m1, m0 = z1.mean(0), z0.mean(0)
    S1 = np.cov(z1, rowvar=False, ddof=1)
    S0 = np.cov(z0, rowvar=False, ddof=1)
    S = (S1 * (n1 - 1) + S0 * (n0 - 1)) / (n1 + n0 - 2)
    return m1, m0, S


def my_lam(u, d, eps):
    """Root lam >= 0 of ||(I + lam diag d)^-1 u|| = eps ||u|| by brentq (independent of robust_root)."""
    target = eps * np.linalg.norm(u)

    def f(lam):
        return np.linalg.norm(u / (1.0 + lam * d)) - target

    hi = 1.0
    while f(hi) > 0:
        hi *= 2.0
    return optimize.brentq(f, 0.0, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=1000)


def my_probe(z, y, eps):
    """Spec section 3 probe direction W = F1 w, centre c and unit |u^T w|, from scratch."""
    m1, m0, S = lda_stats(z, y)
    vals, vecs = np.linalg.eigh(S)
    keep = vals > EIG_FLOOR
    F1, D1 = vecs[:, keep], vals[keep]
    u = F1.T @ (m1 - m0) / 2
    if eps == 0:
        v = np.zeros_like(u)
    else:
        lam = my_lam(u, D1, eps)
        v = u / (1.0 + lam * D1)
    w = (u - v) / D1
    return F1 @ w, (m1 + m0) / 2, abs(u @ w)


def my_acc_bound(W, c, unit, z, y):
    t = (z - c) @ W
    pred1 = t > 0
    correct = np.where(t == 0, 0.5, (pred1 == (y == 1)).astype(float))
    acc = correct.mean()
    strict = (t != 0) & (pred1 == (y == 1))
    bound = np.abs(t[strict]).mean() / unit if strict.any() and unit > 0 else 0.0
    return acc, bound


def my_braw(a):
    q = norm.ppf(a)
    return 1.0 + norm.pdf(q) / (a * q)


def my_expected(acc, bound, grid):
    """E(x_k) = (1/S) sum_s B(s) 1[a(s) > x_k] (strict)."""
    acc, bound = np.asarray(acc, float), np.asarray(bound, float)
    return (bound[None, :] * (acc[None, :] > grid[:, None])).sum(1) / len(acc)


def my_score(e_rep, e_raw, grid, thr):
    m = grid >= thr
    return e_rep[m].sum() / e_raw[m].sum()


def T(a, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def cos(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def anisotropic_data(seed, D=8, n=1500, shift=0.8):
    """Two Gaussian classes in D dims with a strongly anisotropic shared covariance (LDA != mean difference)."""
    rng = np.random.default_rng(seed)
    Q1 = np.linalg.qr(rng.standard_normal((D, D)))[0]
    Q2 = np.linalg.qr(rng.standard_normal((D, D)))[0]
    A = Q1 @ np.diag(np.linspace(0.3, 3.0, D)) @ Q2  # covariance A A^T, condition number 100
    delta = rng.standard_normal(D)
    delta *= shift / np.linalg.norm(delta)
    y = (rng.random(n) < 0.5).astype(np.int64)
    z = rng.standard_normal((n, D)) @ A.T + np.where(y == 1, 1.0, -1.0)[:, None] * delta[None, :] + 2.0
    return z, y


def run_synbench(scales, z_tr, y_tr, z_te, y_te, epsilons, thresholds=(0.6, 0.7, 0.99)):
    emb = Embeddings(
        scales=[float(s) for s in scales],
        z={Split.train: T(z_tr), Split.test: T(z_te)},
        y={Split.train: T(y_tr, torch.long), Split.test: T(y_te, torch.long)},
        images_embedded=0,
        seconds=0.0,
    )
    metric = SynBenchScore(probe=RobustBayesProbe(EIG_FLOOR, list(epsilons)), thresholds=list(thresholds),
                           headline=0.7, grid_start=0.6, grid_stop=1.0, grid_num=100)
    inputs = MetricInputs(emb, None, types.SimpleNamespace(noise_std=1.0), None, 0, Precision.fp32)
    return metric.compute(inputs)


# ----------------------------------------------------------------------------------------------------------
# 1. Exact robust root vs an independent constrained optimiser
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,K", [(1, 5), (2, 7), (3, 8)])
def test_robust_root_matches_slsqp(seed, K):
    rng = np.random.default_rng(seed)
    d = 10.0 ** rng.uniform(-1.0, 1.0, K)  # two orders of magnitude
    d[0], d[-1] = 0.1, 10.0
    u = rng.standard_normal(K)
    u /= np.linalg.norm(u)
    eps = np.array([0.05, 0.2, 0.5, 0.8, 0.95])
    lam = robust_root(T(u), T(d), T(eps)).numpy()
    assert lam.shape == eps.shape
    assert np.all(np.isfinite(lam)) and np.all(lam >= 0)
    for e, l in zip(eps, lam):
        v_root = u / (1.0 + l * d)
        # the defining equation, to 1e-8 relative
        assert abs(np.linalg.norm(v_root) - e * np.linalg.norm(u)) <= 1e-8 * e * np.linalg.norm(u)

        r2 = (e * np.linalg.norm(u)) ** 2
        res = optimize.minimize(
            lambda v: np.sum((u - v) ** 2 / d),
            x0=np.zeros(K),
            jac=lambda v: -2.0 * (u - v) / d,
            constraints=[{"type": "ineq", "fun": lambda v: r2 - v @ v, "jac": lambda v: -2.0 * v}],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 2000},
        )
        # status 8 = "positive directional derivative": stopped at the float precision limit; the distance
        # check below is what decides
        assert res.status in (0, 8), res.message
        assert res.x @ res.x <= r2 * (1 + 1e-8)
        np.testing.assert_allclose(v_root, res.x, atol=1e-6, rtol=0)
        # the root solution is at least as good as SLSQP's (it is the exact optimum)
        assert np.sum((u - v_root) ** 2 / d) <= res.fun + 1e-10


def test_robust_root_independent_brentq_and_eps_zero():
    rng = np.random.default_rng(11)
    K = 6
    d = 10.0 ** rng.uniform(-2.0, 1.0, K)
    u = 3.0 * rng.standard_normal(K)
    eps = np.array([0.0, 0.1, 0.3, 0.6, 0.9, 0.999])
    lam = robust_root(T(u), T(d), T(eps)).numpy()
    assert np.isinf(lam[0]) and lam[0] > 0
    for e, l in zip(eps[1:], lam[1:]):
        ref = my_lam(u, d, e)
        np.testing.assert_allclose(l, ref, rtol=1e-7)
        assert abs(np.linalg.norm(u / (1 + l * d)) / np.linalg.norm(u) - e) <= 1e-8 * e
    # lam decreases as eps grows (||v(lam)|| is decreasing in lam)
    assert np.all(np.diff(lam) < 0)


# ----------------------------------------------------------------------------------------------------------
# 2. eps = 0 is Fisher's LDA
# ----------------------------------------------------------------------------------------------------------

def test_eps_zero_is_fisher_lda():
    z, y = anisotropic_data(seed=5, D=12, n=1200)
    m1, m0, S = lda_stats(z, y)
    lda = np.linalg.solve(S, m1 - m0)
    probe = RobustBayesProbe(EIG_FLOOR, [0.0]).fit(T(z), T(y, torch.long))
    W = probe.weight.numpy()
    assert W.shape == (1, 12)
    assert cos(W[0], lda) > 1 - 1e-9
    # with S full rank, W = F1 D1^-1 F1^T (m1 - m0)/2 = S^-1 (m1 - m0)/2 exactly, c = midpoint,
    # |u^T w| = (m1 - m0)^T S^-1 (m1 - m0) / 4
    np.testing.assert_allclose(W[0], lda / 2, rtol=1e-8, atol=1e-12 * np.abs(lda).max())
    np.testing.assert_allclose(probe.center.numpy(), (m1 + m0) / 2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(probe.unit.numpy()[0], (m1 - m0) @ lda / 4, rtol=1e-8)
    # margins(z) = (z - c) @ W
    zt = z[:50] + 0.3
    np.testing.assert_allclose(probe.margins(T(zt)).numpy()[0], (zt - (m1 + m0) / 2) @ (lda / 2),
                               rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------
# 3. Identity representation reproduces the raw reference
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def identity_run():
    d, n = 16, 4000
    scales = np.round(np.arange(1, 21) * 0.2, 10)  # 0.2 .. 4.0, beyond Phi^-1(0.99) = 2.326
    rng = np.random.default_rng(2024)
    ztr, ytr, zte, yte = [], [], [], []
    for s in scales:
        x, y = mixture(rng, d, n, s)
        ztr.append(x), ytr.append(y)
        x, y = mixture(rng, d, n, s)
        zte.append(x), yte.append(y)
    ztr, ytr, zte, yte = map(np.stack, (ztr, ytr, zte, yte))
    result = run_synbench(scales, ztr, ytr, zte, yte, [0.0, 0.5])
    # my own eps = 0 pipeline
    acc, bnd = [], []
    for i in range(len(scales)):
        W, c, unit = my_probe(ztr[i], ytr[i], 0.0)
        a, b = my_acc_bound(W, c, unit, zte[i], yte[i])
        acc.append(a), bnd.append(b)
    return dict(d=d, n=n, scales=scales, result=result, acc=np.array(acc), bound=np.array(bnd),
                data=(ztr, ytr, zte, yte))


def test_identity_accuracy_is_phi(identity_run):
    r, s, n, d = identity_run["result"], identity_run["scales"], identity_run["n"], identity_run["d"]
    curve = r.curves["accuracy/eps_0.00"]
    np.testing.assert_allclose(np.asarray(curve.x, float), s, rtol=0, atol=1e-12)
    a_rep = np.asarray(curve.y, float)
    a_true = norm.cdf(s)
    # 4 binomial standard errors plus a d/n allowance for the estimated (not exact) Bayes direction
    tol = 4 * np.sqrt(a_true * (1 - a_true) / n) + d / n
    assert np.all(np.abs(a_rep - a_true) <= tol), (a_rep - a_true, tol)
    # and it is exactly what an LDA computed from scratch gives (same predictions)
    np.testing.assert_allclose(a_rep, identity_run["acc"], atol=1.5 / n, rtol=0)
    # raw reference curve is Phi(s)
    np.testing.assert_allclose(np.asarray(r.curves["accuracy/raw"].y, float), a_true, rtol=1e-10)


def test_identity_bound_matches_independent_pipeline(identity_run):
    r, s = identity_run["result"], identity_run["scales"]
    b_rep = np.asarray(r.curves["bound/eps_0.00"].y, float)
    np.testing.assert_allclose(b_rep, identity_run["bound"], rtol=1e-6)
    # where the data are informative (s >= 0.6) B_rep(s) ~ B_raw(Phi(s)); see spec section 2 derivation:
    # with S ~ I, t = s * N(s, 1), u^T w = s^2, so |t|/|u^T w| given correct has mean E[N(s,1)|>0]/s.
    m = s >= 0.6
    np.testing.assert_allclose(b_rep[m], my_braw(norm.cdf(s[m])), rtol=0.1)


def test_identity_score_is_one(identity_run):
    r, s = identity_run["result"], identity_run["scales"]
    a_raw = norm.cdf(s)
    e_raw = my_expected(a_raw, my_braw(a_raw), GRID)
    e_rep = my_expected(identity_run["acc"], identity_run["bound"], GRID)
    mine = my_score(e_rep, e_raw, GRID, 0.7)
    got = r.scalars["score/at_0.70/eps_0.00"]
    np.testing.assert_allclose(got, mine, rtol=1e-6)
    # Sampling sd of this score over seeds (20 replicates of this exact setup, numpy only) is ~0.004;
    # 0.05 is > 10 sd, and also covers the O(d/n) bias of the estimated probe.
    assert abs(got - 1.0) < 0.05
    # the expected-bound curves
    np.testing.assert_allclose(np.asarray(r.curves["expected_bound/raw"].y, float), e_raw, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(r.curves["expected_bound/eps_0.00"].y, float), e_rep,
                               rtol=1e-6, atol=1e-9)
    # bookkeeping: headline = best over eps at a_t = 0.7
    per_eps = {e: r.scalars[f"score/at_0.70/eps_{e:.2f}"] for e in (0.0, 0.5)}
    best_e = max(per_eps, key=per_eps.get)
    assert r.scalars["score"] == pytest.approx(per_eps[best_e], rel=1e-12)
    assert r.scalars["best/at_0.70"] == pytest.approx(per_eps[best_e], rel=1e-12)
    assert r.scalars["best_eps"] == pytest.approx(best_e)
    assert r.scalars["best_eps/at_0.70"] == pytest.approx(best_e)
    # other thresholds: same formula
    for thr in (0.6, 0.99):
        np.testing.assert_allclose(r.scalars[f"score/at_{thr:.2f}/eps_0.00"], my_score(e_rep, e_raw, GRID, thr),
                                   rtol=1e-6)


def test_identity_robust_eps_matches_independent_pipeline(identity_run):
    r, (ztr, ytr, zte, yte), n = identity_run["result"], identity_run["data"], identity_run["n"]
    acc, bnd = [], []
    for i in range(len(identity_run["scales"])):
        W, c, unit = my_probe(ztr[i], ytr[i], 0.5)
        a, b = my_acc_bound(W, c, unit, zte[i], yte[i])
        acc.append(a), bnd.append(b)
    np.testing.assert_allclose(np.asarray(r.curves["accuracy/eps_0.50"].y, float), acc, atol=1.5 / n, rtol=0)
    np.testing.assert_allclose(np.asarray(r.curves["bound/eps_0.50"].y, float), bnd, rtol=1e-6)
    a_raw = norm.cdf(identity_run["scales"])
    e_raw = my_expected(a_raw, my_braw(a_raw), GRID)
    mine = my_score(my_expected(acc, bnd, GRID), e_raw, GRID, 0.7)
    np.testing.assert_allclose(r.scalars["score/at_0.70/eps_0.50"], mine, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# 4. Invertible linear map: same eps = 0 predictions (LDA is affine invariant)
# ----------------------------------------------------------------------------------------------------------

def test_invertible_linear_map_same_accuracy():
    d, n, s = 16, 2000, 1.0
    rng = np.random.default_rng(7)
    xtr, ytr = mixture(rng, d, n, s)
    xte, yte = mixture(rng, d, n, s)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = Q @ np.diag(np.linspace(0.5, 4.0, d)) @ np.linalg.qr(rng.standard_normal((d, d)))[0]  # cond = 8
    b = rng.standard_normal(d)
    ztr, zte = xtr @ A.T + b, xte @ A.T + b

    p_raw = RobustBayesProbe(EIG_FLOOR, [0.0]).fit(T(xtr), T(ytr, torch.long))
    p_lin = RobustBayesProbe(EIG_FLOOR, [0.0]).fit(T(ztr), T(ytr, torch.long))
    t_raw = p_raw.margins(T(xte)).numpy()[0]
    t_lin = p_lin.margins(T(zte)).numpy()[0]
    np.testing.assert_allclose(t_lin, t_raw, rtol=1e-7, atol=1e-9 * np.abs(t_raw).max())

    a_raw, b_raw = probe_scores(p_raw, T(xte), T(yte, torch.long))
    a_lin, b_lin = probe_scores(p_lin, T(zte), T(yte, torch.long))
    assert np.min(np.abs(t_raw)) > 1e-6  # no point sits on the boundary, so predictions must coincide exactly
    assert float(a_lin[0]) == float(a_raw[0])
    np.testing.assert_allclose(float(b_lin[0]), float(b_raw[0]), rtol=1e-7)
    # and both equal a from-scratch LDA on the raw inputs
    W, c, unit = my_probe(xtr, ytr, 0.0)
    a_me, b_me = my_acc_bound(W, c, unit, xte, yte)
    assert float(a_raw[0]) == pytest.approx(a_me, abs=1e-12)
    np.testing.assert_allclose(float(b_raw[0]), b_me, rtol=1e-7)
    assert abs(a_me - norm.cdf(s)) < 4 * np.sqrt(norm.cdf(s) * norm.sf(s) / n) + d / n


# ----------------------------------------------------------------------------------------------------------
# 5. Constant representation: accuracy 0.5 everywhere, score 0
# ----------------------------------------------------------------------------------------------------------

def test_constant_representation():
    S, n, D = 6, 300, 5
    scales = np.linspace(0.5, 3.0, S)
    rng = np.random.default_rng(3)
    ytr = (rng.random((S, n)) < 0.5).astype(np.int64)
    yte = (rng.random((S, n)) < 0.5).astype(np.int64)
    z = np.full((S, n, D), 3.0)

    probe = RobustBayesProbe(EIG_FLOOR, [0.0, 0.5]).fit(T(z[0]), T(ytr[0], torch.long))
    acc, bnd = probe_scores(probe, T(z[0]), T(yte[0], torch.long))
    np.testing.assert_array_equal(acc.numpy(), [0.5, 0.5])
    np.testing.assert_array_equal(bnd.numpy(), [0.0, 0.0])

    r = run_synbench(scales, z, ytr, z, yte, [0.0, 0.5])
    for e in ("0.00", "0.50"):
        np.testing.assert_array_equal(np.asarray(r.curves[f"accuracy/eps_{e}"].y, float), np.full(S, 0.5))
        for thr in ("0.60", "0.70", "0.99"):
            assert r.scalars[f"score/at_{thr}/eps_{e}"] == 0.0
    assert r.scalars["score"] == 0.0


# ----------------------------------------------------------------------------------------------------------
# 6. Raw reference closed form
# ----------------------------------------------------------------------------------------------------------

def test_raw_accuracy_is_phi():
    s = np.array([0.0, 0.5, 1.0, 2.0, 4.9])
    np.testing.assert_allclose(raw_accuracy(s, 1.0), norm.cdf(s), rtol=1e-12)
    np.testing.assert_allclose(raw_accuracy(s, 2.0), norm.cdf(s / 2.0), rtol=1e-12)


def test_raw_bound_hand_points():
    # a = Phi(1): B = 1 + phi(1) / Phi(1)  (Phi^-1(a) = 1)
    phi1, Phi1 = 0.24197072451914337, 0.8413447460685429
    # a = 0.975: Phi^-1 = 1.959963984540054, phi(q) = exp(-q^2/2)/sqrt(2 pi) = 0.05844506980503538
    q975 = 1.959963984540054
    phiq975 = math.exp(-q975 ** 2 / 2) / math.sqrt(2 * math.pi)
    assert phiq975 == pytest.approx(0.05844506980503538, rel=1e-12)
    got = raw_bound(np.array([Phi1, 0.975]))
    np.testing.assert_allclose(got, [1 + phi1 / Phi1, 1 + phiq975 / (0.975 * q975)], rtol=1e-9)
    np.testing.assert_allclose(got[0], 1.2875999709, rtol=1e-9)
    # NaN where a <= 0.5
    assert np.all(np.isnan(raw_bound(np.array([0.5, 0.3, 0.0]))))
    # tends to 1 as a -> 1 from above
    b = raw_bound(np.array([0.9, 0.99, 0.9999]))
    assert np.all(b > 1) and np.all(np.diff(b) < 0)


@pytest.mark.parametrize("s", [0.3, 1.0, 2.0])
def test_raw_bound_monte_carlo(s):
    rng = np.random.default_rng(int(s * 100))
    t = s + rng.standard_normal(2_000_000)
    pos = t[t > 0] / s
    mc, se = pos.mean(), pos.std() / np.sqrt(len(pos))
    got = float(raw_bound(np.array([norm.cdf(s)]))[0])
    assert abs(got - mc) < 4 * se, (got, mc, se)
    assert got == pytest.approx(1 + norm.pdf(s) / (s * norm.cdf(s)), rel=1e-9)


# ----------------------------------------------------------------------------------------------------------
# 7. expected_bound / score_ratio on a hand-built example
# ----------------------------------------------------------------------------------------------------------

def test_expected_bound_and_score_by_hand():
    grid = np.array([0.6, 0.65, 0.7, 0.8, 0.9])
    acc = np.array([0.65, 0.8, 0.95])
    bnd = np.array([2.0, 3.0, 5.0])
    # x=0.6: all three; x=0.65: 0.65 > 0.65 is False -> {0.8, 0.95}; x=0.7: {0.8, 0.95};
    # x=0.8: strict -> {0.95}; x=0.9: {0.95}.  Divide by S = 3 always.
    e_hand = np.array([10.0, 8.0, 8.0, 5.0, 5.0]) / 3
    np.testing.assert_allclose(expected_bound(acc, bnd, grid), e_hand, rtol=1e-12)

    # batched leading dims
    acc2 = np.stack([acc, np.array([0.5, 0.7, 0.9])])
    bnd2 = np.stack([bnd, np.array([1.0, 1.0, 4.0])])
    # second row: x=0.6: {0.7, 0.9} -> 5; x=0.65: 5; x=0.7: {0.9} -> 4; x=0.8: 4; x=0.9: strict -> 0
    e2 = np.array([[10.0, 8.0, 8.0, 5.0, 5.0], [5.0, 5.0, 4.0, 4.0, 0.0]]) / 3
    np.testing.assert_allclose(expected_bound(acc2, bnd2, grid), e2, rtol=1e-12)

    e_raw = np.array([6.0, 6.0, 3.0, 3.0, 1.5])
    # threshold 0.7 keeps x_k >= 0.7 (includes 0.7 itself): indices 2, 3, 4
    np.testing.assert_allclose(score_ratio(e2, e_raw, grid, 0.7),
                               [(8 + 5 + 5) / 3 / 7.5, (4 + 4 + 0) / 3 / 7.5], rtol=1e-12)
    np.testing.assert_allclose(score_ratio(e2[0], e_raw, grid, 0.65), (8 + 8 + 5 + 5) / 3 / 13.5, rtol=1e-12)
    np.testing.assert_allclose(score_ratio(e2[0], e_raw, grid, 0.75), (5 + 5) / 3 / 4.5, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# 8. Robust-probe invariants and epsilon validation
# ----------------------------------------------------------------------------------------------------------

def test_robust_probe_path():
    z, y = anisotropic_data(seed=9, D=8, n=1500)
    eps = [0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95]
    probe = RobustBayesProbe(EIG_FLOOR, eps).fit(T(z), T(y, torch.long))
    W = probe.weight.numpy()
    assert W.shape == (len(eps), 8)
    m1, m0, S = lda_stats(z, y)
    half = (m1 - m0) / 2
    lda = np.linalg.solve(S, half)
    cos_lda, cos_mean = [], []
    for e, We, unit in zip(eps, W, probe.unit.numpy()):
        # F1 v = F1 u - F1 D1 w = (m1-m0)/2 - S W (S full rank), and ||F1 v|| = ||v||
        v_norm = np.linalg.norm(half - S @ We)
        # 1e-8 relative, plus float round-off of forming S @ W
        assert abs(v_norm - e * np.linalg.norm(half)) <= (1e-8 * e + 1e-11) * np.linalg.norm(half)
        # agrees with a from-scratch probe (brentq root) in direction and scale
        W_me, _, unit_me = my_probe(z, y, e)
        np.testing.assert_allclose(We, W_me, rtol=1e-6, atol=1e-9 * np.abs(W_me).max())
        np.testing.assert_allclose(unit, unit_me, rtol=1e-6)
        cos_lda.append(cos(We, lda))
        cos_mean.append(cos(We, half))
    # the direction leaves LDA and moves toward the mean difference (u) monotonically
    assert cos_lda[0] > 1 - 1e-9
    assert np.all(np.diff(cos_lda) < 0), cos_lda
    assert np.all(np.diff(cos_mean) > 0), cos_mean
    assert cos_mean[-1] > cos_mean[0] + 0.05  # a real move on this anisotropic problem


@pytest.mark.parametrize("bad", [[-0.1], [1.0], [1.5], [0.0, 1.0], [0.2, -1e-9]])
def test_eps_out_of_range_raises(bad):
    with pytest.raises(ValueError):
        check_epsilons(bad)
    z, y = anisotropic_data(seed=1, D=4, n=200)
    with pytest.raises(ValueError):
        RobustBayesProbe(EIG_FLOOR, bad).fit(T(z), T(y, torch.long))


def test_check_epsilons_accepts_valid():
    out = check_epsilons([0, 0.5, 0.99])
    assert out == [0.0, 0.5, 0.99]
    assert all(isinstance(e, float) for e in out)

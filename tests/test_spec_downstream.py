"""Independent checks of the downstream softmax probe (synbench/probes/softmax.py) and the multi-class
representation-robustness bound (synbench/metrics/downstream.py) against their specification.

Every expected number is derived from the spec with closed forms, scikit-learn's LogisticRegression or numpy
computations written here (float64), never from the implementation's own outputs. CPU only, seeded, small.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from synbench.metrics.downstream import multiclass_bound
from synbench.probes.softmax import SoftmaxHead, SoftmaxProbe, fit_softmax

MAX_ITER = 1000


# ----------------------------------------------------------------------------------------------------------
# helpers (independent of the implementation)
# ----------------------------------------------------------------------------------------------------------

def blobs(k, d, n, seed, sep=1.0, scales=None, offsets=None, const_col=None, priors=None):
    """Gaussian blobs: class means ~ N(0, sep^2 I), unit noise; then columns scaled/shifted; optionally one
    column replaced by a constant. Returns float64 numpy arrays (x [n, d], y [n])."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * sep
    p = np.full(k, 1.0 / k) if priors is None else np.asarray(priors, float)
    y = rng.choice(k, size=n, p=p)
    y[:k] = np.arange(k)  # every class present
    x = means[y] + rng.normal(size=(n, d))
    if scales is not None:
        x = x * scales[None, :]
    if offsets is not None:
        x = x + offsets[None, :]
    if const_col is not None:
        x[:, const_col] = 3.7
    return x, y


def standardise(x_train, x):
    mu = x_train.mean(0)
    sd = x_train.std(0)  # ddof = 0
    safe = np.where(sd > 0, sd, 1.0)
    s = (x - mu) / safe
    s[:, sd == 0] = 0.0
    return s, mu, sd


def np_softmax(logits):
    m = logits - logits.max(1, keepdims=True)
    e = np.exp(m)
    return e / e.sum(1, keepdims=True)


def np_ce(logits, y):
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    return lse - logits[np.arange(len(y)), y]


def sklearn_fit(s, y, penalty):
    clf = LogisticRegression(C=1.0 / (penalty * len(y)), solver="lbfgs", tol=1e-10, max_iter=10000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(s, y)
    return clf


def t64(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def tlong(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.int64)


def head_np(head):
    w = head.weight.detach().cpu().numpy().astype(np.float64)
    b = head.bias.detach().cpu().numpy().astype(np.float64)
    return w, b


# Problems for the comparison with scikit-learn (K >= 3: sklearn's lbfgs is then multinomial).
PROBLEMS = {
    # name: (K, D, n, penalty, kwargs, torch dtype of z)
    "k3_d5_small": (3, 5, 300, 1e-2, {}, torch.float64),
    "k4_wild_scales": (4, 12, 800, 1e-3,
                       {"scales": 10.0 ** np.linspace(-4, 4, 12), "offsets": np.linspace(-5e3, 5e3, 12)},
                       torch.float64),
    "k5_const_feature": (5, 20, 2000, 1e-1, {"const_col": 7, "sep": 0.6}, torch.float64),
    "k3_float32_input": (3, 8, 500, 1.0, {"sep": 0.8}, torch.float32),
}


def problem(name, seed=0):
    k, d, n, pen, kw, dtype = PROBLEMS[name]
    x, y = blobs(k, d, n + 2000, seed, **kw)
    x_tr, y_tr, x_te, y_te = x[:n], y[:n], x[n:], y[n:]
    if dtype == torch.float32:  # the model sees float32 values: the references use exactly those, upcast
        x_tr = x_tr.astype(np.float32).astype(np.float64)
        x_te = x_te.astype(np.float32).astype(np.float64)
    return k, pen, dtype, x_tr, y_tr, x_te, y_te


_FITS: dict = {}


def fitted(name):
    """(problem, head, sklearn model) cached per module: each fit is done once."""
    if name not in _FITS:
        k, pen, dtype, x_tr, y_tr, x_te, y_te = problem(name)
        head = fit_softmax(torch.as_tensor(x_tr, dtype=dtype), tlong(y_tr), num_classes=k, penalty=pen,
                           max_iter=MAX_ITER)
        s_tr, _, _ = standardise(x_tr, x_tr)
        clf = sklearn_fit(s_tr, y_tr, pen)
        _FITS[name] = ((k, pen, dtype, x_tr, y_tr, x_te, y_te), head, clf)
    return _FITS[name]


# ----------------------------------------------------------------------------------------------------------
# 1. fit_softmax vs scikit-learn
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PROBLEMS))
def test_fit_softmax_matches_sklearn(name):
    (k, pen, dtype, x_tr, y_tr, x_te, y_te), head, clf = fitted(name)
    w, b = head_np(head)
    assert head.weight.shape == (k, x_tr.shape[1]) and head.bias.shape == (k,)
    for x, yy in ((x_tr, y_tr), (x_te, y_te)):
        s, _, _ = standardise(x_tr, x)
        p_ref = clf.predict_proba(s)
        p_got = np_softmax(x @ w.T + b)
        np.testing.assert_allclose(p_got, p_ref, atol=1e-3, rtol=0)
        acc_ref = float((clf.predict(s) == yy).mean())
        acc_got = head.accuracy(torch.as_tensor(x, dtype=dtype), tlong(yy))
        assert isinstance(acc_got, float)
        assert abs(acc_got - acc_ref) <= 0.005, (acc_got, acc_ref)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_logits_are_the_standardised_models_logits(name):
    """logits(z) = z @ weight.T + bias in float64, equal (up to a per-row constant, which softmax ignores) to
    sklearn's decision function on the standardised features."""
    (k, pen, dtype, x_tr, y_tr, x_te, y_te), head, clf = fitted(name)
    z = torch.as_tensor(x_te, dtype=dtype)
    lg = head.logits(z)
    assert lg.dtype == torch.float64 and lg.shape == (len(y_te), k)
    w, b = head_np(head)
    mag = np.abs(x_te) @ np.abs(w).T + np.abs(b)  # float64 cancellation scale (wild offsets make it large)
    assert np.all(np.abs(lg.numpy() - (x_te @ w.T + b)) <= 1e-12 * mag + 1e-12)
    s, _, _ = standardise(x_tr, x_te)
    ref = clf.decision_function(s)
    got = lg.numpy()
    np.testing.assert_allclose(got - got.mean(1, keepdims=True), ref - ref.mean(1, keepdims=True), atol=5e-3, rtol=0)
    pred = head.predict(z)
    assert pred.dtype == torch.int64 and pred.shape == (len(y_te),)
    np.testing.assert_array_equal(pred.numpy(), got.argmax(1))
    assert head.accuracy(z, tlong(y_te)) == pytest.approx(float((got.argmax(1) == y_te).mean()), abs=1e-12)


def test_head_dtypes_and_penalty():
    (k, pen, dtype, *_), head, _ = fitted("k3_float32_input")
    assert head.weight.dtype == torch.float64 and head.bias.dtype == torch.float64
    assert float(head.penalty) == pen


# ----------------------------------------------------------------------------------------------------------
# 2. optimality: the gradient of the objective, in standardised space, is ~0
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PROBLEMS))
def test_gradient_vanishes(name):
    (k, pen, dtype, x_tr, y_tr, *_), head, _ = fitted(name)
    w, b = head_np(head)
    s, mu, sd = standardise(x_tr, x_tr)
    W = w * sd[None, :]  # weight = W / sd  ->  W = weight * sd
    B = b + w @ mu  # bias = b - weight @ mu
    n = len(y_tr)
    P = np_softmax(s @ W.T + B)
    Y = np.eye(k)[y_tr]
    gW = (P - Y).T @ s / n + pen * W
    gB = (P - Y).mean(0)
    assert np.abs(gW).max() < 1e-5, np.abs(gW).max()
    assert np.abs(gB).max() < 1e-5, np.abs(gB).max()
    # the raw-feature head is the standardised one: same logits
    np.testing.assert_allclose(x_tr @ w.T + b, s @ W.T + B, atol=1e-7 * max(1.0, np.abs(s @ W.T).max()))


def test_constant_feature_gets_zero_weight():
    (k, pen, dtype, x_tr, y_tr, x_te, y_te), head, _ = fitted("k5_const_feature")
    assert torch.all(head.weight[:, 7] == 0)
    z = torch.as_tensor(x_te, dtype=dtype)
    z2 = z.clone()
    z2[:, 7] = torch.randn(len(z2), generator=torch.Generator().manual_seed(0), dtype=z.dtype) * 100
    assert torch.equal(head.logits(z), head.logits(z2))


# ----------------------------------------------------------------------------------------------------------
# 3. raw-feature units: rescaling / shifting a feature changes nothing but its weight
# ----------------------------------------------------------------------------------------------------------

def test_rescaling_a_feature_leaves_predictions_unchanged():
    k, d = 4, 6
    x, y = blobs(k, d, 600, seed=3, sep=0.7)
    z = t64(x)
    head = fit_softmax(z, tlong(y), num_classes=k, penalty=1e-2, max_iter=MAX_ITER)
    for j, factor, shift in ((2, 1000.0, 0.0), (0, 1e-3, 50.0), (5, 1000.0, -1e4)):
        z2 = z.clone()
        z2[:, j] = z2[:, j] * factor + shift
        head2 = fit_softmax(z2, tlong(y), num_classes=k, penalty=1e-2, max_iter=MAX_ITER)
        assert torch.equal(head2.predict(z2), head.predict(z))
        l1, l2 = head.logits(z).numpy(), head2.logits(z2).numpy()
        np.testing.assert_allclose(l2 - l2.mean(1, keepdims=True), l1 - l1.mean(1, keepdims=True), atol=1e-4)
        # weight of the rescaled feature scales by 1 / factor, the others are unchanged
        w1, w2 = head.weight.numpy(), head2.weight.numpy()
        w1c, w2c = w1 - w1.mean(0), w2 - w2.mean(0)
        np.testing.assert_allclose(w2c[:, j] * factor, w1c[:, j], atol=1e-4)
        others = [i for i in range(d) if i != j]
        np.testing.assert_allclose(w2c[:, others], w1c[:, others], atol=1e-4)


def test_wild_scales_fit_as_well_as_unit_scales():
    """The same problem on unit-scale and on wildly scaled columns gives the same predictions (standardisation
    makes the problem scale-free)."""
    k, d = 3, 10
    x, y = blobs(k, d, 500, seed=11, sep=0.7)
    scales = 10.0 ** np.linspace(-5, 5, d)
    h1 = fit_softmax(t64(x), tlong(y), num_classes=k, penalty=1e-2, max_iter=MAX_ITER)
    h2 = fit_softmax(t64(x * scales), tlong(y), num_classes=k, penalty=1e-2, max_iter=MAX_ITER)
    p1 = np_softmax(h1.logits(t64(x)).numpy())
    p2 = np_softmax(h2.logits(t64(x * scales)).numpy())
    np.testing.assert_allclose(p2, p1, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# 4. SoftmaxProbe
# ----------------------------------------------------------------------------------------------------------

def _check_choice(head, penalties):
    va = head.val_accuracy
    assert set(float(p) for p in va) == set(float(p) for p in penalties)
    best = max(va.values())
    expected = max(float(p) for p, a in va.items() if a == best)  # ties: the largest penalty
    assert float(head.penalty) == expected
    for a in va.values():
        assert 0.0 <= float(a) <= 1.0
    return expected


def test_probe_picks_best_penalty_and_refits_on_all_rows():
    k = 4
    x, y = blobs(k, 8, 600, seed=5, sep=0.5)
    z, yt = t64(x), tlong(y)
    pens = [1e-3, 1e-1, 10.0, 1e-2]
    probe = SoftmaxProbe(penalties=pens, val_fraction=0.25, max_iter=MAX_ITER)
    head = probe.fit(z, yt, num_classes=k, seed=0)
    chosen = _check_choice(head, pens)
    # validation accuracies are fractions of the ~val_fraction * n held-out rows
    n_val = [math.floor(0.25 * 600), math.ceil(0.25 * 600)]
    for a in head.val_accuracy.values():
        assert any(abs(a * m - round(a * m)) < 1e-9 for m in n_val), a
    # the refit (warm-started from the chosen penalty's held-out-split answer) and a cold fit on every row reach
    # the one optimum, each to the gradient tolerance 1e-9: with curvature >= the penalty (1e-3 or more) that
    # puts them within ~1e-5 of each other
    ref = fit_softmax(z, yt, num_classes=k, penalty=chosen, max_iter=MAX_ITER)
    torch.testing.assert_close(head.weight, ref.weight, rtol=0, atol=1e-5)
    torch.testing.assert_close(head.bias, ref.bias, rtol=0, atol=1e-5)


def test_probe_tie_goes_to_largest_penalty():
    """Well-separated blobs: every penalty classifies the held-out rows perfectly -> the largest is chosen."""
    k = 3
    x, y = blobs(k, 5, 300, seed=7, sep=15.0)
    pens = [1e-2, 1e-4, 1e-1, 1e-3]  # not sorted on purpose
    head = SoftmaxProbe(penalties=pens, val_fraction=0.3, max_iter=MAX_ITER).fit(t64(x), tlong(y), num_classes=k,
                                                                                 seed=1)
    assert all(a == 1.0 for a in head.val_accuracy.values()), head.val_accuracy
    assert float(head.penalty) == 1e-1


def test_probe_rejects_an_over_regularised_penalty():
    """Imbalanced classes: a huge penalty predicts the majority class (~50 %) and must lose to a small one."""
    k = 3
    x, y = blobs(k, 6, 800, seed=9, sep=3.0, priors=[0.5, 0.3, 0.2])
    pens = [1e4, 1e-3]
    head = SoftmaxProbe(penalties=pens, val_fraction=0.25, max_iter=MAX_ITER).fit(t64(x), tlong(y), num_classes=k,
                                                                                  seed=2)
    va = {float(p): a for p, a in head.val_accuracy.items()}
    assert va[1e-3] > va[1e4] + 0.2, va
    assert va[1e4] < 0.7, va
    assert float(head.penalty) == 1e-3
    _check_choice(head, pens)


def test_probe_is_deterministic_and_uses_its_seed():
    k = 3
    x, y = blobs(k, 6, 300, seed=4, sep=0.4)
    z, yt = t64(x), tlong(y)
    pens = [1e-1, 1.0, 10.0]
    probe = SoftmaxProbe(penalties=pens, val_fraction=0.3, max_iter=MAX_ITER)
    torch.manual_seed(123)
    np.random.seed(123)
    h1 = probe.fit(z, yt, num_classes=k, seed=0)
    torch.manual_seed(999)  # the global RNG state must not matter
    np.random.seed(999)
    h2 = SoftmaxProbe(penalties=pens, val_fraction=0.3, max_iter=MAX_ITER).fit(z.clone(), yt.clone(), num_classes=k,
                                                                               seed=0)
    assert torch.equal(h1.weight, h2.weight) and torch.equal(h1.bias, h2.bias)
    assert float(h1.penalty) == float(h2.penalty)
    assert h1.val_accuracy == h2.val_accuracy
    # different seeds hold out different rows: on noisy data the validation accuracies differ for some seed
    others = [probe.fit(z, yt, num_classes=k, seed=s).val_accuracy for s in (1, 2)]
    assert any(o != h1.val_accuracy for o in others)


@pytest.mark.parametrize("kwargs, token", [
    ({"penalties": [], "val_fraction": 0.2, "max_iter": 100}, "penalt"),
    ({"penalties": [1e-2, -0.5], "val_fraction": 0.2, "max_iter": 100}, "-0.5"),
    ({"penalties": [1e-2], "val_fraction": 0.0, "max_iter": 100}, "0.0"),
    ({"penalties": [1e-2], "val_fraction": 1.0, "max_iter": 100}, "1.0"),
    ({"penalties": [1e-2], "val_fraction": -0.25, "max_iter": 100}, "-0.25"),
    ({"penalties": [1e-2], "val_fraction": 1.5, "max_iter": 100}, "1.5"),
    ({"penalties": [1e-2], "val_fraction": 0.2, "max_iter": 0}, "0"),
    ({"penalties": [1e-2], "val_fraction": 0.2, "max_iter": -3}, "-3"),
])
def test_probe_bad_arguments(kwargs, token):
    x, y = blobs(3, 4, 60, seed=0)
    with pytest.raises(ValueError) as err:
        SoftmaxProbe(**kwargs).fit(t64(x), tlong(y), num_classes=3, seed=0)
    msg = str(err.value)
    assert "\n" not in msg.strip()
    assert token in msg.lower() if token == "penalt" else token in msg, msg


# ----------------------------------------------------------------------------------------------------------
# 5. multiclass_bound
# ----------------------------------------------------------------------------------------------------------

_TEMPLATE: dict = {}


def random_head(k, d, rng, scale=1.0):
    """A SoftmaxHead with random float64 weight/bias (built from a fitted head by dataclasses.replace)."""
    if (k, d) not in _TEMPLATE:
        x, y = blobs(k, d, 10 * k, seed=0)
        _TEMPLATE[(k, d)] = fit_softmax(t64(x), tlong(y), num_classes=k, penalty=1.0, max_iter=50)
    w = rng.normal(size=(k, d)) * scale
    b = rng.normal(size=k)
    head = dataclasses.replace(_TEMPLATE[(k, d)], weight=t64(w), bias=t64(b))
    assert isinstance(head, SoftmaxHead)
    return head, w, b


def bound_case(k, seed, n=150, d=7):
    rng = np.random.default_rng(seed)
    head, w, b = random_head(k, d, rng, scale=rng.uniform(0.3, 2.0))
    f = rng.normal(size=(n, d)) * 1.5
    y = rng.integers(0, k, size=n)
    # half the points: the true label is the argmax (so some get certified); deltas incl. exact zeros
    lg = f @ w.T + b
    y[: n // 2] = lg[: n // 2].argmax(1)
    delta = rng.exponential(0.3, size=n)
    delta[::10] = 0.0
    out = multiclass_bound(t64(f), tlong(y), head, t64(delta))
    return rng, head, w, b, f, y, delta, out


def expected_bounds(w, b, f, y, delta):
    lg = f @ w.T + b
    clean = np_ce(lg, y)
    spec = np.linalg.norm(w, 2)
    diffs = w[y][:, None, :] - w[None, :, :]  # [n, K, D]: w_y - w_j
    dn = np.linalg.norm(diffs, axis=2)  # [n, K]
    spectral = clean + np.sqrt(2.0) * spec * delta
    data = clean + dn.max(1) * delta
    marg = lg[np.arange(len(y)), y][:, None] - lg  # (w_y - w_j) . f + (b_y - b_j)
    ok = (marg > dn * delta[:, None])
    ok[np.arange(len(y)), y] = True
    cert = ok.all(1).astype(np.float64)
    return clean, spectral, data, cert, dn


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_bound_values_match_closed_forms(k):
    _, head, w, b, f, y, delta, out = bound_case(k, seed=100 + k)
    n = len(y)
    for key in ("clean_loss", "bound_spectral", "bound_data", "certified"):
        assert key in out, key
        assert isinstance(out[key], torch.Tensor) and out[key].shape == (n,), key
    clean, spectral, data, cert, _ = expected_bounds(w, b, f, y, delta)
    np.testing.assert_allclose(out["clean_loss"].double().numpy(), clean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["bound_spectral"].double().numpy(), spectral, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["bound_data"].double().numpy(), data, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(out["certified"].double().numpy(), cert)
    assert 0 < cert.sum() < n  # the case exercises both outcomes
    assert torch.all(out["bound_data"] <= out["bound_spectral"] + 1e-12)
    # delta = 0: both bounds are the clean loss
    z = delta == 0
    np.testing.assert_allclose(out["bound_data"].numpy()[z], clean[z], atol=1e-12)
    np.testing.assert_allclose(out["bound_spectral"].numpy()[z], clean[z], atol=1e-12)


def _perturbations(rng, w, f, y, delta, n_random=40):
    """Yields perturbed features f' [n, D] with ||f' - f|| <= delta: random directions on the sphere and
    inside the ball, and each w_j - w_y direction (the exact worst case for pair (y, j)'s margin)."""
    n, d = f.shape
    k = w.shape[0]
    for i in range(n_random):
        u = rng.normal(size=(n, d))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        r = delta if i % 2 == 0 else delta * rng.uniform(0, 1, size=n)
        yield f + u * r[:, None]
    for j in range(k):
        v = w[j][None, :] - w[y]
        nv = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(nv > 0, v / np.where(nv > 0, nv, 1.0), 0.0)
        yield f + v * delta[:, None]


def _pgd(w, b, f, y, delta, steps=60, start=None):
    """Projected gradient ascent on CE(W f' + b, y) over ||f' - f|| <= delta (normalised steps), from f' = f
    (or from f' = f, f = start when start is given: the ball is centred at start)."""
    k = w.shape[0]
    fp = f.copy()
    if start is not None:
        f = start
    for t in range(steps):
        step = delta * (0.5 if t < 20 else 0.1)
        p = np_softmax(fp @ w.T + b)
        g = (p - np.eye(k)[y]) @ w
        ng = np.linalg.norm(g, axis=1, keepdims=True)
        g = np.where(ng > 0, g / np.where(ng > 0, ng, 1.0), 0.0)
        fp = fp + g * step[:, None]
        dv = fp - f
        nd = np.linalg.norm(dv, axis=1)
        over = nd > delta
        fp[over] = f[over] + dv[over] * (delta[over] / nd[over])[:, None]
    return fp


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_bounds_hold_and_certificates_are_sound(k):
    rng, head, w, b, f, y, delta, out = bound_case(k, seed=200 + k)
    bd = out["bound_data"].double().numpy()
    bs = out["bound_spectral"].double().numpy()
    cert = out["certified"].double().numpy() == 1.0
    assert cert.any()
    worst = np.full(len(y), -np.inf)
    # random and pairwise-worst directions, plus projected gradient ascent on CE (from the clean point and
    # from a random start on the sphere)
    candidates = list(_perturbations(rng, w, f, y, delta))
    candidates += [_pgd(w, b, f, y, delta), _pgd(w, b, candidates[0], y, delta, start=f)]
    for fp in candidates:
        assert np.all(np.linalg.norm(fp - f, axis=1) <= delta * (1 + 1e-12) + 1e-15)
        lg = fp @ w.T + b
        ce = np_ce(lg, y)
        worst = np.maximum(worst, ce)
        assert np.all(ce <= bd + 1e-9), (ce - bd).max()
        assert np.all(ce <= bs + 1e-9)
        # certified points keep their label for every perturbation
        assert np.all(lg[cert].argmax(1) == y[cert])
        # the head's own logits are the ones used here
        np.testing.assert_allclose(head.logits(t64(fp)).numpy(), lg, rtol=1e-12, atol=1e-12)
    assert np.all(worst >= out["clean_loss"].numpy() - 1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_certificate_is_tight(k):
    """Criterion (ii) is exact for a linear head: an uncertified, correctly classified point is broken by the
    perturbation of norm delta along w_j - w_y for a violating class j."""
    _, head, w, b, f, y, delta, out = bound_case(k, seed=300 + k)
    cert = out["certified"].numpy() == 1.0
    lg = f @ w.T + b
    correct = lg.argmax(1) == y
    idx = np.where(~cert & correct & (delta > 0))[0]
    assert len(idx) > 0
    for i in idx:
        broken = False
        for j in range(k):
            if j == y[i]:
                continue
            v = w[j] - w[y[i]]
            fp = f[i] + delta[i] * v / np.linalg.norm(v)
            lp = fp @ w.T + b
            if lp[j] >= lp[y[i]] - 1e-9:
                broken = True
        assert broken, i
    # misclassified points are never certified
    assert not np.any(cert & ~correct)


def test_binary_certificate_is_the_signed_margin():
    _, head, w, b, f, y, delta, out = bound_case(2, seed=42, n=400)
    lg = f @ w.T + b
    signed = (2 * y - 1) * (lg[:, 1] - lg[:, 0])
    expected = (signed > np.linalg.norm(w[1] - w[0]) * delta).astype(np.float64)
    np.testing.assert_array_equal(out["certified"].double().numpy(), expected)
    # for K = 2 both data-dependent constants are ||w_1 - w_0||
    clean = np_ce(lg, y)
    np.testing.assert_allclose(out["bound_data"].numpy(), clean + np.linalg.norm(w[1] - w[0]) * delta,
                               rtol=1e-10, atol=1e-12)


def test_bound_on_a_fitted_head():
    """The bound with a head from fit_softmax (raw-feature units, non-standardised features)."""
    k, d = 4, 9
    x, y = blobs(k, d, 400, seed=21, sep=1.2, scales=10.0 ** np.linspace(-1, 1, d), offsets=np.linspace(0, 5, d))
    head = fit_softmax(t64(x), tlong(y), num_classes=k, penalty=1e-2, max_iter=MAX_ITER)
    w, b = head_np(head)
    rng = np.random.default_rng(0)
    delta = rng.uniform(0, 0.5, size=len(y))
    out = multiclass_bound(t64(x), tlong(y), head, t64(delta))
    clean, spectral, data, cert, _ = expected_bounds(w, b, x, y, delta)
    np.testing.assert_allclose(out["clean_loss"].numpy(), clean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["bound_spectral"].numpy(), spectral, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["bound_data"].numpy(), data, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(out["certified"].numpy(), cert)
    fp = _pgd(w, b, x, y, delta)
    assert np.all(np_ce(fp @ w.T + b, y) <= out["bound_data"].numpy() + 1e-9)

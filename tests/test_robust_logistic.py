"""The adversarially trained logistic probe: exact inner max, and the clean/robust trade-off it buys."""

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from synbench.probes import RobustLogisticProbe, robust_logistic_loss


def ball_boundary(norm, radius, dim, n=20000, seed=0):
    """Candidate perturbations: l-inf vertices (where a linear function peaks) or dense l2 sphere points."""
    if norm == "linf":
        return radius * torch.tensor(list(itertools.product([-1.0, 1.0], repeat=dim)), dtype=torch.float64)
    g = torch.randn((n, dim), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return radius * g / g.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_robust_loss_equals_a_brute_force_inner_max(norm):
    g = torch.Generator().manual_seed(1)
    z = torch.randn((30, 3), generator=g, dtype=torch.float64)
    y = (torch.rand(30, generator=g) < 0.5).long()
    w, b, r = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64), 0.35
    deltas = ball_boundary(norm, r, 3)
    sign = (2 * y - 1).double()
    worst = F.softplus(-sign[:, None] * ((z[:, None, :] + deltas[None]) @ w + b)).max(1).values
    exact = robust_logistic_loss(w, b, z, y, r, norm)
    tol = 1e-12 if norm == "linf" else 1e-4  # vertices are exact; sphere samples approach the max from below
    assert worst.mean() <= exact + 1e-12 and exact - worst.mean() < tol
    assert robust_logistic_loss(w, b, z, y, 0.0, norm) < exact


def two_feature_data(n=4000, seed=0):
    """Feature 0: near-perfect but with a tiny margin (non-robust); feature 1: noisier but wide (robust)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.5).long()
    s = (2 * y - 1).double()
    z = torch.stack([0.3 * s + 0.1 * torch.randn(n, generator=g, dtype=torch.float64),
                     2.0 * s + 1.2 * torch.randn(n, generator=g, dtype=torch.float64)], 1)
    return z, y


def test_larger_radius_trades_clean_for_robust_accuracy():
    z, y = two_feature_data()
    zt, yt = two_feature_data(seed=1)
    radii = [0.0, 0.2, 0.4, 0.6, 0.8]
    eval_r = torch.tensor([0.8], dtype=torch.float64)
    clean, robust = [], []
    for r in radii:
        p = RobustLogisticProbe(r, "l2", 1e-4, 200).fit(z, y)
        clean.append(float(p.accuracy(zt, yt, torch.zeros(1, dtype=torch.float64))))
        robust.append(float(p.accuracy(zt, yt, eval_r)))
        assert p.labels == [f"r_{r:.2f}"] and float(p.radius) == r
    assert all(b <= a + 1e-3 for a, b in zip(clean, clean[1:])), clean
    assert all(b >= a - 1e-3 for a, b in zip(robust, robust[1:])), robust
    assert clean[0] - clean[-1] > 0.02 and robust[-1] - robust[0] > 0.5


def test_fitted_probe_minimises_its_robust_objective():
    z, y = two_feature_data(n=500)
    probe = RobustLogisticProbe(0.3, "linf", 1e-3, 300).fit(z, y)
    w, b = probe.weight[0], probe.bias[0]

    def objective(w_, b_):
        return robust_logistic_loss(w_, b_, z, y, 0.3, "linf") + 0.5e-3 * w_.dot(w_)

    best = objective(w, b)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):  # no nearby point does better
        dw = 1e-2 * torch.randn(2, generator=g, dtype=torch.float64)
        db = 1e-2 * torch.randn((), generator=g, dtype=torch.float64)
        assert objective(w + dw, b + db) >= best - 1e-9
    # the margin convention: margin = w . z + bias = (z - center) . w
    assert torch.allclose(probe.margins(z)[0], z @ w + b)


@pytest.mark.parametrize("kw, needle", [
    (dict(radius=-1.0), "probe.radius=-1.0"), (dict(norm="l1"), "probe.norm='l1'"),
    (dict(weight_decay=-1.0), "probe.weight_decay"), (dict(max_iter=0), "probe.max_iter=0")])
def test_bad_probe_settings_are_one_line_errors(kw, needle):
    args = dict(radius=0.5, norm="l2", weight_decay=0.0, max_iter=10) | kw
    with pytest.raises(ValueError, match=re.escape(needle)):
        RobustLogisticProbe(**args)


def test_robust_accuracy_of_a_linear_head_is_exact():
    z, y = two_feature_data(n=300)
    probe = RobustLogisticProbe(0.2, "linf", 1e-4, 100).fit(z, y)
    r = 0.2
    w = probe.weight[0]
    # brute force: the l-inf worst case of a linear head sits at a vertex of the box
    vertices = torch.tensor(list(itertools.product([-r, r], repeat=2)), dtype=torch.float64)
    sign = (2 * y - 1).double()
    worst = (sign[:, None] * (((z[:, None, :] + vertices[None]) - probe.center) @ w)).min(1).values
    assert math.isclose(float(probe.accuracy(z, y)), float((worst > 0).double().mean()), abs_tol=1e-12)

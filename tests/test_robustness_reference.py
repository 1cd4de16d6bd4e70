"""The raw-input reference of the robustness metric, per radius, against independent computations.

The reference (synbench/metrics/robustness.py, docs/robustness.md) is what the Bayes-optimal classifier of the raw
mixture certifies at each input-space radius: a number every encoder can be read against, and the test of whether
a radius means anything for the input size. Here it is checked against scipy's closed form and against Monte
Carlo samples of the mixture attacked by the exact worst case of a linear classifier, and a job with a vacuous
radius must mark it in its scalars and warn.
"""

import logging
import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy import stats

from synbench import app
from synbench.data import GaussianMixture, Split
from synbench.metrics.robustness import linear_certified, raw_reference, warn_vacuous

N_MC = 40_000


def mixture(direction, shape=(1, 8, 8), prior=0.5, noise_std=1.0):
    return GaussianMixture(shape=shape, prior=prior, noise_std=noise_std, mean=0.5, direction=direction,
                           direction_seed=3, lowfreq_res=2, chunk_size=4096)


def samples(mix, scale, n=N_MC, seed=0):
    xs, ys = zip(*mix.stream(scale, Split.test, n, seed, n, "cpu"))
    return torch.cat(xs).double().flatten(1).numpy(), torch.cat(ys).numpy()


def mc_certified(x, y, w, t, mean, eps, norm):
    """Fraction of points the linear rule ``w . (x - mean) > t`` keeps correct under its exact worst
    perturbation: ``-y_pm eps sign(w)`` (l-inf) or ``-y_pm eps w / ||w||_2`` (l2), applied to the points."""
    ypm = 2.0 * y - 1.0
    step = np.sign(w) if norm == "linf" else w / np.linalg.norm(w)
    x_adv = x - eps * ypm[:, None] * step[None, :]
    pred = (x_adv - mean) @ w > t
    return float(np.mean(pred == (y == 1)))


def within(mc, exact, n=N_MC, sd=4.5):
    return abs(mc - exact) <= sd * math.sqrt(max(exact * (1 - exact), 1e-4) / n)


@pytest.mark.parametrize("direction, norm, prior, scale, eps", [
    ("ones", "linf", 0.5, 1.5, [0.0, 0.05, 0.15, 0.25]),
    ("random", "linf", 0.5, 2.0, [0.0, 0.05, 0.2, 0.3]),
    ("lowfreq", "linf", 0.5, 2.0, [0.0, 0.1, 0.25]),
    ("random", "l2", 0.5, 2.0, [0.0, 0.5, 1.5, 2.5]),
    ("ones", "linf", 0.3, 1.5, [0.0, 0.1, 0.2]),
], ids=str)
def test_reference_per_radius_matches_scipy_and_an_attacked_monte_carlo(direction, norm, prior, scale, eps):
    """Certified fraction = Phi((s - eps ||mu||_*) / sigma) for equal priors (||mu||_1 for l-inf, 1 for l2), and
    the same on 40k mixture samples whose linear Bayes rule is attacked at its exact worst case."""
    sigma = 1.3
    mix = mixture(direction, prior=prior, noise_std=sigma)
    mu = mix.mu("cpu").double().flatten().numpy()
    ref = raw_reference(mix.mu("cpu"), scale, sigma, prior, norm, eps)
    dual = np.abs(mu).sum() if norm == "linf" else 1.0
    assert ref.dual_norm == pytest.approx(dual, rel=1e-6)
    x, y = samples(mix, scale)
    # the Bayes threshold of the projection mu . (x - mean): where the two weighted class densities cross
    t = 0.0 if prior == 0.5 else sigma ** 2 * math.log((1 - prior) / prior) / (2 * scale)
    for k, e in enumerate(eps):
        if prior == 0.5:
            assert ref.certified[k] == pytest.approx(stats.norm.cdf((scale - e * dual) / sigma), rel=1e-6, abs=1e-12)
        else:
            exact = (prior * stats.norm.sf((t - scale + e * dual) / sigma)
                     + (1 - prior) * stats.norm.cdf((t + scale - e * dual) / sigma))
            assert ref.certified[k] == pytest.approx(exact, rel=1e-6)
        mc = mc_certified(x, y, mu, t, mix.mean, e, norm)
        assert within(mc, ref.certified[k]), (e, mc, ref.certified[k])
    assert np.all(np.diff(ref.certified) < 0)  # a larger radius certifies less


@pytest.mark.parametrize("direction, norm, scale, eps", [
    ("random", "linf", 2.0, [0.0, 0.1, 0.2, 0.35]), ("lowfreq", "linf", 2.0, [0.1, 0.3]),
    ("ones", "linf", 1.5, [0.1, 0.3]), ("random", "l2", 2.0, [0.5, 1.5, 2.5])], ids=str)
def test_best_any_classifier_can_reach_is_attained_by_a_linear_rule(direction, norm, scale, eps):
    """``optimal``: the linear rule along s mu - z* (z* = s mu clipped to the ball) attacked at its exact worst
    case reaches it (Monte Carlo), it is never below the Bayes rule's certified fraction nor below the prior's
    0.5, and for l2 it is Phi(max(0, s - eps))."""
    mix = mixture(direction)
    mu = mix.mu("cpu").double().flatten().numpy()
    ref = raw_reference(mix.mu("cpu"), scale, 1.0, 0.5, norm, eps)
    x, y = samples(mix, scale, seed=1)
    for k, e in enumerate(eps):
        if norm == "linf":
            w = scale * mu - np.clip(scale * mu, -e, e)
        else:
            w = scale * mu * max(0.0, 1 - e / scale)
            assert ref.optimal[k] == pytest.approx(stats.norm.cdf(max(0.0, scale - e)), rel=1e-6)
        assert ref.optimal[k] >= max(ref.certified[k], 0.5) - 1e-9
        if np.linalg.norm(w) > 0:
            mc = mc_certified(x, y, w, 0.0, mix.mean, e, norm)
            assert within(mc, ref.optimal[k]), (e, mc, ref.optimal[k])
        else:
            assert ref.optimal[k] == 0.5
    if direction == "random" and norm == "linf":  # a sparse-ish mean: the Bayes rule is not the robust optimum
        assert ref.optimal[-1] > ref.certified[-1] + 0.1


def test_radii_where_the_reference_is_one_half_and_one_percent():
    mix = mixture("ones", shape=(1, 28, 28))
    ref = raw_reference(mix.mu("cpu"), 2.2, 1.0, 0.5, "linf", [0.0])
    assert ref.radius_at_half == pytest.approx(2.2 / 28, rel=1e-6)
    assert ref.radius_vacuous == pytest.approx((2.2 - stats.norm.ppf(0.01)) / 28, rel=1e-6)
    gap = 2.2 * float(mix.mu("cpu").double().norm())  # s, up to the float32 rounding of the unit mu
    for prior in (0.5, 0.2):  # unequal priors: solved numerically, must land on the level
        r = raw_reference(mix.mu("cpu"), 2.2, 1.0, prior, "linf", [0.0])
        for radius, level in ((r.radius_at_half, 0.5), (r.radius_vacuous, 0.01)):
            assert linear_certified(gap, 1.0, prior, radius * r.dual_norm) == pytest.approx(level, rel=1e-9)


def test_the_issues_numbers_and_the_vacuous_mark(caplog):
    """1x28x28, direction ones, s = 2.2, sigma = 1 (issue 31): 0.2 moves a point 5.6 > 2.2 along mu, so the reference
    certifies Phi(-3.4) = 0.0003 there (vacuous), Phi(0.8) = 0.79 at 0.05; the warning names the radius, the value
    and a fix."""
    mix = mixture("ones", shape=(1, 28, 28))
    eps = [0.0, 0.05, 0.1, 0.2]
    ref = raw_reference(mix.mu("cpu"), 2.2, 1.0, 0.5, "linf", eps)
    assert ref.certified[1] == pytest.approx(stats.norm.cdf(0.8), rel=1e-6)
    assert ref.certified[2] == pytest.approx(stats.norm.cdf(-0.6), rel=1e-6)
    assert ref.certified[3] == pytest.approx(stats.norm.cdf(-3.4), rel=1e-5)
    assert ref.vacuous == (False, False, False, True)
    edge = raw_reference(mix.mu("cpu"), 2.2, 1.0, 0.5, "linf", [ref.radius_vacuous * 0.999, ref.radius_vacuous * 1.001])
    assert edge.vacuous == (False, True)  # the mark switches at 1% exactly
    assert ref.optimal[3] == pytest.approx(0.5)  # no classifier at all beats the prior there
    with caplog.at_level(logging.WARNING, logger="synbench.metrics.robustness"):
        msg = warn_vacuous(ref, (1, 28, 28))
    [rec] = [r for r in caplog.records if r.name == "synbench.metrics.robustness"]
    assert rec.getMessage() == msg
    for needle in ("attack.eps=0.2 vacuous", "1x28x28", "0.00034", "= 5.6", "s = 2.2", "below 0.0786",
                   "attack=pgd_linf_small"):
        assert needle in msg, needle
    assert warn_vacuous(raw_reference(mix.mu("cpu"), 2.2, 1.0, 0.5, "linf", eps[:3]), (1, 28, 28)) is None


def test_bound_radii_are_set_apart_from_the_attack_group(cfg_factory):
    """By default the bound attacks at the `attack` group's radii; metrics.robustness.attack.eps sets its own
    without touching a downstream attack's; the small-input preset is not vacuous on 1x28x28."""
    cfg = cfg_factory("metrics=[synbench,probe,robustness]")
    assert cfg.metrics.robustness.attack == cfg.attack
    cfg = cfg_factory("metrics=[synbench,probe,robustness]", "metrics.robustness.attack.eps=[0.0,0.001]",
                      "attack=pgd_linf_small")
    assert list(cfg.metrics.robustness.attack.eps) == [0.0, 0.001]
    small = list(cfg.attack.eps)
    assert small[0] == 0.0 and len(small) >= 4
    ref = raw_reference(mixture("ones", shape=(1, 28, 28)).mu("cpu"), 2.2, 1.0, 0.5, "linf", small)
    assert not any(ref.vacuous) and min(ref.certified) > 0.5


def test_a_job_marks_a_vacuous_radius_and_logs_every_radius(cfg_factory, tmp_path, caplog):
    """test_vit at 32x32 (d = 3072, ||mu||_1 = 55.4) attacked at s = 0.5: eps 0.2 moves a point 11 along mu, far past
    the half-gap: vacuous; 0.005 is not. Every radius gets its scalars; the old max_eps keys keep the last."""
    cfg = cfg_factory("metrics=[synbench,probe,robustness]", "model.input_size=32", "mixture.scales=[0.5,2.5]",
                      "mixture.n_train=32", "mixture.n_test=32", "metrics.robustness.scale=0.5",
                      "metrics.robustness.n_points=8", "attack.steps=1", "attack.eps=[0.0,0.005,0.2]",
                      "tracking.run_name=vacuous")
    with caplog.at_level(logging.WARNING, logger="synbench.metrics.robustness"):
        summary = app.run(cfg, tmp_path / "job")
    s = summary["scalars"]
    for e, certified in (("0", stats.norm.cdf(0.5)), ("0.005", stats.norm.cdf(0.5 - 0.005 * math.sqrt(3072))),
                         ("0.2", stats.norm.cdf(0.5 - 0.2 * math.sqrt(3072)))):
        assert s[f"robustness/reference/certified/eps_{e}"] == pytest.approx(certified, rel=1e-5)
        assert s[f"robustness/reference/vacuous/eps_{e}"] == (1.0 if e == "0.2" else 0.0)
    assert s["robustness/reference/n_vacuous"] == 1.0
    assert s["robustness/reference/radius_at_0.5"] == pytest.approx(0.5 / math.sqrt(3072), rel=1e-6)
    labels = {k.split("/")[1] for k in s if k.endswith("/criterion/max_eps")}
    assert labels and "reference" not in labels
    for lab in labels:
        for key in ("criterion", "bound_data", "robust_accuracy"):
            per = [s[f"robustness/{lab}/{key}/eps_{e}"] for e in ("0", "0.005", "0.2")]
            assert s[f"robustness/{lab}/{key}/max_eps"] == per[-1]
    [rec] = [r for r in caplog.records if r.name == "synbench.metrics.robustness"]
    assert "attack.eps=0.2 vacuous" in rec.getMessage() and "3x32x32" in rec.getMessage()
    run = MlflowClient(cfg.tracking.uri).get_run(summary["run_id"])
    assert run.data.metrics["robustness/reference/vacuous/eps_0.2"] == 1.0
    assert (tmp_path / "job" / "plots" / "robustness_certified_vs_eps.png").is_file()

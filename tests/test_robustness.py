"""PGD and the representation-robustness bound: exact on linear maps, invariants on a real timm model."""

import math
import re

import pytest
import torch
from torch import nn

from synbench.attacks import PGD
from synbench.data import GaussianMixture, Split
from synbench.encoders import Encoder, Precision, embed_mixture
from synbench.metrics import MetricInputs
from synbench.metrics.robustness import RepresentationRobustness
from synbench.probes import RobustBayesProbe, RobustLogisticProbe

SHAPE = (3, 4, 4)
D = 48


def linear_encoder(matrix: torch.Tensor) -> Encoder:
    lin = nn.Linear(D, matrix.shape[0], bias=False)
    lin.weight.data = matrix.float()
    return Encoder(nn.Sequential(nn.Flatten(), lin), SHAPE, [0.0] * 3, [1.0] * 3, {"name": "linear"})


def pgd(norm, steps=40, restarts=1, eps=(0.0,)):
    return PGD(norm=norm, eps=eps, steps=steps, restarts=restarts, step_factor=2.5, batch_size=64)


def test_pgd_reaches_the_l2_operator_norm_of_a_linear_map():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    v, _ = torch.linalg.qr(torch.randn(D, 8, generator=g))
    a = u @ torch.diag(torch.tensor([3.0, 1.0, 0.9, 0.8, 0.5, 0.4, 0.2, 0.1])) @ v.T  # sigma_max = 3
    enc = linear_encoder(a)
    x = torch.randn((16, *SHAPE), generator=g)
    with torch.no_grad():
        f0 = enc(x)
    eps = 0.7

    def attack(step_factor):
        p = PGD(norm="l2", eps=(eps,), steps=40, restarts=1, step_factor=step_factor, batch_size=64)
        return p.maximise(lambda xa: (enc(xa) - f0).norm(dim=1), x, eps, torch.Generator().manual_seed(1))[1]

    # on a sphere PGD is a normalised power iteration whose total path is step_factor * eps: the spec's 2.5
    # gets within 3% here, a longer path (a config knob) within 1%; never above the supremum
    for step_factor, within in ((2.5, 0.97), (10.0, 0.99)):
        shift = attack(step_factor)
        assert torch.all(shift <= 3.0 * eps * (1 + 1e-5)) and torch.all(shift >= within * 3.0 * eps)


def test_pgd_reaches_the_linf_supremum_of_a_linear_functional():
    a = torch.randn((1, D), generator=torch.Generator().manual_seed(2))
    enc = linear_encoder(a)
    x = torch.rand((8, *SHAPE), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f0 = enc(x)
    eps = 0.05
    x_adv, shift = pgd("linf", steps=5).maximise(lambda xa: (enc(xa) - f0).norm(dim=1), x, eps,
                                                 torch.Generator().manual_seed(0))
    assert torch.allclose(shift, torch.full_like(shift, eps * float(a.abs().sum())), rtol=1e-4)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6


def test_pgd_respects_the_pixel_box_and_is_seeded():
    enc = linear_encoder(torch.randn((4, D), generator=torch.Generator().manual_seed(4)))
    x = torch.rand((8, *SHAPE), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        f0 = enc(x)

    def run(seed):
        return pgd("l2", steps=5).maximise(lambda xa: (enc(xa) - f0).norm(dim=1), x, 2.0,
                                           torch.Generator().manual_seed(seed), pixel_range=(0.0, 1.0))

    (xa, va), (xb, vb) = run(0), run(0)
    assert torch.equal(xa, xb) and torch.equal(va, vb)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float((xa - x).flatten(1).norm(dim=1).max()) <= 2.0 + 1e-5


@pytest.mark.parametrize("kw, needle", [
    (dict(norm="l1"), "attack.norm='l1'"), (dict(steps=0), "attack.steps=0"),
    (dict(restarts=0), "attack.restarts=0"), (dict(step_factor=0.0), "attack.step_factor"),
    (dict(eps=(0.0, -0.1)), "attack.eps=[0.0, -0.1]"), (dict(eps=()), "attack.eps=[]")])
def test_bad_attack_settings_are_one_line_errors(kw, needle):
    args = dict(norm="linf", eps=(0.0, 0.1), steps=5, restarts=1, step_factor=2.5, batch_size=8) | kw
    with pytest.raises(ValueError, match=re.escape(needle)):
        PGD(**args)


def test_negative_epsilon_is_rejected():
    with pytest.raises(ValueError, match="metrics.robustness.n_points=0"):
        RepresentationRobustness(pgd("linf"), scale=1.0, n_points=0)
    enc = linear_encoder(torch.randn((1, D)))
    with pytest.raises(ValueError, match="attack epsilon -1"):
        pgd("linf").maximise(lambda xa: enc(xa).norm(dim=1), torch.zeros((1, *SHAPE)), -1.0, torch.Generator())


def metric_inputs(enc, probe, scales, n=256, chunk=64):
    mix = GaussianMixture(shape=SHAPE, prior=0.5, noise_std=1.0, mean=0.5, direction="ones", direction_seed=0,
                          lowfreq_res=2, chunk_size=chunk)
    emb = embed_mixture(enc, mix, scales, {Split.train: n, Split.test: n}, 0, 64, torch.device("cpu"),
                        Precision.fp32, progress=False)
    return MetricInputs(emb, enc, mix, probe, 0, Precision.fp32)


def test_bound_is_exact_for_a_one_dimensional_linear_representation():
    """f(x) = a . x: Delta_f = eps ||a||_1 (l-inf), the worst case of the head is known in closed form."""
    a = torch.randn((1, D), generator=torch.Generator().manual_seed(6))
    enc = linear_encoder(a)
    inputs = metric_inputs(enc, RobustBayesProbe(1e-12, [0.0]), [1.0])
    eps = [0.0, 0.01, 0.03]
    metric = RepresentationRobustness(pgd("linf", steps=5, eps=eps), scale=1.0, n_points=64)
    res = metric.compute(inputs)
    lab = "eps_0.00"
    # analytic: margins drop by exactly |w| eps ||a||_1 at the worst point
    probe = inputs.probe.fit(inputs.embeddings.z[Split.train][0], inputs.embeddings.y[Split.train][0])
    x, y = next(inputs.mixture.stream(1.0, Split.test, 64, 0, 64, "cpu"))
    with torch.no_grad():
        f = enc(x).double()
    sign = (2 * y - 1).double()
    m = sign * (f @ probe.weight[0] + probe.bias[0])
    w = float(probe.weight[0].abs())
    for k, e in enumerate(eps):
        delta = e * float(a.abs().sum())
        assert res.curves["delta_f/mean"].y[k] == pytest.approx(delta, rel=1e-3, abs=1e-6)
        worst = torch.nn.functional.softplus(-(m - w * delta)).mean()
        assert res.curves[f"{lab}/adv_loss"].y[k] == pytest.approx(float(worst), rel=1e-3)
        assert res.curves[f"{lab}/criterion"].y[k] == pytest.approx(float((m > w * delta).double().mean()))
        assert res.curves[f"{lab}/robust_accuracy"].y[k] == pytest.approx(float((m > w * delta).double().mean()))
        spectral = float(torch.nn.functional.softplus(-m).mean()) + w * delta
        assert res.curves[f"{lab}/bound_spectral"].y[k] == pytest.approx(spectral, rel=1e-4)


@pytest.mark.slow
def test_bound_holds_on_a_timm_model_for_trained_probes():
    from synbench.encoders.timm_encoder import load_timm_encoder

    enc = load_timm_encoder("test_vit", False, None, "model", 0)
    mix = GaussianMixture(shape=enc.input_shape, prior=0.5, noise_std=1.0, mean=0.5, direction="random",
                          direction_seed=0, lowfreq_res=4, chunk_size=32)
    emb = embed_mixture(enc, mix, [3.0], {Split.train: 96, Split.test: 32}, 0, 32, torch.device("cpu"),
                        Precision.fp32, progress=False)
    for probe in (RobustLogisticProbe(0.0, "l2", 1e-2, 100), RobustLogisticProbe(0.1, "l2", 1e-2, 100)):
        inputs = MetricInputs(emb, enc, mix, probe, 0, Precision.fp32)
        res = RepresentationRobustness(pgd("linf", steps=4, eps=(0.0, 0.004, 0.016)), 3.0, 32).compute(inputs)
        [lab] = probe.fit(emb.z[Split.train][0], emb.y[Split.train][0]).labels
        c = {k.split("/", 1)[1]: v.y for k, v in res.curves.items() if k.startswith(lab)}
        for k in range(3):
            assert c["adv_loss"][k] <= c["bound_data"][k] * (1 + 1e-5) + 1e-6
            assert c["bound_data"][k] <= c["bound_spectral"][k] * (1 + 1e-6) + 1e-6
            assert c["criterion"][k] <= c["robust_accuracy"][k] + 1e-9
            assert c["certified_but_broken"][k] == 0.0
            assert c["robust_accuracy"][k] <= c["clean_accuracy"][k] + 1e-9
        assert c["adv_loss"][0] == pytest.approx(c["clean_loss"][0])
        assert c["adv_loss"][2] > c["adv_loss"][0]  # the attack does something
        assert all(math.isfinite(v) for v in res.curves["delta_f/max"].y)
        assert res.curves["delta_f/mean"].y[2] > res.curves["delta_f/mean"].y[1] > 0

"""RMQM: a hand-computed value, invariances, the degenerate case, the identity under noise, the shared PGD
loop's pass count, determinism, and bad input before any run."""

import logging
import math

import pytest
import torch
from torch import nn

from synbench.data import GaussianMixture, Split
from synbench.encoders import Encoder, Precision
from synbench.metrics.rmqm import RMQM, trajectory_stats

SHAPE = (3, 4, 4)


def unit(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


def chord(a, b):
    """Distance of two unit vectors at angles a, b (degrees)."""
    return 2 * math.sin(math.radians(abs(a - b)) / 2)


def test_hand_computed_rmqm_of_explicit_trajectories():
    # two points; raw features of any length (normalised inside), angles per level
    angles = [[0, 20, 50, 90], [10, 40, 50, 100]]
    lengths = [1.0, 3.0]
    z = torch.tensor([[[lengths[i] * c for c in unit(angles[i][a])] for i in range(2)] for a in range(4)],
                     dtype=torch.float64)
    o = [[chord(ang[a], ang[0]) for a in (1, 2, 3)] for ang in angles]
    p = [[chord(ang[a], ang[a - 1]) for a in (1, 2, 3)] for ang in angles]
    ro = [[(r[k] - r[k - 1]) / r[k - 1] for k in (1, 2)] for r in o]
    rp = [[(r[k] - r[k - 1]) / r[k - 1] for k in (1, 2)] for r in p]
    mean = lambda rows: sum(sum(r) / len(r) for r in rows) / len(rows)  # noqa: E731
    d_o, d_p = mean(o), mean(p)
    s_o, s_p = mean([[abs(v) for v in r] for r in ro]), mean([[abs(v) for v in r] for r in rp])
    stats = trajectory_stats(z)
    assert stats["D_o"] == pytest.approx(d_o, rel=1e-9) and stats["D_p"] == pytest.approx(d_p, rel=1e-9)
    assert stats["S_o"] == pytest.approx(s_o, rel=1e-9) and stats["S_p"] == pytest.approx(s_p, rel=1e-9)
    assert stats["rmqm"] == pytest.approx(math.log(1 + d_o + d_p + 1 / s_o + 1 / s_p), rel=1e-9)


def test_a_point_with_a_non_finite_relative_change_is_dropped_from_that_statistic_only():
    # point 1 does not move from level 0 to 1 (o^1 = 0): its ro row divides by zero; its rp row too
    good = [[1, 0], [math.cos(0.2), math.sin(0.2)], [math.cos(0.5), math.sin(0.5)], [0, 1]]
    stuck = [[1, 0], [1, 0], [math.cos(0.3), math.sin(0.3)], [math.cos(0.4), math.sin(0.4)]]
    both = trajectory_stats(torch.tensor([good, stuck], dtype=torch.float64).transpose(0, 1))
    alone = trajectory_stats(torch.tensor([good], dtype=torch.float64).transpose(0, 1))
    assert both["S_o"] == pytest.approx(alone["S_o"]) and both["S_p"] == pytest.approx(alone["S_p"])
    assert both["D_o"] != pytest.approx(alone["D_o"])  # distances are finite for both: both count


def test_rmqm_is_unchanged_when_the_representation_is_scaled():
    z = torch.randn(6, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = trajectory_stats(z), trajectory_stats(17.5 * z)
    assert all(a[k] == pytest.approx(b[k], rel=1e-12) for k in ("D_o", "D_p", "S_o", "S_p", "rmqm"))


def mixture():
    return GaussianMixture(SHAPE, 0.5, 1.0, 0.5, "random", 0, 2, 8)


def inputs_for(encoder, n=8, seed=0):
    """MetricInputs with just what RMQM reads (no embedding pass needed)."""
    from synbench.encoders import Embeddings
    from synbench.metrics import MetricInputs

    emb = Embeddings([1.0], {Split.train: torch.zeros(1, n, 1), Split.test: torch.zeros(1, n, 1)},
                     {Split.train: torch.zeros(1, n), Split.test: torch.zeros(1, n)}, 0, 0.0)
    return MetricInputs(emb, encoder, mixture(), None, seed, Precision.fp32)


def metric(**over):
    args = dict(scale=1.0, n_points=8, batch_size=4, noise_levels=12, sigma_max=0.1, pgd_levels=6,
                pgd_alpha=0.05, pgd_radius=0.3, pgd_offset=1e-3)
    args.update(over)
    return RMQM(**args)


def identity():
    return Encoder(nn.Flatten(), SHAPE, [0.0] * 3, [1.0] * 3, {"name": "identity"})


def test_identity_under_noise_moves_linearly_in_sigma():
    res = metric().compute(inputs_for(identity()))
    curve = res.curves["noise/o"]
    ratio = [o / s for s, o in zip(curve.x, curve.y)]
    assert max(ratio) / min(ratio) < 1.25  # o^a = sigma_a x a constant (up to noise draws and normalisation)
    sig = torch.tensor(curve.x, dtype=torch.float64)
    o = torch.tensor(curve.y, dtype=torch.float64)
    assert torch.corrcoef(torch.stack([sig, o]))[0, 1] > 0.995
    assert math.isfinite(res.scalars["noise"]) and math.isfinite(res.scalars["pgd"])


class Constant(nn.Module):
    def forward(self, x):
        return torch.ones(len(x), 4) + 0 * x.flatten(1)[:, :4]


def test_a_constant_representation_is_nan_with_a_warning(caplog):
    enc = Encoder(Constant(), SHAPE, [0.0] * 3, [1.0] * 3, {"name": "constant"})
    with caplog.at_level(logging.WARNING, logger="synbench.metrics.rmqm"):
        res = metric().compute(inputs_for(enc))
    assert math.isnan(res.scalars["noise"]) and math.isnan(res.scalars["pgd"])
    assert "rmqm/noise is NaN" in caplog.text and "rmqm/pgd is NaN" in caplog.text


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(48, 6)
        self.forwards = self.backwards = 0

    def forward(self, x):
        self.forwards += 1
        out = torch.tanh(self.lin(x.flatten(1)))
        if out.requires_grad:
            out.register_hook(lambda g: setattr(self, "backwards", self.backwards + 1))
        return out


def test_the_pgd_path_records_one_run_of_n_minus_one_steps():
    torch.manual_seed(0)
    net = Counting()
    enc = Encoder(net, SHAPE, [0.0] * 3, [1.0] * 3, {"name": "counting"})
    net.forwards = 0
    m = metric(pgd_levels=7)
    x, _ = next(mixture().stream(1.0, Split.test, 4, 0, 4, "cpu"))
    path = m.pgd_path(enc, x, None, seed=0)
    assert path.shape == (7, 4, 6)
    assert net.backwards == 6 and net.forwards == 1 + 7  # the clean input, then iterates 0..6
    assert torch.equal(path[0], enc(x))


def test_the_same_seed_gives_the_same_bytes():
    a = metric().compute(inputs_for(identity(), seed=3))
    b = metric().compute(inputs_for(identity(), seed=3))
    c = metric().compute(inputs_for(identity(), seed=4))
    assert a.scalars == b.scalars and a.scalars != c.scalars


@pytest.mark.parametrize("over, needle", [
    ({"noise_levels": 0}, "metrics.rmqm.noise_levels=0"),
    ({"pgd_levels": 2}, "metrics.rmqm.pgd_levels=2"),
    ({"pgd_radius": -0.1}, "metrics.rmqm.pgd_radius=-0.1"),
    ({"sigma_max": -1.0}, "metrics.rmqm.sigma_max=-1.0"),
    ({"n_points": 0}, "metrics.rmqm.n_points=0"),
])
def test_bad_settings_are_one_line(over, needle):
    with pytest.raises(ValueError) as err:
        metric(**over)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("override, needle", [
    ("metrics.rmqm.scale=9.0", "metrics.rmqm.scale=9"),
    ("metrics.rmqm.noise_levels=0", "metrics.rmqm.noise_levels=0"),
    ("metrics.rmqm.pgd_radius=-0.5", "metrics.rmqm.pgd_radius=-0.5"),
])
def test_bad_rmqm_input_stops_the_job_before_any_run(cfg_factory, tmp_path, override, needle):
    from mlflow.tracking import MlflowClient

    from synbench import app

    cfg = cfg_factory("metrics=[synbench,rmqm]", override, "tracking.experiment=bad-rmqm")
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        app.run(cfg, tmp_path / "job")
    exp = MlflowClient(cfg.tracking.uri).get_experiment_by_name("bad-rmqm")
    assert exp is None or not MlflowClient(cfg.tracking.uri).search_runs([exp.experiment_id])


@pytest.mark.slow
def test_rmqm_in_a_job_logs_both_schedules(cfg_factory, tmp_path):
    from synbench import app

    cfg = cfg_factory("metrics=[synbench,rmqm]", "metrics.rmqm.scale=1.5", "metrics.rmqm.n_points=8",
                      "metrics.rmqm.noise_levels=6", "metrics.rmqm.pgd_levels=4")
    s = app.run(cfg, tmp_path / "job")["scalars"]
    for schedule in ("noise", "pgd"):
        assert math.isfinite(s[f"rmqm/{schedule}"])
        assert all(s[f"rmqm/{schedule}/{k}"] >= 0 for k in ("D_o", "D_p", "S_o", "S_p"))


def test_pixel_range_clips_level_zero_of_both_paths():
    """The spec clips every level: with inputs outside the box, level 0 of both paths is the clipped input's
    representation, and the PGD path's first level is one alpha step from it (no jump from the clip)."""
    enc = identity()
    m = metric(pixel_range=[0.0, 1.0], pgd_alpha=0.01)
    x, _ = next(GaussianMixture(SHAPE, 0.5, 1.0, 0.5, "random", 0, 2, 8).stream(1.0, Split.test, 4, 0, 4, "cpu"))
    assert (x < 0).any() and (x > 1).any()  # noise_std 1 around 0.5: the box cuts it
    clipped = enc(x.clamp(0, 1))
    noise = m.noise_path(enc, x, None, seed=0)
    pgd = m.pgd_path(enc, x, None, seed=0)
    assert torch.equal(noise[0], clipped) and torch.equal(pgd[0], clipped)
    step = (pgd[1] - pgd[0]).abs().max()
    assert step <= 0.01 + 1e-3 + 1e-6  # one linf step (+ the seeded offset); unclipped level 0 would jump by ~1

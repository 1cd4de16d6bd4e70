"""When the scale grid, not the encoder, decides SynBench (issue 31): the floored and pinned flags, the warning
line, and the `mixture=wide` preset that un-floors a narrow encoder.

Expected values come from the logged curves and from numpy/scipy, never from the flags themselves.
"""

import json
import logging
import types

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from scipy.stats import norm
from torch import nn

from synbench import app
from synbench.data import Split
from synbench.data.mixture import mean_direction
from synbench.encoders import Embeddings, Precision
from synbench.encoders.weights import seeded
from synbench.metrics import MetricInputs
from synbench.metrics.synbench_score import SynBenchScore, crossing_estimate
from synbench.probes import RobustBayesProbe
from synbench.runner import CONF_DIR

GRID = np.linspace(0.6, 1.0, 100)  # spec section 4
THRESHOLDS = [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99]
LOGGER = "synbench.metrics.synbench_score"
WIDTH = 4  # features of the narrow encoder


class NarrowNet(nn.Module):
    """A random linear map of the flattened image to a few features: it keeps only the share
    ``rho = ||P mu||`` of a random pixel direction (P: projection onto its rows), so its accuracy is about
    ``Phi(rho s)``; the narrow encoders of issue 31 (64 features, rho ~ 1/3) in miniature."""

    def __init__(self, in_features: int = 784, width: int = WIDTH):
        super().__init__()
        self.proj = nn.Linear(in_features, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1))


def first_counted(t):
    return GRID[GRID >= t - 1e-12][0]


# ----------------------------------------------------------------------------------------------------------
# Controlled curves: features whose test accuracy per scale is exactly what the test asks for
# ----------------------------------------------------------------------------------------------------------

def controlled(scales, accs, n=2000):
    """1-D features with class means +-1 on train, and on test exactly round(acc n) points on their own side
    (at +-1) and the rest on the other; so a(s) is known exactly and B(s) = 1."""
    ytr = np.tile(np.arange(n) % 2, (len(scales), 1))
    sign = 2.0 * ytr - 1.0
    ztr = sign + np.where(np.arange(n) % 4 < 2, 0.1, -0.1)  # class means exactly +-1, some spread
    zte = np.empty_like(ztr)
    for i, a in enumerate(accs):
        right = np.arange(n) < round(a * n)
        zte[i] = np.where(right, sign[i], -sign[i])
    emb = Embeddings(scales=[float(s) for s in scales],
                     z={Split.train: torch.as_tensor(ztr[..., None]), Split.test: torch.as_tensor(zte[..., None])},
                     y={Split.train: torch.as_tensor(ytr), Split.test: torch.as_tensor(ytr)},
                     images_embedded=0, seconds=0.0)
    metric = SynBenchScore(RobustBayesProbe(1e-6, [0.0, 0.5]), THRESHOLDS, 0.7, 0.6, 1.0, 100)
    return metric.compute(MetricInputs(emb, None, types.SimpleNamespace(noise_std=1.0), None, 0, Precision.fp32))


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_crossing_is_the_first_counted_grid_point(caplog):
    """The score at 0.7 sums from grid point 0.7010, so 0.7005 has not crossed (score 0) and 0.7015 has."""
    scales = [0.5, 1.5, 2.5, 3.5]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        below = controlled(scales, [0.55, 0.6, 0.66, 0.7005])
    assert np.asarray(below.curves["accuracy/eps_0.00"].y)[-1] == 0.7005
    s = below.scalars
    assert s["score"] == 0.0 and s["crossed/at_0.70"] == 0.0 and s["floored"] == 1.0 and s["pinned"] == 0.0
    assert s["crossed/at_0.65"] == 1.0 and s["best/at_0.65"] > 0
    assert s["max_accuracy"] == 0.7005
    assert "floored" in below.headline
    [line] = warnings_of(caplog)
    assert "never passed a_t=0.70" in line and "max s=3.5" in line and "best 0.7005" in line
    assert "counts from 0.7010" in line and "add scales past s=3.5 (mixture=wide" in line

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        above = controlled(scales, [0.55, 0.6, 0.66, 0.7015])
    assert above.scalars["crossed/at_0.70"] == 1.0 and above.scalars["floored"] == 0.0
    assert above.scalars["score"] > 0 and "floored" not in above.headline
    assert warnings_of(caplog) == []


def test_flat_curve_says_larger_scales_will_not_help(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        controlled([0.5, 1.5, 2.5, 3.5], [0.5, 0.49, 0.5, 0.48])
    [line] = warnings_of(caplog)
    assert "does not rise" in line and "another mixture.direction" in line


def test_pinned_when_every_counted_scale_is_saturated(caplog):
    """A grid starting past raw saturation (Phi(3) = 0.9987 > 0.99596): the score is ~1 for any encoder that
    saturates there; one that does not saturate at one scale is measured (score < 1, not pinned)."""
    top = GRID[-2]
    assert norm.cdf(3.0) > top
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = controlled([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])
    assert r.scalars["pinned"] == 1.0 and r.scalars["saturated_share"] == 1.0 and r.scalars["floored"] == 0.0
    assert r.scalars["score"] == pytest.approx(1.0, abs=0.01)  # B_rep = 1 against B_raw(a) slightly above 1
    assert "pinned" in r.headline
    [line] = warnings_of(caplog)
    assert "saturated" in line and "~1 by construction" in line
    lo, hi = norm.ppf(first_counted(0.7)), norm.ppf(top)
    assert f"between {lo:.2f} and {hi:.2f}" in line

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = controlled([3.0, 4.0, 5.0], [0.95, 1.0, 1.0])
    assert r.scalars["pinned"] == 0.0 and r.scalars["score"] < 0.99
    # share of the raw denominator from the two scales where both curves saturate; every raw point here adds
    # the same count of grid points, so the share is B_raw-weighted: independent closed form
    a_raw = norm.cdf([3.0, 4.0, 5.0])
    q = norm.ppf(a_raw)
    b_raw = 1 + norm.pdf(q) / (a_raw * q)
    assert r.scalars["saturated_share"] == pytest.approx(b_raw[1:].sum() / b_raw.sum(), rel=1e-12)
    assert warnings_of(caplog) == []


def test_crossing_estimate_inverts_a_probit_line():
    s = np.array([0.2, 0.6, 1.0, 1.4, 1.8, 2.2, 2.6, 3.0, 3.4, 3.8])
    rho = 0.1
    need = crossing_estimate(s, norm.cdf(rho * s), 0.7, n_test=10**9)
    assert need == pytest.approx(norm.ppf(0.7) / rho, rel=1e-9)
    assert crossing_estimate(s, np.full(len(s), 0.45), 0.7, n_test=256) is None


# ----------------------------------------------------------------------------------------------------------
# End to end: a narrow encoder floors on the default grid and is measured on mixture=wide
# ----------------------------------------------------------------------------------------------------------

def narrow_cfg(store, mixture):
    overrides = [f"paths.outputs={store}", "model=custom", f"model.module._target_={__name__}.NarrowNet",
                 "model.input_shape=[1,28,28]", f"mixture={mixture}", "mixture.direction=random",
                 "metrics=[synbench]", "progress=false", "embed.batch_size=256", "resume=false",
                 f"tracking.run_name=narrow-{mixture}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def test_narrow_encoder_kept_share_is_small():
    """Why it floors: rho = ||P mu|| of the seeded encoder is ~0.1, so its accuracy ~ Phi(0.1 s) stays under
    0.7 to s = 3.8 (Phi(0.4) = 0.66) and passes it near s = 5 (Phi(1.6) = 0.95 at s = 16)."""
    with seeded(0):  # model.init_seed = seed = 0
        a = NarrowNet().proj.weight.detach().double()
    mu = mean_direction("random", (1, 28, 28), 0, 4).double().flatten()
    rho = float((a.T @ torch.linalg.solve(a @ a.T, a @ mu)).norm())
    assert 0.07 < rho < 0.14


@pytest.mark.slow
def test_narrow_encoder_floors_on_default_and_is_measured_on_wide(store, tmp_path, caplog):
    runs = {}
    for mixture in ("default", "wide"):
        cfg = narrow_cfg(store, mixture)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            summary = app.run(cfg, tmp_path / mixture)
        curves = json.loads((tmp_path / mixture / "results.json").read_text())["metrics"]["synbench"]["curves"]
        accs = np.array([c["y"] for k, c in curves.items() if k.startswith("accuracy/eps_")])  # [E, S]
        assert accs.shape == (3, len(cfg.mixture.scales))  # eps in {0, 0.2, 0.4}
        s = {k.removeprefix("synbench/"): v for k, v in summary["scalars"].items() if k.startswith("synbench/")}
        # the flags against an independent reading of the logged accuracy curves
        assert s["max_accuracy"] == pytest.approx(accs.max(), abs=1e-12)
        for t in THRESHOLDS:
            crossed = bool((accs > first_counted(t)).any())
            assert s[f"crossed/at_{t:.2f}"] == float(crossed), t
            assert (s[f"best/at_{t:.2f}"] > 0) == crossed, t
        run = MlflowClient(cfg.tracking.uri).get_run(summary["run_id"])
        assert run.data.metrics["synbench/floored"] == s["floored"]
        assert run.data.metrics["synbench/crossed/at_0.70"] == s["crossed/at_0.70"]
        runs[mixture] = s, warnings_of(caplog), accs

    s, lines, accs = runs["default"]
    assert accs.shape[1] == 10 and accs.max() < 0.7
    assert s["score"] == 0.0 and s["floored"] == 1.0 and s["crossed/at_0.70"] == 0.0
    [line] = lines
    assert "never passed a_t=0.70" in line and "max s=3.8" in line and f"best {accs.max():.4f}" in line
    assert "add larger scales (mixture=wide goes to 16)" in line and "an estimate" in line

    s, lines, accs = runs["wide"]
    assert accs.shape[1] == 20 and max(cfg.mixture.scales) == 16.0
    assert 0.0 < s["score"] < 1.0
    assert s["floored"] == 0.0 and s["pinned"] == 0.0 and s["crossed/at_0.70"] == 1.0
    assert lines == []

"""RankMe and alpha-ReQ against planted spectra, and the metric wired into a job."""

import math

import pytest
import torch

from synbench.metrics.spectrum import Spectrum, alpha_req, rankme


def gaussian(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rankme_of_an_isotropic_cloud_is_close_to_its_dimension():
    d = 32
    r = rankme(gaussian(20000, d), 1e-7)
    assert 0.97 * d < r <= d


def test_rankme_of_a_planted_rank_r_cloud_is_close_to_r():
    r_true = 5
    z = gaussian(5000, r_true) @ gaussian(r_true, 64, seed=1)  # rank 5 in 64 dims
    z = z / z.std()
    assert abs(rankme(z, 1e-7) - r_true) < 0.6


def test_rankme_closed_form_on_orthogonal_columns():
    # singular values 3, 1: p = (0.75, 0.25); exp of the entropy
    z = torch.zeros(4, 2, dtype=torch.float64)
    z[0, 0], z[1, 1] = 3.0, 1.0
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert rankme(z, 0.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_a_planted_power_law(alpha):
    d, n = 48, 40000
    k = torch.arange(1, d + 1, dtype=torch.float64)
    z = gaussian(n, d, seed=3) * k.pow(-alpha / 2)  # covariance eigenvalues k^-alpha
    rot, _ = torch.linalg.qr(gaussian(d, d, seed=4))
    est = alpha_req(z @ rot, fit_start=1, fit_stop=None, rel_floor=1e-10)
    assert est == pytest.approx(alpha, abs=0.05)


def test_alpha_req_fit_range_is_honoured():
    # two power laws glued at k = 10: fitting [1, 10] sees the first, [11, 40] the second
    k = torch.arange(1, 41, dtype=torch.float64)
    lam = torch.where(k <= 10, k.pow(-1.0), k.pow(-2.0))  # still descending at the seam: 0.1 > 1/121
    z = torch.diag(lam.sqrt()) * math.sqrt(40 - 1)  # rows: exactly that covariance's square root, 40 points
    z = torch.cat([z, -z])  # centred; cov = 2 * 39/79 * diag(lam): a constant factor, same slopes
    assert alpha_req(z, 1, 10, 1e-12) == pytest.approx(1.0, abs=1e-9)
    assert alpha_req(z, 11, 40, 1e-12) == pytest.approx(2.0, abs=1e-9)


def test_constant_representations_are_nan_not_numbers():
    z = torch.ones(100, 8, dtype=torch.float64)
    assert math.isnan(alpha_req(z, 1, None, 1e-10))
    assert math.isnan(rankme(torch.zeros(10, 4), 1e-7))


@pytest.mark.parametrize("kwargs, needle", [
    ({"fit_start": 0}, "fit_start=0"),
    ({"fit_stop": 1}, "fit_stop=1"),
    ({"rel_floor": 1.0}, "rel_floor=1.0"),
])
def test_bad_spectrum_config_is_one_line(kwargs, needle):
    args = {"scale": 1.0, "rankme_eps": 1e-7, "fit_start": 1, "fit_stop": None, "rel_floor": 1e-10, **kwargs}
    with pytest.raises(ValueError, match=needle):
        Spectrum(**args)


@pytest.mark.slow
def test_spectrum_metric_in_a_job(cfg_factory, tmp_path):
    from synbench import app

    cfg = cfg_factory("metrics=[synbench,spectrum]", "metrics.spectrum.scale=2.5")
    s = app.run(cfg, tmp_path / "job")["scalars"]
    assert 1.0 <= s["spectrum/rankme"] <= 64 and 0 < s["spectrum/rankme_fraction"] <= 1
    assert math.isfinite(s["spectrum/alpha_req"])
    bad = cfg_factory("metrics=[synbench,spectrum]", "metrics.spectrum.scale=9.0")
    with pytest.raises(ValueError, match="metrics.spectrum.scale=9"):
        app.run(bad, tmp_path / "bad")


def test_no_metric_logs_a_scalar_and_a_curve_under_one_key():
    """MLflow keeps one history per key: a scalar and a curve of the same name would read back as the curve's
    last point (the sweep report found this)."""
    from synbench.data import Split
    from synbench.encoders import Embeddings
    from synbench.metrics import MetricInputs
    from tests.test_rmqm import identity, inputs_for, metric

    rmqm = metric().compute(inputs_for(identity()))
    z = torch.randn(1, 16, 5, generator=torch.Generator().manual_seed(0))
    emb = Embeddings([1.0], {Split.train: z, Split.test: z}, {}, 0, 0.0)
    spectrum = Spectrum(1.0, 1e-7, 1, None, 1e-10).compute(MetricInputs(emb, None, None, None, 0, None))
    for res in (rmqm, spectrum):
        assert res.scalars and res.curves and not set(res.scalars) & set(res.curves)

"""LogME (synbench/metrics/logme.py) against the definition: the evidence equals the Gaussian marginal likelihood
computed directly, the fitted (alpha, beta) is a stationary maximum of it, separable features outscore shuffled
labels, the one shared SVD changes nothing, and a job logs it to MLflow reading only the dataset."""

import json
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from synbench.metrics.logme import BOUNDS, fit_evidence, log_evidence, logme


def brute_force(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """log N(t; 0, beta^-1 I + alpha^-1 F F^T) / n, straight from the model."""
    n = len(t)
    cov = np.eye(n) / beta + f @ f.T / alpha
    return float(multivariate_normal(np.zeros(n), cov).logpdf(t)) / n


def problem(n: int, d: int, seed: int, rank: int | None = None, noise: float = 0.5):
    """Features (of the given rank) and a target with some linear signal plus noise."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)) if rank is None else rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    t = f @ rng.normal(size=d) * 0.3 + noise * rng.normal(size=n)
    return f, t


@pytest.mark.parametrize("n, d, rank", [(12, 5, None), (4, 6, None), (20, 8, 3), (5, 9, 2)])
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.3, 4.0), (7.5, 0.2)])
def test_log_evidence_is_the_gaussian_marginal_likelihood(n, d, rank, alpha, beta):
    """n > D, n < D and rank-deficient F (the D - r null directions count log alpha each)."""
    f, t = problem(n, d, seed=n + d, rank=rank)
    onehot = (np.arange(n) % 3 == 0).astype(float)
    for target in (t, onehot):
        assert log_evidence(f, target, alpha, beta) == pytest.approx(brute_force(f, target, alpha, beta),
                                                                     rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n, d, seed", [(40, 6, 1), (60, 25, 2), (15, 30, 3)])
def test_the_fitted_alpha_beta_is_a_stationary_maximum(n, d, seed):
    f, t = problem(n, d, seed)
    alpha, beta, ev = fit_evidence(f, t, tol=1e-12, max_iter=100_000)
    lo, hi = BOUNDS
    assert lo < alpha < hi and lo < beta < hi  # an interior maximum for these problems
    assert ev == pytest.approx(log_evidence(f, t, alpha, beta), rel=1e-12)

    def at(log_a, log_b):
        return log_evidence(f, t, math.exp(log_a), math.exp(log_b))

    la, lb, h = math.log(alpha), math.log(beta), 1e-4
    d_alpha = (at(la + h, lb) - at(la - h, lb)) / (2 * h)
    d_beta = (at(la, lb + h) - at(la, lb - h)) / (2 * h)
    assert abs(d_alpha) < 1e-7 and abs(d_beta) < 1e-7
    for da in (-0.2, 0.0, 0.2):
        for db in (-0.2, 0.0, 0.2):
            if da or db:
                assert at(la + da, lb + db) < ev
    # the default tolerance lands on the same evidence (to far below any difference between models)
    assert fit_evidence(f, t)[2] == pytest.approx(ev, abs=1e-8)


def test_separating_features_score_above_shuffled_labels():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    f = np.concatenate([2.0 * np.eye(3)[y], np.zeros((90, 5))], 1) + 0.3 * rng.normal(size=(90, 8))
    shuffled = rng.permutation(y)
    assert (shuffled != y).mean() > 0.5
    good, bad = logme(f, y), logme(f, shuffled)
    assert good > bad + 0.2
    assert logme(f, y) == good  # deterministic
    assert logme(100.0 * f, y) == pytest.approx(good, abs=1e-9)  # a global scale is absorbed by alpha
    stretched = f * np.array([10.0, 1, 1, 1, 1, 1, 1, 1])  # one direction: the isotropic prior sees it
    assert abs(logme(stretched, y) - good) > 1e-3


@pytest.mark.parametrize("n, d, rank", [(50, 7, None), (9, 20, None), (30, 12, 4)])
def test_logme_is_the_mean_of_per_class_fits(n, d, rank):
    """The shared SVD and the batched projection change nothing against one fit per one-hot column; labels need
    not be 0..K-1 (classes absent from the labels are not classes)."""
    rng = np.random.default_rng(n)
    y = np.array([2, 5, 9])[rng.integers(0, 3, n)]
    y[:3] = [2, 5, 9]
    k = d if rank is None else rank
    a = rng.normal(size=(n, k)) + 1.5 * (y == 5)[:, None]  # some class signal, no one-hot column in the span
    f = a if rank is None else a @ rng.normal(size=(k, d))
    assert np.linalg.matrix_rank(f) == min(n, k)
    per_class = [fit_evidence(f, (y == c).astype(float))[2] for c in (2, 5, 9)]
    assert logme(f, y) == pytest.approx(float(np.mean(per_class)), rel=1e-12, abs=1e-12)
    import torch
    assert logme(torch.tensor(f, dtype=torch.float32), torch.tensor(y)) == pytest.approx(
        logme(f.astype(np.float32), y), rel=1e-12)


def test_fewer_than_two_classes_is_one_line():
    with pytest.raises(ValueError, match="LogME needs at least 2 classes; the labels hold 1 "):
        logme(np.ones((5, 3)), np.zeros(5, dtype=int))


@pytest.mark.slow
def test_a_logme_job_logs_to_mlflow_without_the_mixture(cfg_factory, tmp_path):
    from mlflow.tracking import MlflowClient

    from synbench import app

    rng = np.random.default_rng(0)
    n = 60
    y = np.arange(n) % 3
    x = rng.normal(0.3, 0.12, (n, 12, 12))
    for i, c in enumerate(y):
        x[i, 4 * c:4 * c + 4] += 0.45  # a bright bar at a class-specific row band
    path = tmp_path / "bars.npz"
    np.savez(path, x=np.clip(x, 0, 1).astype(np.float32), y=y)
    cfg = cfg_factory("model=custom", "model.module._target_=tests.nets.TinyCNN", "model.input_shape=[1,12,12]",
                      "dataset=npz", f"dataset.path={path}", "metrics=[logme]", "tracking.experiment=logme")
    out = app.run(cfg, tmp_path / "job")
    assert out["images_embedded"] == n  # the dataset's two splits only: no mixture generated or embedded
    assert out["mixture_mean"] is None
    s = out["scalars"]
    assert math.isfinite(s["logme/logme"]) and s["logme/num_classes"] == 3
    assert s["logme/n_train"] == out["dataset"]["train_images"] and s["logme/width"] == 64  # TinyCNN: 16 x 2 x 2
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(out["run_id"])
    assert run.data.metrics["logme/logme"] == s["logme/logme"]
    table = json.loads(open(client.download_artifacts(run.info.run_id, "tables/logme/per_class.json",
                                                      str(tmp_path))).read())
    assert table["class"] == [0, 1, 2] and len(table["alpha"]) == len(table["beta"]) == 3
    assert np.mean(table["logme"]) == pytest.approx(s["logme/logme"], rel=1e-12)
    saved = json.loads((tmp_path / "job" / "results.json").read_text())["metrics"]["logme"]
    assert saved["scalars"]["logme"] == s["logme/logme"]

"""metrics.downstream in real jobs on a real-format dataset written here: the probe against scikit-learn on the
same features, the attack's invariants (robust <= clean, falling with the radius), the bound above the
attack's loss, the cache keyed by content, what is logged, and bad input stopped before any run."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from synbench import app
from synbench.config import build, resolve_device
from synbench.data import InputTransform, Split
from synbench.encoders import Precision, embed_dataset
from synbench.probes.softmax import SoftmaxProbe, fit_softmax

pytestmark = pytest.mark.slow
EPS = [0.0, 0.05, 0.1, 0.3]
TINY = ["model=custom", "model.module._target_=tests.nets.TinyCNN", "model.input_shape=[1,12,12]"]


@pytest.fixture(scope="module")
def shapes_npz(tmp_path_factory):
    """Three classes of 12 x 12 grey images: a bright bar at a class-specific row band, plus noise."""
    rng = np.random.default_rng(0)
    n = 180
    y = np.arange(n) % 3
    x = rng.normal(0.3, 0.12, (n, 12, 12))
    for i, c in enumerate(y):
        x[i, 4 * c:4 * c + 4] += 0.45
    path = tmp_path_factory.mktemp("data") / "bars.npz"
    np.savez(path, x=np.clip(x, 0, 1).astype(np.float32), y=y)
    return path


def job(cfg_factory, path, *over):
    """The tiny job on the npz; an override of a key given here replaces it (``~dataset`` drops the data)."""
    base = [*TINY, "dataset=npz", f"dataset.path={path}", "metrics=[downstream]",
            f"attack.eps=[{','.join(map(str, EPS))}]", "attack.steps=8", "attack.batch_size=64",
            "metrics.downstream.n_points=null"]
    keys = {o.lstrip("~").split("=")[0] for o in over}
    kept = [b for b in base if not any(b.split("=")[0] == k or b.startswith(k + ".") for k in keys)]
    return cfg_factory(*kept, *[o for o in over if not o.startswith("~")])


def test_downstream_job_invariants_logging_and_cache(cfg_factory, shapes_npz, tmp_path):
    cfg = job(cfg_factory, shapes_npz, "tracking.experiment=downstream")
    first = app.run(cfg, tmp_path / "a")
    s = first["scalars"]
    assert first["images_embedded"] == 180  # the dataset only: no metric read the mixture
    assert s["downstream/n_attacked"] == s["downstream/n_test"] == 36
    assert s["downstream/clean_accuracy_attacked"] == s["downstream/accuracy"]  # every test image attacked
    assert s["downstream/accuracy"] > 0.6  # the bars are visible through a random CNN
    robust = [s[f"downstream/robust_accuracy/eps_{e:g}"] for e in EPS]
    assert robust[0] == s["downstream/accuracy"]
    assert all(b <= a for a, b in zip(robust, robust[1:])) and robust[-1] < robust[0]  # falls with the radius
    for e in EPS:
        k = f"eps_{e:g}"
        assert s[f"downstream/bound/{k}"] >= s[f"downstream/adv_loss/{k}"] - 1e-9  # the bound holds
        assert s[f"downstream/bound_spectral/{k}"] >= s[f"downstream/bound/{k}"] - 1e-9
        assert s[f"downstream/criterion/{k}"] <= s[f"downstream/robust_accuracy/{k}"]  # certified => robust
        # the paper's form: a smaller Delta_f certifies at least as much; what it certifies beyond the robust
        # points are its counted violations
        free, broken = s[f"downstream/criterion_label_free/{k}"], s[f"downstream/violations_label_free/{k}"]
        assert free >= s[f"downstream/criterion/{k}"] and broken == round(broken) >= 0
        assert free * 36 - broken <= s[f"downstream/robust_accuracy/{k}"] * 36 + 1e-9
    assert s["downstream/bound/eps_0"] == pytest.approx(s["downstream/clean_loss"])

    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(first["run_id"])
    assert run.data.metrics["downstream/accuracy"] == s["downstream/accuracy"]
    assert run.data.tags["synbench.dataset"] == "bars"
    assert run.data.params["dataset.transform.resize"] == "as is"
    assert run.data.params["dataset.digest"] == first["dataset"]["digest"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/downstream_robust_accuracy_vs_eps.png" in logged
    fits = json.loads(Path(client.download_artifacts(run.info.run_id, "tables/downstream/probe_fits.json",
                                                     str(tmp_path))).read_text())
    probe = cfg.metrics.downstream.probe
    starts = [i for i, dtype in enumerate(fits["dtype"]) if dtype == "float32"]  # each fit opens in float32
    assert starts[0] == 0 and len(starts) == len(probe.penalties) + 1  # every penalty, then the refit
    assert [fits["penalty"][i] for i in starts] == [*sorted(map(float, probe.penalties), reverse=True),
                                                   s["downstream/penalty"]]  # strongest first
    for a, b in zip(starts, starts[1:] + [len(fits["dtype"])]):
        budget = probe.max_iter if fits["fit"][a] == "refit" else (probe.search_max_iter or probe.max_iter)
        assert set(fits["max_iter"][a:b]) == {budget}
        assert sum(fits["iterations"][a:b]) <= budget  # the stages share one fit's budget
    assert fits["fit"] == ["search"] * starts[-1] + ["refit"] * (len(fits["fit"]) - starts[-1])
    assert fits["reached_tol"] == [g <= (probe.search_tol or probe.tol) if f == "search" else g <= probe.tol
                                   for f, g in zip(fits["fit"], fits["grad"])]
    assert s["downstream/probe_at_max_iter"] == float(fits["at_max_iter"][-1])  # the scalar says the table
    assert not any(a and r for a, r in zip(fits["at_max_iter"], fits["reached_tol"]))
    assert min(fits["seconds"]) >= 0

    again = app.run(cfg, tmp_path / "b")  # resume=false in the suite: a second run, features from the cache
    assert again["images_embedded"] == 0
    assert again["scalars"] == s  # the same config and seed: the same numbers


def test_probe_accuracy_matches_scikit_learn_on_the_same_features(cfg_factory, shapes_npz):
    from sklearn.linear_model import LogisticRegression

    cfg = job(cfg_factory, shapes_npz)
    data = build(cfg.dataset)
    encoder = build(cfg.model)
    t = InputTransform.between(data.shape, encoder.input_shape, encoder.value_range)
    feats = embed_dataset(encoder, data, t, 64, resolve_device("cpu"), Precision.fp32, progress=False)
    probe = build(cfg.metrics.downstream.probe)
    assert isinstance(probe, SoftmaxProbe)
    z, y = feats.z[Split.train].double().numpy(), feats.y[Split.train].numpy()
    zt, yt = feats.z[Split.test].double().numpy(), feats.y[Split.test].numpy()
    for penalty in (1e-3, 1e-1):  # a fixed penalty: the objectives are the same
        head = type(probe)([penalty], 0.2, 500).fit(feats.z[Split.train], feats.y[Split.train], 3, 0)
        mu, sd = z.mean(0), z.std(0)
        sd[sd == 0] = 1
        sk = LogisticRegression(C=1 / (penalty * len(y)), tol=1e-10, max_iter=10000).fit((z - mu) / sd, y)
        ours = head.accuracy(feats.z[Split.test], feats.y[Split.test])
        theirs = float((sk.predict((zt - mu) / sd) == yt).mean())
        assert abs(ours - theirs) <= 0.005


def test_an_rgb_image_folder_through_a_timm_model(cfg_factory, tmp_path):
    """Grey 20 x 20 PNGs into test_vit (3 x 160 x 160): resized and repeated by the documented transform."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for c in range(2):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(10):
            a = rng.integers(0, 120, (20, 20)).astype(np.uint8) + (100 if c else 0)
            Image.fromarray(a.astype(np.uint8), "L").save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    cfg = cfg_factory("dataset=image_folder", f"dataset.path={tmp_path / 'imgs'}", "metrics=[downstream]",
                      "attack.eps=[0,0.1]", "attack.steps=2", "metrics.downstream.n_points=4",
                      "dataset.test_fraction=0.25")
    s = app.run(cfg, tmp_path / "job")
    assert s["dataset"]["transform"] == {"channels": "grey -> 3 (repeat)", "resize": "20x20 -> 160x160 (bilinear, "
                                         "antialias)", "value_range": "[0, 1] -> [0, 1]"}
    assert 0 <= s["scalars"]["downstream/accuracy"] <= 1 and s["scalars"]["downstream/n_test"] == 5


@pytest.mark.parametrize("over, needle", [
    (["~dataset"], r"metrics downstream need a labelled dataset: add dataset="),
    (["model.module._target_=tests.nets.Audio", "model.input_shape=[1,64]"],
     r"dataset images \[1, 12, 12\] \(C x H x W\) cannot be brought to the input of model 'tests\.nets\.Audio'"),
    (["dataset.path=/nonexistent/bars.npz"], r"dataset\.path='/nonexistent/bars\.npz' does not exist"),
    (["metrics.downstream.probe.penalties=[]"], r"probe\.penalties=\[\] must be a non-empty list"),
])
def test_bad_input_stops_the_job_before_any_run(cfg_factory, shapes_npz, tmp_path, over, needle):
    cfg = job(cfg_factory, shapes_npz, "tracking.experiment=bad-downstream", *over)
    with pytest.raises(ValueError, match=needle) as err:
        app.run(cfg, tmp_path / "job")
    assert "\n" not in str(err.value)
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("bad-downstream")
    assert exp is None or not client.search_runs([exp.experiment_id])
    assert not (tmp_path / "job" / "results.json").exists()


def test_a_dataset_no_metric_reads_is_not_loaded(cfg_factory, shapes_npz, tmp_path, caplog):
    cfg = job(cfg_factory, shapes_npz, "metrics=[synbench]", "dataset.path=/nonexistent/bars.npz")
    s = app.run(cfg, tmp_path / "job")  # the missing file is never opened
    assert "dataset" not in s and "synbench/score" in s["scalars"]
    assert not any(k.startswith("downstream/") for k in s["scalars"])
    assert "dataset=bars is set but no metric reads it: it is not loaded" in caplog.text


def test_a_sweep_logs_label_free_scores_beside_the_truth(cfg_factory, shapes_npz, tmp_path):
    """One run per model holds both: every label-free metric on the mixture and downstream/* on the data."""
    cfg = job(cfg_factory, shapes_npz, "metrics=[synbench,spectrum,downstream]", "metrics.spectrum.scale=2.5",
              "attack.eps=[0,0.1]")
    s = app.run(cfg, tmp_path / "job")["scalars"]
    assert math.isfinite(s["synbench/score"]) and math.isfinite(s["spectrum/rankme"])
    assert 0 <= s["downstream/accuracy"] <= 1 and "downstream/robust_accuracy/eps_0.1" in s
    assert torch.isfinite(torch.tensor(s["downstream/bound/eps_0.1"]))


def test_the_report_correlates_a_real_sweep_with_its_truth(cfg_factory, shapes_npz, tmp_path, monkeypatch):
    """Three models (random CNNs of three widths) in one sweep: the report reads the label-free scores and the
    truth the jobs logged and correlates them; its numbers equal scipy's on the runs' own values."""
    import csv

    from scipy import stats

    from synbench import report
    from synbench.tracking.mlflow_run import PARENT_ENV
    from synbench.tracking.sweep import tracker_from

    cfg = job(cfg_factory, shapes_npz, "tracking.experiment=truth")
    client = MlflowClient(cfg.tracking.uri)
    parent = client.create_run(tracker_from(cfg).connect(), tags={"synbench.kind": "sweep"}).info.run_id
    monkeypatch.setenv(PARENT_ENV, parent)
    got = {}
    for width in (4, 16, 64):
        s = app.run(job(cfg_factory, shapes_npz, "tracking.experiment=truth", f"model.name=cnn{width}",
                        f"+model.module.width={width}", "metrics=[spectrum,downstream]", "metrics.spectrum.scale=2.5",
                        "attack.eps=[0,0.05]"), tmp_path / f"w{width}")["scalars"]
        got[f"cnn{width}"] = (s["spectrum/rankme"], s["downstream/robust_accuracy/eps_0.05"])
    monkeypatch.delenv(PARENT_ENV)
    client.set_terminated(parent)
    assert report.main(["--parent", parent, "--tracking-uri", cfg.tracking.uri, "--out", str(tmp_path / "r"),
                        "--bootstrap", "50"]) == 0
    rows = list(csv.DictReader((tmp_path / "r" / parent / "correlations.csv").open()))
    [row] = [r for r in rows if r["metric"] == "spectrum/rankme"
             and r["truth"] == "bars: downstream/robust_accuracy/eps_0.05"]
    x, y = zip(*(got[m] for m in sorted(got)))
    assert len(set(y)) > 1  # the widths differ in robustness: a correlation exists
    assert row["models"] == "3"
    assert float(row["kendall"]) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
    assert float(row["pearson"]) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert (tmp_path / "r" / parent / row["scatter"]).is_file()


def test_a_comparison_on_the_dataset_reuses_the_jobs_embeddings(cfg_factory, shapes_npz, store, tmp_path):
    """compare on a dataset's test split: the downstream job's cache entry serves it (the same embedding plan:
    the job's batch size, and the layout the shared tuning cache chose), each pair's rejections are split by
    class (weighted, they give the overall fraction) and its most-changed inputs are an image grid."""
    import json

    from hydra import compose, initialize_config_dir

    from synbench import compare
    from synbench.runner import CONF_DIR

    app.run(job(cfg_factory, shapes_npz, "model.name=cnn16", "+model.module.width=16", "metrics.downstream.n_points=4",
                "attack.eps=[0]"), tmp_path / "job")
    models = []
    for label, width in (("cnn16", 16), ("cnn5", 5), ("cnn64", 64)):  # cnn5: in no other test's cache
        models += [f"+model@models.{label}=custom", f"models.{label}.module._target_=tests.nets.TinyCNN",
                   f"+models.{label}.module.width={width}", f"models.{label}.input_shape=[1,12,12]",
                   f"models.{label}.name={label}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("compare", overrides=[f"paths.outputs={store}", "~models.vit_a", "~models.vit_b", "~models.cnn",
                                            *models, "dataset=npz", f"dataset.path={shapes_npz}",
                                            "compare.n_bootstrap=20", "compare.reference=cnn16", "compare.top_changed=6",
                                            "progress=false", "resume=false", "tracking.experiment=compare-data",
                                            "embed.batch_size=64"])
    out = compare.run(cfg, tmp_path / "cmp")
    assert out["models"]["cnn16"]["images_embedded"] == 0  # the job's test-split entry
    assert out["models"]["cnn5"]["images_embedded"] == 36 and out["comparison"].n == 36
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    data = build(cfg.dataset)
    labels = data.y[data.index[Split.test]].numpy()
    for test in saved["tests"]:
        by_class = test["rejected_by_class"]
        assert set(by_class) == {"0", "1", "2"}
        weights = np.bincount(labels, minlength=3) / len(labels)
        assert sum(w * by_class[str(c)] for c, w in enumerate(weights)) == pytest.approx(test["fraction_rejected"])
        label = f"{test['reference']}_vs_{test['other']}"
        assert (tmp_path / "cmp" / "plots" / f"most_changed_{label}.png").is_file()
    client = MlflowClient(cfg.tracking.uri)
    children = client.search_runs([client.get_run(out["run_id"]).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert len(children) == 2
    for child in children:
        assert {"rejected/0", "rejected/1", "rejected/2"} <= set(child.data.metrics)
        assert any(a.path.startswith("plots/most_changed_") for a in client.list_artifacts(child.info.run_id, "plots"))


def test_a_shorter_search_chooses_then_the_refit_reaches_the_float64_optimum():
    """The search's fits may stop early (they only rank penalties); the refit, warm-started from the chosen
    penalty's answer, reaches the same optimum as a cold float64-only fit, to gradient tolerance."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(2000) % 4
    z = (torch.randn(2000, 30, generator=g) + torch.randn(4, 30, generator=g)[y] * 0.5) * torch.linspace(0.1, 10, 30)
    tol = 1e-7
    head = SoftmaxProbe([1e-3, 1e-2, 1e-1], 0.2, 500, tol, search_max_iter=4, search_tol=1e-3).fit(z, y, 4, 0)
    search = [s for s in head.stages if s.fit == "search"]
    assert {s.max_iter for s in search} == {4} and all(s.iterations <= 4 for s in search)
    assert any(s.at_max_iter for s in search)  # 4 iterations do not reach 1e-3 here: the search ran out
    assert head.stages[-1].reached_tol and not head.at_max_iter and head.stages[-1].fit == "refit"
    cold = fit_softmax(z, y, 4, head.penalty, 500, tol=tol, stages=(torch.float64,))
    mu, sd = z.double().mean(0), z.double().std(0, correction=0)
    # one strictly convex optimum (curvature >= penalty): both within tol of it, so within ~tol/penalty apart
    torch.testing.assert_close(head.weight * sd, cold.weight * sd, rtol=0, atol=10 * tol / head.penalty)
    assert fit_softmax(z, y, 4, head.penalty, 3, tol=1e-12).at_max_iter  # a fit cut short says so


def test_the_probe_fits_in_float32_and_certifies_in_float64():
    """The bulk of the fit runs in float32; the float64 stage checks the gradient tolerance (and finishes the
    fit where float32 could not): the answer is the float64-only fit's, and the iteration budget is shared."""
    from synbench.probes.softmax import fit_softmax

    g = torch.Generator().manual_seed(0)
    y = torch.arange(3000) % 4
    z = torch.randn(3000, 40, generator=g) + torch.randn(4, 40, generator=g)[y] * 0.6
    z = z * torch.linspace(0.01, 100, 40)  # wild scales: standardisation's job
    tol = 1e-7
    head = fit_softmax(z, y, 4, 1e-3, 500, tol=tol)
    assert [s.dtype for s in head.stages] == ["float32", "float64"]
    assert head.stages[0].iterations > head.stages[1].iterations
    # the certified gradient, recomputed here in float64 on the standardised features
    z64 = z.double()
    mu, sd = z64.mean(0), z64.std(0, correction=0)
    s = (z64 - mu) / sd
    W, b = head.weight * sd, head.bias + head.weight @ mu
    p = torch.softmax(s @ W.T + b, 1) - torch.nn.functional.one_hot(y, 4).double()
    grad = torch.cat([(p.T @ s / len(y) + 1e-3 * W).flatten(), p.mean(0)])
    assert grad.abs().max() < tol
    only64 = fit_softmax(z, y, 4, 1e-3, 500, tol=tol, stages=(torch.float64,))
    assert [s.dtype for s in only64.stages] == ["float64"]
    torch.testing.assert_close(head.weight * sd, only64.weight * sd, rtol=0, atol=1e-4)
    assert torch.equal(head.predict(z), only64.predict(z))
    short = fit_softmax(z, y, 4, 1e-3, 7, tol=1e-12)
    assert sum(s.iterations for s in short.stages) <= 7
    probe64 = SoftmaxProbe([1e-3, 1e-2], 0.2, 50, tol, stages=(torch.float64,)).fit(z, y, 4, 0)  # the bench's row
    assert {s.dtype for s in probe64.stages} == {"float64"} and len(probe64.stages) == 3  # 2 penalties + refit

"""The sweep report: a real small sweep (3 models x 2 seeds) nested under a parent, read back from MLflow and
checked against a direct numpy/scipy computation, with a hand-made downstream accuracy CSV."""

import csv
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from synbench import app, report
from synbench.tracking.mlflow_run import PARENT_ENV

pytestmark = pytest.mark.slow
MODELS = {"test_vit": ["model=test_vit"], "test_convnext": ["model=timm", "model.name=test_convnext",
                                                          "model.pretrained=false"],
          "test_resnet": ["model=timm", "model.name=test_resnet", "model.pretrained=false"]}
DOWNSTREAM = {"test_vit": 0.71, "test_convnext": 0.55, "test_resnet": 0.62}
METRIC = "spectrum/rankme"  # continuous and seed-dependent, so the intervals and correlations are not trivial


def test_report_of_a_real_sweep(cfg_factory, tmp_path, monkeypatch):
    cfg = cfg_factory("tracking.experiment=report")
    from synbench.tracking.sweep import tracker_from

    exp_id = tracker_from(cfg).connect()
    client = MlflowClient(cfg.tracking.uri)
    parent = client.create_run(exp_id, tags={"synbench.kind": "sweep"}).info.run_id
    monkeypatch.setenv(PARENT_ENV, parent)
    scores = {}
    for model, overrides in MODELS.items():
        for seed in (0, 1):
            s = app.run(cfg_factory(*overrides, f"seed={seed}", "metrics=[synbench,spectrum]",
                                    "metrics.spectrum.scale=2.5", "tracking.experiment=report"),
                        tmp_path / f"{model}{seed}")
            scores.setdefault(model, []).append(s["scalars"][METRIC])
    monkeypatch.delenv(PARENT_ENV)
    client.set_terminated(parent)
    down = tmp_path / "downstream.csv"
    down.write_text("model,accuracy\n" + "".join(f"{m},{a}\n" for m, a in DOWNSTREAM.items()))

    assert report.main(["--parent", parent, "--tracking-uri", cfg.tracking.uri, "--downstream", str(down),
                        "--out", str(tmp_path / "out"), "--bootstrap", "300"]) == 0
    out = tmp_path / "out" / parent
    rows = {(r["model"], r["metric"]): r for r in csv.DictReader((out / "report.csv").open())}
    for model, values in scores.items():
        r = rows[(model, METRIC)]
        assert np.std(values) > 0  # two seeds, two values: a real interval
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        # RankMe >= 1: an interval reaching below is clipped there and says so (two seeds give t = 12.7)
        note, lo = ("clipped to [1, inf)" if lo < 1 else ""), max(lo, 1.0)
        assert r["ci_note"] == note
        assert float(r["mean"]) == pytest.approx(np.mean(values), rel=1e-9)
        assert float(r["ci_lo"]) == pytest.approx(lo, rel=1e-6) and float(r["ci_hi"]) == pytest.approx(hi, rel=1e-6)
        assert r["n"] == "2" and r["seeds"] == "0 1"
        assert (model, "synbench/score") in rows
    [corr] = [c for c in csv.DictReader((out / "correlations.csv").open()) if c["metric"] == METRIC]
    x = np.array([np.mean(scores[m]) for m in sorted(DOWNSTREAM)])
    y = np.array([DOWNSTREAM[m] for m in sorted(DOWNSTREAM)])
    assert np.ptp(x) > 0
    assert float(corr["pearson"]) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
    assert float(corr["kendall"]) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-9)
    assert -1 <= float(corr["pearson_lo"]) <= float(corr["pearson_hi"]) <= 1
    md = (out / "report.md").read_text()
    assert "| test_vit | synbench/score |" in md and "Kendall tau" in md
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.csv", "report/correlations.csv",
            "report/score_per_model.png", "report/accuracy_vs_scale.png"} <= logged


def test_interval_and_correlations_against_closed_forms():
    mean, lo, hi = report.interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and (lo, hi) == pytest.approx(stats.t.interval(0.95, 3, loc=2.5, scale=stats.sem([1, 2, 3, 4])))
    assert math.isnan(report.interval([1.0])[1])
    x, y = np.arange(6.0), np.arange(6.0) ** 2
    c = report.correlations(x, y, 200, 0)
    assert c["kendall"] == pytest.approx(1.0) and c["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert c["kendall_lo"] == pytest.approx(1.0)  # every resample of a monotone relation is concordant

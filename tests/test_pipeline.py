"""End to end through Hydra's compose API: test_vit -> SynBench -> the MLflow store, queried back."""

import json
import math

import pytest
from mlflow.tracking import MlflowClient

from synbench import app
from synbench.encoders import EncoderError
from synbench.tracking import TrackingError

pytestmark = pytest.mark.slow


def client_for(cfg):
    return MlflowClient(cfg.tracking.uri)


def runs(cfg, **kw):
    c = client_for(cfg)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id], **kw)


def test_job_logs_scores_curves_and_artifacts(cfg_factory, tmp_path):
    cfg = cfg_factory("tracking.run_name=e2e")
    summary = app.run(cfg, tmp_path / "job")
    score = summary["scalars"]["synbench/score"]
    assert math.isfinite(score) and 0.0 <= score <= 1.5
    assert summary["scalars"]["synbench/best_eps"] in (0.0, 0.5)
    [run] = runs(cfg, filter_string="tags.mlflow.runName = 'e2e'")
    assert run.info.status == "FINISHED"
    m, p = run.data.metrics, run.data.params
    for t in ("0.60", "0.70", "0.99"):
        for e in ("0.00", "0.50"):
            assert math.isfinite(m[f"synbench/score/at_{t}/eps_{e}"])
    assert m["synbench/score"] == pytest.approx(max(m["synbench/score/at_0.70/eps_0.00"],
                                                    m["synbench/score/at_0.70/eps_0.50"]))
    assert p["model.name"] == "test_vit" and p["mixture.direction"] == "ones" and p["seed"] == "0"
    assert run.data.tags["synbench.config_hash"] == summary["config_hash"]
    c = client_for(cfg)
    acc = c.get_metric_history(run.info.run_id, "synbench/accuracy/eps_0.00")
    assert [h.step for h in sorted(acc, key=lambda h: h.step)] == [0, 1, 2, 3]
    assert all(0.0 <= h.value <= 1.0 for h in acc)
    grid = sorted(c.get_metric_history(run.info.run_id, "synbench/grid/scale"), key=lambda h: h.step)
    assert [h.value for h in grid] == [0.5, 1.5, 2.5, 3.5]
    assert len(c.get_metric_history(run.info.run_id, "synbench/expected_bound/raw")) == 100
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"results.json", "plots", "tables"} <= artifacts
    plots = {a.path for a in c.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/synbench_accuracy_vs_scale.png", "plots/synbench_expected_bound_vs_threshold.png",
                     "plots/probe_accuracy_vs_scale.png"}
    # SynBench's recommended radius sits beside the downstream probe's clean and robust accuracy
    assert len(c.get_metric_history(run.info.run_id, "synbench/recommended_radius")) == 4
    assert 0.0 <= m["probe/clean_accuracy/eps_0.00"] <= 1.0
    assert m["probe/robust_accuracy/eps_0.50"] <= m["probe/clean_accuracy/eps_0.50"]
    local = json.loads((tmp_path / "job" / "results.json").read_text())
    assert local["metrics"]["synbench"]["scalars"]["score"] == pytest.approx(score)
    assert local["job"]["encoder"]["weights"] == "random-init:seed=0"


def test_same_seed_same_score_other_seed_within_noise(cfg_factory, tmp_path):
    def score(seed, name):
        cfg = cfg_factory(f"seed={seed}", "model.init_seed=0", "cache.enabled=false",
                          "mixture.n_train=128", "mixture.n_test=128")
        return app.run(cfg, tmp_path / name)["scalars"]

    a, b, c = score(0, "a"), score(0, "b"), score(1, "c")
    assert a == b  # bit for bit, every scalar
    key = "synbench/score/at_0.60/eps_0.00"
    assert a[key] != c[key]
    # sampling noise of a ratio of means of bounded terms over 128 test points: a generous 0.15
    assert abs(a[key] - c[key]) < 0.15


@pytest.mark.parametrize("override, error, needle", [
    ("model.name=not_a_model", EncoderError, "model.name='not_a_model'"),
    ("model.input_size=0", EncoderError, "model.input_size=0"),
    ("model=onet model.checkpoint=/nonexistent/onet.pt", EncoderError, "model.checkpoint='/nonexistent/onet.pt'"),
    ("model=crepe_tiny model.size=huge", EncoderError, "model.size='huge'"),
    ("model=torchvision model.name=resnet19", EncoderError, "model.name='resnet19'"),
    ("epsilon.grid=[0.0,1.0]", ValueError, "outside [0, 1)"),
    ("mixture.scales=[2.0,1.0]", ValueError, "not strictly increasing"),
    ("mixture.n_test=0", ValueError, "mixture.n_test=0"),
    ("model.checkpoint=/nonexistent/w.safetensors", EncoderError, "does not exist"),
    ("mixture.scales=[0.5,1.0]", ValueError, "a_t=0.85"),
    ("mixture.direction=diagonal", ValueError, "mixture.direction='diagonal'"),
    ("tracking.uri=http://127.0.0.1:9", TrackingError, "unreachable"),
    ("metrics=[synbench,robustness] attack.norm=l1", ValueError, "attack.norm='l1'"),
    ("metrics=[synbench,robustness] attack.steps=0", ValueError, "attack.steps=0"),
    ("metrics=[synbench,robustness] attack.eps=[-0.1]", ValueError, "attack.eps=[-0.1]"),
    ("metrics=[synbench,robustness] metrics.robustness.scale=9.0", ValueError, "metrics.robustness.scale=9"),
    ("probe=robust_logistic probe.norm=l3", ValueError, "probe.norm='l3'"),
    ("embed.precision=fp16", ValueError, "embed.precision='fp16'"),
])
def test_bad_input_fails_before_any_run_exists(cfg_factory, tmp_path, override, error, needle):
    cfg = cfg_factory(*override.split(" "), "tracking.experiment=bad-input")
    with pytest.raises(error) as err:
        app.run(cfg, tmp_path / "job")
    assert needle in str(err.value) and "\n" not in str(err.value)
    if not override.startswith("tracking"):
        assert runs(cfg) == []
    assert not (tmp_path / "job" / "results.json").exists()


def test_mismatched_checkpoint_fails_before_any_run(cfg_factory, tmp_path):
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(path))
    cfg = cfg_factory(f"model.checkpoint={path}", "model.pretrained=true", "tracking.experiment=bad-ckpt")
    with pytest.raises(EncoderError, match="does not match architecture 'test_vit'"):
        app.run(cfg, tmp_path / "job")
    assert runs(cfg) == []


def test_failure_inside_the_job_marks_the_run_failed(cfg_factory, tmp_path, monkeypatch):
    from synbench.metrics.synbench_score import SynBenchScore

    def boom(self, inputs):
        raise RuntimeError("metric exploded")

    monkeypatch.setattr(SynBenchScore, "compute", boom)
    cfg = cfg_factory("tracking.experiment=failing")
    with pytest.raises(RuntimeError, match="metric exploded"):
        app.run(cfg, tmp_path / "job")
    [run] = runs(cfg)
    assert run.info.status == "FAILED" and "metric exploded" in run.data.tags["synbench.error"]


def test_results_survive_an_mlflow_failure(cfg_factory, tmp_path, monkeypatch):
    from synbench.tracking.mlflow_run import JobRun

    def broken(self, result):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(JobRun, "log_result", broken)
    cfg = cfg_factory("tracking.experiment=mlflow-dies")
    with pytest.raises(ConnectionError):
        app.run(cfg, tmp_path / "job")
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert math.isfinite(results["metrics"]["synbench"]["scalars"]["score"])
    [run] = runs(cfg)
    assert run.info.status == "FAILED"


def test_robustness_bound_is_logged_per_epsilon(cfg_factory, tmp_path):
    cfg = cfg_factory("metrics=[synbench,probe,robustness]", "probe=robust_logistic", "probe.radius=0.1",
                      "metrics.robustness.scale=3.5", "metrics.robustness.n_points=16", "attack.steps=2",
                      "attack.eps=[0.0,0.01]", "mixture.direction=random", "tracking.run_name=robust")
    app.run(cfg, tmp_path / "job")
    [run] = runs(cfg, filter_string="tags.mlflow.runName = 'robust'")
    c = client_for(cfg)
    hist = {k: [h.value for h in sorted(c.get_metric_history(run.info.run_id, f"robustness/r_0.10/{k}"),
                                        key=lambda h: h.step)]
            for k in ("adv_loss", "bound_spectral", "bound_data", "criterion", "robust_accuracy")}
    assert all(len(v) == 2 for v in hist.values())
    for k in range(2):
        assert hist["adv_loss"][k] <= hist["bound_data"][k] * (1 + 1e-5) <= hist["bound_spectral"][k] * (1 + 1e-4)
        assert hist["criterion"][k] <= hist["robust_accuracy"][k]
    assert run.data.params["probe.radius"] == "0.1"
    assert "plots/robustness_bound_vs_eps_r_0.10.png" in {a.path for a in c.list_artifacts(run.info.run_id, "plots")}

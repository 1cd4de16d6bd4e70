"""``python -m synbench.compare`` end to end: three tiny models through Hydra, the embedding cache and MLflow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from synbench import app, compare
from synbench.runner import CONF_DIR

pytestmark = pytest.mark.slow
MIXTURE = ["mixture.n_train=64", "mixture.n_test=64", "mixture.chunk_size=32", "progress=false",
           "embed.batch_size=64"]
SMALL = [*MIXTURE, "compare.scale=1.5", "compare.n_bootstrap=20", "tracking.experiment=compare"]


def compare_cfg(outputs: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("compare", overrides=[f"paths.outputs={outputs}", *SMALL, *overrides])


def runs_of(cfg) -> list:
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def test_three_tiny_models_compared_after_a_sweep_embed_nothing_again(store, cfg_factory, tmp_path):
    # a SynBench job of test_vit (init seed 0) at the same mixture first: its embeddings land in the cache
    app.run(cfg_factory("mixture.scales=[0.5,1.5,2.5,3.5]", "model.init_seed=0"), tmp_path / "job")
    cfg = compare_cfg(store, "resume=false")
    out = compare.run(cfg, tmp_path / "cmp")
    assert out["models"]["vit_a"]["images_embedded"] == 0  # every embedding from the job's cache
    assert out["models"]["vit_b"]["images_embedded"] == 128 and out["models"]["cnn"]["images_embedded"] == 128
    comp = out["comparison"]
    assert comp.names == ["vit_a", "vit_b", "cnn"] and comp.n == 128 and comp.k == 5  # ceil(log 128)
    assert len(comp.tests) == 3  # every pair

    # the folder holds everything before MLflow; MLflow holds the same numbers
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    for rel in ("matrices/distance.csv", "matrices/cka.csv", "matrices/mutual_knn.csv", "matrices/mds.csv",
                "pairs/vit_a_vs_vit_b.csv", "plots/manifold_of_models.png", "plots/p_values_vit_b_vs_cnn.png"):
        assert (tmp_path / "cmp" / rel).is_file(), rel
    client = MlflowClient(cfg.tracking.uri)
    parent = client.get_run(out["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["synbench.kind"] == "comparison"
    assert parent.data.metrics["distance/vit_a_vs_cnn"] == pytest.approx(saved["distance"][0][2])
    assert parent.data.metrics["cka/vit_b_vs_cnn"] == pytest.approx(saved["cka"][1][2])
    artifacts = {a.path for a in client.list_artifacts(out["run_id"], "tables")}
    assert {"tables/distance.json", "tables/cka.json", "tables/mutual_knn.json", "tables/mds.json"} <= artifacts
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert sorted(c.data.params["other"] for c in children) == ["cnn", "cnn", "vit_b"]
    for child in children:
        assert child.info.status == "FINISHED"
        test = next(t for t in saved["tests"] if t["reference"] == child.data.params["reference"]
                    and t["other"] == child.data.params["other"])
        assert child.data.metrics["fraction_rejected"] == pytest.approx(test["fraction_rejected"])
        assert {a.path for a in client.list_artifacts(child.info.run_id, "plots")} == {
            f"plots/p_values_{test['reference']}_vs_{test['other']}.png"}

    # resume: the same comparison again is skipped, pointing at the finished run
    again = compare.run(compare_cfg(store), tmp_path / "cmp2")
    assert again["reused_run_id"] == out["run_id"]


class NaNNet(torch.nn.Module):
    """A broken model: the right shape, no numbers."""

    def forward(self, x):
        return torch.full((len(x), 8), float("nan"))


@pytest.mark.parametrize("overrides, message", [
    (["~models.vit_b", "~models.cnn"], "at least two models"),
    (["~models.cnn", "+model@models.bad=custom", "models.bad.module._target_=tests.test_compare.NaNNet",
      "models.bad.input_shape=[3,160,160]"], "models.bad .* returned non-finite features"),
    (["compare.k=128"], "compare.k=128 must be in"),
    (["compare.reference=nope"], "compare.reference='nope'"),
    (["models.cnn.input_size=96"], "every model must see the same inputs"),
])
def test_bad_input_is_one_line_before_any_run(store, tmp_path, overrides, message):
    cfg = compare_cfg(store, "tracking.experiment=compare_bad", *overrides)
    before = len(runs_of(cfg))
    with pytest.raises(ValueError, match=message) as err:
        compare.run(cfg, tmp_path / "bad")
    assert "\n" not in str(err.value)
    assert len(runs_of(cfg)) == before and not (tmp_path / "bad").exists()


def test_the_readme_command_runs(tmp_path):
    """``./scripts/compare`` and ``python -m synbench.compare`` as docs/comparing.md shows them (a smaller mixture and
    fewer bootstraps)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = Path(__file__).resolve().parent.parent / "scripts" / "compare"  # docs/comparing.md's ./scripts/compare
    proc = subprocess.run([str(script), f"paths.outputs={tmp_path}", *SMALL, "compare.reference=vit_a"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Model comparison finished" in proc.stdout and "cnn vs vit_a" in proc.stdout
    [result] = list((tmp_path / "compare").rglob("comparison.json"))
    assert [(t["reference"], t["other"]) for t in json.loads(result.read_text())["tests"]] == [
        ("vit_a", "vit_b"), ("vit_a", "cnn")]
    bad = subprocess.run([sys.executable, "-m", "synbench.compare", f"paths.outputs={tmp_path}", *SMALL,
                          "compare.k=0"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("synbench.compare: error: compare.k=0")


def test_the_benchmark_prints_its_table():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "scripts" / "bench_compare.py"), "--rows", "300:3:5",
                           "--width", "32"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [row] = [line for line in proc.stdout.splitlines() if line.startswith("| 300 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["300", "3", "5"] and float(cells[-2]) > 0 and float(cells[-1].replace(",", "")) > 0

"""The validity study's CI version (``scripts/validity_mnist.py --quick``): 3 MNIST-family encoders trained here,
the real multirun, report and comparison. The report's correlations are checked against scipy on the runs' own
numbers, and the trained encoders against their expected grading on held-out MNIST."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    if not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{FASHION} is missing: .ci/run installs Debian's dataset-fashion-mnist")
        pytest.skip(f"{FASHION} is missing (apt-get install dataset-fashion-mnist)")
    outputs = tmp_path_factory.mktemp("validity")
    subprocess.run([sys.executable, "scripts/validity_mnist.py", "--quick", "--outputs", str(outputs),
                    "--bootstrap", "200"], cwd=ROOT, check=True)
    return outputs


def job_runs(outputs: Path) -> list:
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("validity_mnist_quick")
    return client.search_runs([exp.experiment_id], "tags.`synbench.kind` = 'job'", max_results=1000)


def test_the_report_numbers_equal_scipy_on_the_runs_values(study):
    runs = [r for r in job_runs(study) if r.info.status == "FINISHED"]
    assert len(runs) == 12  # 3 members x 4 parts
    [report_dir] = [d for d in (study / "validity_mnist_quick").iterdir() if (d / "correlations.csv").is_file()]
    rows = {(r["metric"], r["truth"]): r for r in csv.DictReader((report_dir / "correlations.csv").open())}
    checked = 0
    for metric, direction, truth, dataset in (("spectrum/rankme", None, "downstream/accuracy", "mnist"),
                                              ("synbench/score", "lowfreq", "downstream/accuracy", "fashion_mnist"),
                                              ("rmqm/pgd", None, "downstream/robust_accuracy/eps_0.1", "mnist")):
        x = {r.data.tags["synbench.model"]: r.data.metrics[metric] for r in runs
             if metric in r.data.metrics and direction in (None, r.data.tags["synbench.direction"])}
        y = {r.data.tags["synbench.model"]: r.data.metrics[truth] for r in runs
             if r.data.tags.get("synbench.dataset") == dataset and truth in r.data.metrics}
        models = sorted(x)
        assert len(models) == 3 and set(y) == set(models)
        name = metric if direction is None else f"{metric} [{direction}]"
        row = rows[(name, f"{dataset}: {truth}")]
        a, b = np.array([x[m] for m in models]), np.array([y[m] for m in models])
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            assert float(row["kendall"]) == pytest.approx(stats.kendalltau(a, b)[0], abs=1e-12)
            assert float(row["pearson"]) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
            checked += 1
    assert checked >= 2  # at least two of the pairs have spread on both sides


def test_the_trained_encoders_are_graded(study):
    acc = {r.data.tags["synbench.model"]: r.data.metrics["downstream/accuracy"] for r in job_runs(study)
           if r.data.tags.get("synbench.dataset") == "mnist" and "downstream/accuracy" in r.data.metrics}
    # the random init lowest, the supervised CNN well above the linear map
    assert acc["random_cnn_a"] < acc["linear"] < acc["cnn_w32"], acc
    assert acc["cnn_w32"] - acc["linear"] > 0.02, acc


def test_the_comparison_and_the_manifold_summary(study):
    folder = study / "validity_mnist_quick"
    grids = list((folder / "compare" / "plots").glob("most_changed_*.png"))
    assert len(grids) == 2  # the reference against each other member
    text = (folder / "manifold.md").read_text()
    assert "mnist: downstream/accuracy" in text and "Kendall tau" in text

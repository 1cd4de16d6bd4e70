"""The validity study's CI version (``scripts/validity_mnist.py --quick``): 3 recipes x 2 training seeds of the
MNIST family trained here, the real multirun, the report (recipe bootstrap, permutation p, Holm, with and
without the random inits), the comparison, the claims and the tables the full study writes into the docs. The
report's numbers are checked against scipy and a direct permutation count on the runs' own values, and the
trained encoders against their intended grading on held-out MNIST."""

import csv
import importlib.util
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def script():
    spec = importlib.util.spec_from_file_location("validity_mnist", ROOT / "scripts" / "validity_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    return [r for r in client.search_runs([exp.experiment_id], "tags.`synbench.kind` = 'job'", max_results=1000)
            if r.info.status == "FINISHED"]


def recipe(model: str) -> str:
    return re.fullmatch(r"(.+)_s\d+", model).group(1)


def permutation_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p of Kendall's tau by counting every permutation of y (few groups: exact)."""
    tau = stats.kendalltau(x, y)[0]
    perms = [stats.kendalltau(x, y[list(p)])[0] for p in itertools.permutations(range(len(y)))]
    return float(np.mean([abs(t) >= abs(tau) - 1e-12 for t in perms]))


@pytest.mark.slow
def test_the_report_numbers_equal_scipy_on_the_runs_values(study):
    runs = job_runs(study)
    assert len(runs) == 24  # 6 members x 4 parts
    [report_dir] = [d for d in (study / "validity_quick" / "mnist").iterdir() if (d / "correlations.csv").is_file()]
    rows = {(r["metric"], r["truth"], r["subset"]): r for r in csv.DictReader((report_dir / "correlations.csv").open())}
    checked = 0
    for metric, direction, truth, dataset in (("spectrum/rankme", None, "downstream/accuracy", "mnist"),
                                              ("synbench/score", "lowfreq", "downstream/accuracy", "fashion_mnist"),
                                              ("rmqm/pgd", None, "downstream/robust_accuracy/eps_0.05", "mnist")):
        x = {r.data.tags["synbench.model"]: r.data.metrics[metric] for r in runs
             if metric in r.data.metrics and direction in (None, r.data.tags["synbench.direction"])}
        y = {r.data.tags["synbench.model"]: r.data.metrics[truth] for r in runs
             if r.data.tags.get("synbench.dataset") == dataset and truth in r.data.metrics}
        name = metric if direction is None else f"{metric} [{direction}]"
        for subset in ("all", "trained"):
            models = sorted(m for m in x if subset == "all" or not m.startswith("random_"))
            assert len(models) == (6 if subset == "all" else 4) and set(models) <= set(y)
            a, b = np.array([x[m] for m in models]), np.array([y[m] for m in models])
            if np.ptp(a) == 0 or np.ptp(b) == 0:
                continue
            row = rows[(name, f"{dataset}: {truth}", subset)]
            assert int(row["models"]) == len(models) and int(row["groups"]) == len({recipe(m) for m in models})
            assert float(row["kendall"]) == pytest.approx(stats.kendalltau(a, b)[0], abs=1e-12)
            assert float(row["pearson"]) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
            # the p-value's unit is the recipe: tau of the recipe means, every permutation counted
            groups = sorted({recipe(m) for m in models})
            ga = np.array([np.mean([x[m] for m in models if recipe(m) == g]) for g in groups])
            gb = np.array([np.mean([y[m] for m in models if recipe(m) == g]) for g in groups])
            assert float(row["kendall_groups"]) == pytest.approx(stats.kendalltau(ga, gb)[0], abs=1e-12)
            assert float(row["p"]) == pytest.approx(permutation_p(ga, gb), abs=1e-12)
            assert float(row["p_holm"]) >= float(row["p"])
            checked += 1
    assert checked >= 3


@pytest.mark.slow
def test_the_trained_encoders_are_graded(study):
    acc = {}
    for r in job_runs(study):
        if r.data.tags.get("synbench.dataset") == "mnist" and "downstream/accuracy" in r.data.metrics:
            acc.setdefault(recipe(r.data.tags["synbench.model"]), []).append(r.data.metrics["downstream/accuracy"])
    mean = {k: float(np.mean(v)) for k, v in acc.items()}
    assert all(len(v) == 2 for v in acc.values()), acc  # two training seeds per recipe
    # the random init lowest, the supervised CNN above the linear map, on average over the seeds
    assert mean["random_cnn"] < mean["linear"] < mean["cnn_w8"], mean


@pytest.mark.slow
def test_the_study_writes_its_tables(study):
    folder = study / "validity_quick"
    assert (folder / "compare" / "comparison.json").is_file()
    text = (folder / "tables.md").read_text()
    for section in ("claims", "manifold", "members-mnist", "correlations-mnist", "bound-mnist", "timings"):
        assert f"## {section}\n" in text, section
    claims = text.split("## claims\n")[1].split("\n## ")[0]
    assert "logme/logme [mnist]" in claims and "synbench/score [ones]" in claims
    # Nern et al.'s criterion is a certified lower bound: it never exceeds the attack's robust accuracy
    bound = text.split("## bound-mnist\n")[1].split("\n## ")[0]
    counts = re.findall(r"\| (\d+) of (\d+) \|", bound)
    assert counts and all(a == b for a, b in counts), bound


def test_fill_replaces_between_markers_and_names_a_missing_table():
    fill = script().fill
    page = "intro: tables go between `<!-- study:NAME -->` lines\n<!-- study:a -->\nold\n<!-- /study:a -->\nmid\n<!-- study:b -->\n<!-- /study:b -->\nend\n"
    out = fill(page, {"a": "| x |", "b": "B"})
    assert out == "intro: tables go between `<!-- study:NAME -->` lines\n<!-- study:a -->\n| x |\n<!-- /study:a -->\nmid\n<!-- study:b -->\nB\n<!-- /study:b -->\nend\n"
    assert fill(out, {"a": "| x |", "b": "B"}) == out  # idempotent
    with pytest.raises(SystemExit, match="markers for b but the run made no such table"):
        fill(page, {"a": "x"})

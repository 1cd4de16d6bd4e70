"""The validity study's CI version (``scripts/validity_mnist.py --quick``): 5 of the registered recipes x 2
training seeds of the MNIST family trained here (an untrained init, three trained recipes, one SimCLR
configuration), the real multirun, the report, the comparison, and the pre-registered claims, control,
check and tables the full study writes into the docs, through the same statistics. The report's numbers are
checked against scipy and a direct permutation count on the runs' own values, the study's tables against scipy on
the recipe means, and the trained encoders against their intended grading on held-out MNIST. The fast tests check
that the study reads its claims from the pre-registration and says whether the file changed since it was
registered."""

import csv
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

from synbench.preregistration import DEFAULT as FILE
from synbench.preregistration import load
from synbench.report.mdtable import ragged, tables
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def script():
    return load_script("validity_mnist")


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
    assert len(runs) == 20  # 10 members x 2 parts
    [report_dir] = [d for d in (study / "validity_quick" / "mnist").iterdir() if (d / "correlations.csv").is_file()]
    rows = {(r["metric"], r["truth"], r["subset"]): r for r in csv.DictReader((report_dir / "correlations.csv").open())}
    checked = 0
    for metric, direction, truth, dataset in (("spectrum/rankme", None, "downstream/accuracy", "mnist"),
                                              # one direction in the sweep: its name has no bracket
                                              ("synbench/score", None, "downstream/accuracy", "fashion_mnist"),
                                              ("rmqm/pgd", None, "downstream/robust_accuracy/eps_0.05", "mnist")):
        x = {r.data.tags["synbench.model"]: r.data.metrics[metric] for r in runs
             if metric in r.data.metrics and direction in (None, r.data.tags["synbench.direction"])}
        y = {r.data.tags["synbench.model"]: r.data.metrics[truth] for r in runs
             if r.data.tags.get("synbench.dataset") == dataset and truth in r.data.metrics}
        name = metric if direction is None else f"{metric} [{direction}]"
        for subset in ("all", "trained"):
            models = sorted(m for m in x if subset == "all" or not m.startswith("random_"))
            assert len(models) == (10 if subset == "all" else 8) and set(models) <= set(y)
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
    assert set(mean) == set(script().QUICK["recipes"])
    # every recipe well above chance (0.1; the binomial sd at 500 test images is 0.013), and the recipes differ:
    # the study has a spread to rank (short recipes can sit below the untrained init: 30 of a ViT's 100 steps at
    # --quick's step scale under strong views, or a 4-wide bottleneck, read out worse than random conv features)
    assert min(mean.values()) > 0.2 and max(mean.values()) - min(mean.values()) > 0.1, mean


def section(text: str, name: str) -> str:
    return text.split(f"## {name}\n")[1].split("\n## ")[0]


@pytest.mark.slow
def test_the_study_writes_its_tables(study):
    folder = study / "validity_quick"
    assert (folder / "compare" / "comparison.json").is_file()
    text = (folder / "tables.md").read_text()
    for name in ("summary", "registration", "claims", "controls", "nern", "guards", "manifold", "members-mnist",
                 "exploratory-mnist", "timings"):
        assert f"## {name}\n" in text, name
    assert ragged(text) == [], ragged(text)  # every table renders: each row has its header's cells
    pre = load()
    # every registered test is a row, run or not: the quick sweep has 1 configuration (too few to test); its 3
    # trained recipes are tested, and 3 recipes reach no verdict (the smallest exact one-sided p is 1/6)
    [claims] = tables(section(text, "claims"))
    assert len(claims) - 2 == pre["statistics"]["supported"]["family_size"]
    assert {row[-1] for row in claims[2:]} == {"undecided"}
    assert "synbench/score [ones]" in section(text, "claims") and "not run: 1 recipes" in section(text, "claims")
    assert "logme/logme [mnist]" in section(text, "controls")
    # the headline the full study writes into README: the verdict counts, nothing stronger
    summary = section(text, "summary")
    assert "Of its 16 registered one-sided tests" in summary and "0 supported" in summary and "16 undecided" in summary
    assert "No claim is shown, and none is shown false." in summary and "not an absent association" in summary
    # the exploratory rows: tau and exact two-sided p of the recipe means of the runs' own values
    runs = job_runs(study)
    x = {r.data.tags["synbench.model"]: r.data.metrics["spectrum/data/rankme"] for r in runs
         if "spectrum/data/rankme" in r.data.metrics}
    y = {r.data.tags["synbench.model"]: r.data.metrics["downstream/accuracy"] for r in runs
         if r.data.tags.get("synbench.dataset") == "mnist" and "downstream/accuracy" in r.data.metrics}
    groups = sorted({recipe(m) for m in x})
    gx = [np.mean([x[m] for m in x if recipe(m) == g]) for g in groups]
    gy = [np.mean([y[m] for m in y if recipe(m) == g]) for g in groups]
    [exploratory] = tables(section(text, "exploratory-mnist"))
    [row] = [r for r in exploratory if r[:3] == ["spectrum/data/rankme", "mnist accuracy", "all"]]
    want = stats.kendalltau(gx, gy, method="exact")
    assert float(row[4].split(" ")[0]) == pytest.approx(want.statistic, abs=0.005)
    assert float(row[5]) == pytest.approx(want.pvalue, abs=0.0005)
    # Nern et al.'s check: each radius's result is what its counts say
    [nern] = tables(section(text, "nern"))
    for r in nern[2:]:
        members, certifying, violations = int(r[3]), int(r[4]), int(r[5])
        assert r[-1] == ("not measured" if members == 0 else "fails" if violations else
                         "vacuous" if certifying == 0 else "holds"), r
    measured = {(r[1], r[2]) for r in runs_with(runs, pre["checks"][0])}
    # the guards: each count is the runs' own (a saturated SynBench score, a bound radius certifying nothing)
    [guards] = tables(section(text, "guards"))
    syn = [r for r in runs if "synbench/score" in r.data.metrics]
    [saturated] = [g for g in guards if g[1].startswith("SynBench score mostly from saturated scales")]
    assert (int(saturated[2]), int(saturated[3])) == (
        sum(r.data.metrics["synbench/saturated_share"] > 0.5 for r in syn), len(syn))
    [widest] = [g for g in guards if g[1].startswith("bound at radius 0.05:")]
    assert int(widest[2]) == sum(r.data.metrics.get("robustness/eps_0.00/criterion/eps_0.05", 1) <= 0 for r in syn)
    assert {(r[1], r[2]) for r in nern[2:] if r[-1] != "not measured"} == measured


@pytest.mark.slow
def test_tables_only_recomputes_the_tables_from_the_finished_run(study, tmp_path):
    """The statistics again from the run's jobs, reports and comparison: the same claims, and the time table of
    the run that did the work, with a line that says so; no job runs (a re-run would add runs to the store)."""
    folder = study / "validity_quick"
    before = (folder / "tables.md").read_text()
    n_runs = len(job_runs(study))
    assert script().main(["--quick", "--tables-only", "--outputs", str(study), "--bootstrap", "200"]) == 0
    after = (folder / "tables.md").read_text()
    assert section(after, "claims") == section(before, "claims") and len(job_runs(study)) == n_runs
    assert section(before, "timings") in section(after, "timings") and "--tables-only" in section(after, "timings")
    with pytest.raises(SystemExit, match="--tables-only needs a finished run"):
        script().main(["--quick", "--tables-only", "--outputs", str(tmp_path)])


def runs_with(runs, check) -> list[tuple]:
    """(domain, dataset, radius) for which some run logged both of the check's metrics."""
    out = []
    for radius in check["radii"]:
        keys = [check[k].format(radius=f"{radius:g}") for k in ("certified", "robust")]
        out += [("mnist", r.data.tags["synbench.dataset"], f"{radius:g}") for r in runs
                if all(k in r.data.metrics for k in keys)]
    return sorted(set(out))


def test_the_study_reads_its_claims_from_the_preregistration(tmp_path):
    module = script()
    assert not hasattr(module, "CLAIMS")
    bad = tmp_path / "prereg.yaml"
    bad.write_text(FILE.read_text().replace("alpha: 0.05", "alpha: 5"))
    with pytest.raises(SystemExit, match=r"^validity: error: .*statistics\.alpha: 5 is not a level in \(0, 1\)$"):
        module.main(["--preregistration", str(bad), "--outputs", str(tmp_path)])
    assert not (tmp_path / "mlflow").exists()  # refused before any job ran


def test_the_page_says_whether_the_preregistration_changed_since_it_was_registered(tmp_path):
    module = script()
    line = module.registration(FILE)
    assert line.startswith("`conf/validity/preregistration.yaml`, registered in commit ")
    first = subprocess.run(["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%h", "--",
                            "conf/validity/preregistration.yaml"], capture_output=True, text=True).stdout.split()
    if first:  # a full clone: the commit that added the file, and nothing it fixes has changed since
        assert f"commit {first[-1][:7]}" in line and "unchanged since" in line
    assert module.changed_keys({"a": {"b": 1, "c": [1, 2]}, "x": 0}, {"a": {"b": 2, "c": [1, 2]}, "y": 0}) == [
        "a.b", "x", "y"]
    assert module.changed_keys({"a": 1}, {"a": 1}) == []
    outside = tmp_path / "prereg.yaml"
    outside.write_text(FILE.read_text())
    assert "not known" in module.registration(outside)


def test_the_page_block_holds_every_table_under_a_heading():
    module = script()
    tables_ = {"claims": "| a |\n|---|\n| 1 |", "members-mnist": "| b |\n|---|\n| 2 |", "timings": "t"}
    text = module.results(tables_)
    assert text.index("#### The claims") < text.index("#### The members (mnist)") < text.index("#### Time")
    assert ragged(text) == []


def test_fill_replaces_between_markers_and_names_a_missing_table():
    fill = script().fill
    page = "intro: tables go between `<!-- study:NAME -->` lines\n<!-- study:a -->\nold\n<!-- /study:a -->\nmid\n<!-- study:b -->\n<!-- /study:b -->\nend\n"
    out = fill(page, {"a": "| x |", "b": "B"})
    assert out == "intro: tables go between `<!-- study:NAME -->` lines\n<!-- study:a -->\n| x |\n<!-- /study:a -->\nmid\n<!-- study:b -->\nB\n<!-- /study:b -->\nend\n"
    assert fill(out, {"a": "| x |", "b": "B"}) == out  # idempotent
    with pytest.raises(SystemExit, match="markers for b but the run made no such table"):
        fill(page, {"a": "x"})

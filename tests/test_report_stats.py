"""The report's statistics: the vectorised bootstrap equals scipy resample by resample (tau-b exactly, ties
included), it draws whole groups of models, the permutation p-value over groups is scipy's exact test when every
model is its own group, Holm matches a hand computation, and ``--group`` / ``--untrained`` reach the files on a
fake sweep written with MlflowClient."""

import csv
import math
import re
import time
import uuid

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from synbench import report
from synbench.report import stats as rstats


def test_vectorised_tau_b_and_r_equal_scipy_on_resamples_with_ties():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(3, 16))
        x = rng.integers(0, 4, n).astype(float)  # few values: ties in x, in y and in both
        y = rng.integers(0, 5, n) * 0.1
        draws = rng.integers(0, n, (5, n))  # five resamples as index arrays
        weights = np.stack([np.bincount(d, minlength=n) for d in draws])
        taus, rs = report.kendall_tau_b(x, y, weights), report.pearson_r(x, y, weights)
        for d, tau, r in zip(draws, taus, rs):
            if np.ptp(x[d]) == 0 or np.ptp(y[d]) == 0:
                assert math.isnan(tau) and math.isnan(r)
                continue
            assert tau == stats.kendalltau(x[d], y[d])[0]  # exactly: the same integer counts, the same divisions
            assert r == pytest.approx(stats.pearsonr(x[d], y[d])[0], abs=1e-12)
            checked += 1
    assert checked > 500
    x, y = rng.normal(size=9), rng.normal(size=9)  # weights of ones: the plain statistics
    assert report.kendall_tau_b(x, y, np.ones(9))[0] == stats.kendalltau(x, y)[0]


def test_singleton_groups_give_the_intervals_of_the_old_scipy_loop():
    """Each model its own group: the same draws as the former loop of scipy calls, so the same intervals."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=12), rng.normal(size=12)
    x[:3] = x[3]  # ties
    got = report.correlations(x, y, 300, 4)
    draw = np.random.default_rng(4)
    boot = {"pearson": [], "kendall": []}
    for _ in range(300):
        i = draw.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boot["pearson"].append(stats.pearsonr(x[i], y[i])[0])
            boot["kendall"].append(stats.kendalltau(x[i], y[i])[0])
    for key, values in boot.items():
        lo, hi = np.percentile(values, [2.5, 97.5])
        assert got[f"{key}_lo"] == pytest.approx(lo, abs=1e-12) and got[f"{key}_hi"] == pytest.approx(hi, abs=1e-12)


def test_the_bootstrap_draws_whole_groups():
    groups = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    draws = rstats.resample_groups(4, 1000, np.random.default_rng(0))
    assert draws.shape == (1000, 4) and draws.min() == 0 and draws.max() == 3  # 4 groups drawn per resample
    weights = rstats.member_weights(groups, draws)
    for d, w in zip(draws, weights):
        counts = np.bincount(d, minlength=4)
        assert list(w) == list(counts[groups])  # every member of a group enters as often as its group was drawn
    assert {int(w.sum()) for w in weights} > {10}  # so a resample's size varies with the groups drawn

    # 5 recipes x 6 seeds, seeds close to their recipe: the members are not 30 independent models, and only the
    # group bootstrap says so (wider intervals); the point estimates, over members, are the same
    rng = np.random.default_rng(1)
    codes = np.repeat(np.arange(5), 6)
    x = np.array([0.0, 1, 2, 3, 4])[codes] + rng.normal(0, 0.05, codes.size)
    y = np.array([0.0, 2, 1, 4, 3])[codes] + rng.normal(0, 0.05, codes.size)
    by_group, by_model = report.correlations(x, y, 2000, 0, groups=codes), report.correlations(x, y, 2000, 0)
    for k in ("kendall", "pearson"):
        assert by_group[k] == by_model[k]
        assert by_group[f"{k}_hi"] - by_group[f"{k}_lo"] > 2 * (by_model[f"{k}_hi"] - by_model[f"{k}_lo"])
    assert (by_group["groups"], by_model["groups"]) == (5, 30)
    assert by_group["p"] > 0.2 and by_model["p"] < 0.001  # seeds as models would claim a discovery


@pytest.mark.parametrize("n", range(3, 9))
def test_permutation_p_equals_scipy_exact_with_singleton_groups(n):
    rng = np.random.default_rng(n)
    for _ in range(10):
        x, y = rng.normal(size=n), rng.normal(size=n)
        c = report.correlations(x, y, 20, 0)
        assert c["kendall_groups"] == c["kendall"] and c["groups"] == n
        assert c["p"] == pytest.approx(stats.kendalltau(x, y, method="exact").pvalue, abs=1e-12)


def test_permutation_p_over_group_means_and_above_the_exact_limit():
    rng = np.random.default_rng(3)
    codes = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4])
    x, y = rng.normal(size=9), rng.normal(size=9)
    c = report.correlations(x, y, 20, 0, groups=codes)
    xg = [x[codes == g].mean() for g in range(5)]
    yg = [y[codes == g].mean() for g in range(5)]
    assert c["kendall_groups"] == pytest.approx(stats.kendalltau(xg, yg)[0])
    assert c["p"] == pytest.approx(stats.kendalltau(xg, yg, method="exact").pvalue, abs=1e-12)
    # 12 groups: 9,999 seeded random permutations, p = (1 + hits) / 10,000, near the exact p
    x, y = rng.normal(size=12), rng.normal(size=12)
    tau, p = rstats.permutation_test(x, y, seed=0)
    assert round(p * 10000) == pytest.approx(p * 10000) and p >= 1e-4
    assert p == pytest.approx(stats.kendalltau(x, y, method="exact").pvalue, abs=0.02)
    assert rstats.permutation_test(x, y, seed=0) == (tau, p)  # seeded
    assert all(math.isnan(v) for v in rstats.permutation_test(np.ones(4), y[:4], 0))


def test_holm_by_hand():
    # m = 5 finite p: sorted 0.005 0.01 0.03 0.04 0.5 times 5 4 3 2 1 = 0.025 0.04 0.09 0.08 0.5, running max
    # 0.025 0.04 0.09 0.09 0.5; NaN stays NaN and is not counted
    got = report.holm([0.01, 0.04, 0.03, 0.005, math.nan, 0.5])
    assert got[:4] == pytest.approx([0.04, 0.09, 0.09, 0.025]) and math.isnan(got[4]) and got[5] == 0.5
    assert list(report.holm([0.6, 0.7])) == [1.0, 1.0]  # 1.2 clipped to 1, and the larger p never below it
    assert list(report.holm([])) == []


# --- the command line on a fake sweep -------------------------------------------------------------------------

RECIPES = {"random_a": (0, 1), "random_b": (0,), "cnn": (0, 1), "lin": (0, 1), "mlp": (0, 1), "vit": (0, 1)}
# rmqm/noise is 0 for these and the 3 untrained members: 6 of 11 models (mostly one value: not correlated), but
# 3 of the 8 trained ones (correlated over the trained)
FLOORED = ("lin_s0", "lin_s1", "mlp_s0")


@pytest.fixture(scope="module")
def sweep(store):
    """Members <recipe>_s<seed> of 6 recipes (2 untrained), one run each; the shared SQLite store."""
    uri = f"sqlite:///{store / 'mlflow' / 'mlflow.db'}"
    (store / "mlflow").mkdir(exist_ok=True)
    client = MlflowClient(uri)
    name = f"groups-{uuid.uuid4().hex[:8]}"
    exp = client.create_experiment(name, artifact_location=str(store / "report_artifacts" / name))
    parent = client.create_run(exp, tags={"synbench.kind": "sweep"}).info.run_id
    rng = np.random.default_rng(2)
    values = {}
    for recipe, seeds in RECIPES.items():
        base = rng.uniform(0.2, 0.9)
        for seed in seeds:
            model = f"{recipe}_s{seed}"
            floored = recipe.startswith("random") or model in FLOORED
            values[model] = {"synbench/score": base + rng.normal(0, 0.03), "spectrum/rankme": rng.uniform(2, 40),
                             "rmqm/noise": 0.0 if floored else rng.uniform(1, 3),
                             "downstream/accuracy": base + rng.normal(0, 0.05)}
            run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "synbench.kind": "job",
                                               "synbench.model": model, "synbench.dataset": "mnist"})
            t = int(time.time() * 1000)
            client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), t, 0) for k, v in values[model].items()],
                             params=[Param("seed", "0")])
            client.set_terminated(run.info.run_id)
    client.set_terminated(parent)
    return {"uri": uri, "parent": parent, "values": values}


def read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_untrained_subset_and_groups_reach_the_files(sweep, tmp_path, capsys):
    down = tmp_path / "acc.csv"  # two trained models only: too few in the trained subset
    down.write_text("model,accuracy\nrandom_a_s0,0.1\nrandom_a_s1,0.15\nrandom_b_s0,0.12\ncnn_s0,0.9\nlin_s0,0.7\n")
    out = tmp_path / "out"
    assert report.main(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--out", str(out),
                        "--downstream", str(down), "--bootstrap", "50", "--seed", "1",
                        "--group", r"(.+)_s\d+", "--untrained", "random_.*"]) == 0
    err = capsys.readouterr().err.splitlines()
    folder = out / sweep["parent"]
    corr = read(folder / "correlations.csv")
    rows = {(c["metric"], c["truth"], c["subset"]): c for c in corr}
    truth = "mnist: downstream/accuracy"
    assert {k for k in rows if k[1] == truth} == {(m, truth, s) for m in ("synbench/score", "spectrum/rankme")
                                                  for s in ("all", "trained")} | {("rmqm/noise", truth, "trained")}
    assert f"synbench.report: note: 'rmqm/noise' is 0 for 6 of 11 models (floored): not correlated with {truth!r}" \
        in " ".join(err)
    values = sweep["values"]
    for (metric, column, subset), c in rows.items():
        if column != truth:
            continue
        models = sorted(m for m in values if subset == "all" or not m.startswith("random_"))
        x = np.array([values[m][metric] for m in models])
        y = np.array([values[m]["downstream/accuracy"] for m in models])
        codes = report.group_codes(models, re.compile(r"(.+)_s\d+"))
        assert int(c["models"]) == len(models) == (11 if subset == "all" else 8)
        assert int(c["groups"]) == (6 if subset == "all" else 4)
        assert float(c["kendall"]) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
        assert float(c["pearson"]) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
        means = [[v[codes == g].mean() for g in range(codes.max() + 1)] for v in (x, y)]
        assert float(c["kendall_groups"]) == pytest.approx(stats.kendalltau(*means)[0], abs=1e-12)
        assert float(c["p"]) == pytest.approx(stats.kendalltau(*means, method="exact").pvalue, abs=1e-12)
        boot = report.correlations(x, y, 50, 1, groups=codes)
        assert all(float(c[k]) == pytest.approx(boot[k]) for k in ("pearson_lo", "pearson_hi", "kendall_lo",
                                                                   "kendall_hi"))
    assert [float(c["p_holm"]) for c in corr] == pytest.approx(list(report.holm([float(c["p"]) for c in corr])))
    assert ("synbench.report: note: cannot correlate synbench/score, rmqm/noise, spectrum/rankme with "
            "'csv: accuracy' over the trained models: only 2 models have both (need >= 3)") in err
    assert {k[2] for k in rows if k[1] == "csv: accuracy"} == {"all"}
    md = (folder / "report.md").read_text()
    assert "| metric | truth | subset | models | groups | Kendall tau [95% CI] | p | p (Holm) | Pearson r [95% CI] |" \
        in md
    assert f"| synbench/score | {truth} | trained | 8 | 4 |" in md
    assert f"| synbench/score | {truth} | all | 11 | 6 |" in md
    assert "--untrained 'random_.*'" in md and "over the trained models: only 2 models" in md


def test_an_untrained_pattern_that_matches_nothing_is_a_note(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--out", str(out),
                        "--bootstrap", "20", "--untrained", "rand_.*", "--group", "(.+)-seed"]) == 0
    err = capsys.readouterr().err
    assert "synbench.report: note: --untrained 'rand_.*' matches none of the runs' models (" in err
    assert "synbench.report: note: --group '(.+)-seed' matches none of the runs' models (" in err
    corr = read(out / sweep["parent"] / "correlations.csv")
    by = {(c["metric"], c["truth"], c["subset"]): c for c in corr}
    for (metric, truth, subset), c in by.items():
        if subset == "trained":
            assert {k: v for k, v in c.items() if k not in ("subset", "p_holm")} == \
                {k: v for k, v in by[(metric, truth, "all")].items() if k not in ("subset", "p_holm")}


def test_without_the_options_every_row_is_all_and_every_model_a_group(sweep, tmp_path):
    out = tmp_path / "out"
    assert report.main(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--out", str(out),
                        "--bootstrap", "20"]) == 0
    corr = read(out / sweep["parent"] / "correlations.csv")
    assert corr and {c["subset"] for c in corr} == {"all"} and all(c["groups"] == c["models"] for c in corr)


@pytest.mark.parametrize("argv, said", [
    (["--group", "("], "--group '(' is not a regular expression"),
    (["--group", r".+_s\d+"], "has no capture group"),
    (["--untrained", "[random"], "--untrained '[random' is not a regular expression"),
])
def test_a_bad_pattern_is_one_line_before_any_file(sweep, tmp_path, argv, said):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        report.main(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--out", str(out), *argv])
    msg = str(e.value.code)
    assert msg.startswith("synbench.report: error: ") and "\n" not in msg and said in msg
    assert not out.exists()

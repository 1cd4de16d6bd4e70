"""The report against the truth, on a fake sweep written with MlflowClient (no jobs): every correlation is checked
against scipy on per-model means computed here, diagnostics under downstream/ stay out, intervals stay inside a
metric's range, and every bad input is one line before any file exists (a missing SQLite store is not created)."""

import csv
import math
import socket
import time
import uuid

import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from scipy import stats

from synbench import report

MODELS = ("alpha", "beta", "gamma", "delta", "eps")
SEEDS = {"alpha": (0, 1), "beta": (0, 1), "gamma": (0,), "delta": (0,), "eps": (0,)}
DATASETS = ("mnist", "fashion_mnist")
LABEL_FREE = ("synbench/score", "spectrum/rankme", "robustness/eps_0.10/criterion/max_eps",
              "robustness/r_0.50/bound_data/max_eps")
TRUTH = ("downstream/accuracy", "downstream/robust_accuracy/eps_0.1")
SHORT = "downstream/robust_accuracy/eps_0.3"  # logged by two models only: too few to correlate
NOISE = ("downstream/bound/eps_0.1", "downstream/bound_spectral/eps_0.1", "downstream/adv_loss/eps_0.1",
         "downstream/criterion/eps_0.1", "downstream/clean_loss", "downstream/penalty", "downstream/val_accuracy",
         "downstream/train_accuracy", "downstream/delta_f_mean/eps_0.1", "synbench/score/at_0.7/eps_0")
CSV_ACC = {"alpha": 0.9, "beta": 0.7, "gamma": 0.8, "delta": 0.6, "eps": 0.75}
ONE_LINE = "synbench.report: error: "


def fake_values(rng) -> dict:
    """{(model, dataset, seed): {metric: value}}; a model's label-free numbers repeat in each dataset's run."""
    out = {}
    for model in MODELS:
        for seed in SEEDS[model]:
            free = {"synbench/score": rng.uniform(0.1, 0.9), "spectrum/rankme": rng.uniform(2, 40),
                    "robustness/eps_0.10/criterion/max_eps": rng.uniform(0, 1),
                    "robustness/r_0.50/bound_data/max_eps": rng.uniform(0.3, 3)}
            for dataset in DATASETS:
                truth = {"downstream/accuracy": rng.uniform(0.5, 0.95),
                         "downstream/robust_accuracy/eps_0.1": rng.uniform(0.1, 0.6),
                         **{k: rng.uniform(0, 5) for k in NOISE}}
                if dataset == "fashion_mnist" and model in ("alpha", "beta"):
                    truth[SHORT] = rng.uniform(0, 0.5)
                out[(model, dataset, seed)] = {**free, **truth}
    # two seeds of alpha near 1 on mnist: the t-interval of their mean passes 1
    out[("alpha", "mnist", 0)]["downstream/accuracy"], out[("alpha", "mnist", 1)]["downstream/accuracy"] = 0.97, 1.0
    return out


def log_job(client, exp, parent, model, dataset, seed, metrics) -> None:
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "synbench.kind": "job",
                                       "synbench.model": model, "synbench.dataset": dataset})
    t = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), t, 0) for k, v in metrics.items()],
                     params=[Param("seed", str(seed))], tags=[RunTag("mlflow.runName", f"{model}-{dataset}-{seed}")])
    client.set_terminated(run.info.run_id)


def fake_sweep(client, name: str, values: dict, artifacts) -> str:
    exp = client.create_experiment(name, artifact_location=str(artifacts / name))
    parent = client.create_run(exp, tags={"synbench.kind": "sweep"}).info.run_id
    for (model, dataset, seed), metrics in values.items():
        log_job(client, exp, parent, model, dataset, seed, metrics)
    client.set_terminated(parent)
    return parent


@pytest.fixture(scope="module")
def sweep(store):
    """The fake sweep, in the suite's shared SQLite store (a new store costs seconds of migrations)."""
    uri = f"sqlite:///{store / 'mlflow' / 'mlflow.db'}"
    (store / "mlflow").mkdir(exist_ok=True)
    client = MlflowClient(uri)
    values = fake_values(np.random.default_rng(7))
    return {"uri": uri, "client": client, "values": values, "artifacts": store / "report_artifacts",
            "parent": fake_sweep(client, f"fake-{uuid.uuid4().hex[:8]}", values, store / "report_artifacts")}


def model_means(values: dict, metric: str, dataset: str | None = None) -> dict:
    """Per-model mean over that model's runs (of one dataset for a truth metric), computed independently."""
    runs = {}
    for (model, ds, _), metrics in values.items():
        if metric in metrics and dataset in (None, ds):
            runs.setdefault(model, []).append(metrics[metric])
    return {m: float(np.mean(v)) for m, v in runs.items()}


def read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fake_sweep_against_the_truth(sweep, tmp_path, capsys):
    down = tmp_path / "acc.csv"
    down.write_text("model,accuracy\n" + "".join(f"{m},{a}\n" for m, a in CSV_ACC.items()))
    assert report.main(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--out", str(tmp_path / "out"),
                        "--downstream", str(down), "--bootstrap", "60", "--seed", "3"]) == 0
    out = tmp_path / "out" / sweep["parent"]
    corr = {(c["metric"], c["truth"]): c for c in read(out / "correlations.csv")}
    columns = {f"{d}: {t}": (t, d) for d in DATASETS for t in TRUTH}
    assert set(corr) == {(m, t) for m in LABEL_FREE for t in [*columns, "csv: accuracy"]}
    for (metric, column), c in corr.items():
        x_of = model_means(sweep["values"], metric)
        y_of = CSV_ACC if column == "csv: accuracy" else model_means(sweep["values"], *columns[column])
        models = sorted(set(x_of) & set(y_of))
        x, y = np.array([x_of[m] for m in models]), np.array([y_of[m] for m in models])
        assert int(c["models"]) == len(models) == 5
        assert float(c["pearson"]) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
        assert float(c["kendall"]) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
        for k in ("pearson", "kendall"):
            assert -1 <= float(c[f"{k}_lo"]) <= float(c[f"{k}_hi"]) <= 1
        boot = report.correlations(x, y, 60, 3)  # the intervals are the bootstrap over these models' means
        assert all(float(c[k]) == pytest.approx(boot[k]) for k in ("pearson_lo", "pearson_hi", "kendall_lo", "kendall_hi"))
        assert (out / c["scatter"]).is_file() and c["scatter"].startswith("scatter/") and ":" not in c["scatter"]
    rows = read(out / "report.csv")
    names = {r["metric"] for r in rows}
    assert names == {*LABEL_FREE, *columns, f"fashion_mnist: {SHORT}"}
    text = (out / "report.csv").read_text() + (out / "correlations.csv").read_text()
    assert not any(n in text for n in NOISE) and "robustness/criterion," not in text
    for r in rows:  # every row's mean is the mean over the model's seeds
        metric, dataset = (r["metric"], None) if r["metric"] in LABEL_FREE else r["metric"].split(": ")[::-1]
        assert float(r["mean"]) == pytest.approx(model_means(sweep["values"], metric, dataset)[r["model"]])
        assert r["seeds"] == " ".join(map(str, SEEDS[r["model"]]))
        assert (r["ci_note"] == "one seed: no interval") == (len(SEEDS[r["model"]]) == 1)
    [clipped] = [r for r in rows if r["model"] == "alpha" and r["metric"] == "mnist: downstream/accuracy"]
    raw = stats.t.interval(0.95, 1, loc=0.985, scale=stats.sem([0.97, 1.0]))
    assert raw[1] > 1 and float(clipped["ci_hi"]) == 1.0 and float(clipped["ci_lo"]) == pytest.approx(raw[0])
    assert clipped["ci_note"] == "clipped to [0, 1]"
    # the skipped pair group: one note line on stderr, said in report.md too, and the rest still written
    note = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("synbench.report: note:")]
    assert note == [f"synbench.report: note: cannot correlate {', '.join(LABEL_FREE)} with "
                    f"'fashion_mnist: {SHORT}': only 2 models have both (need >= 3)"]
    md = (out / "report.md").read_text()
    assert "Correlation with the truth" in md and f"'fashion_mnist: {SHORT}': only 2 models have both" in md
    assert "clipped to [0, 1]" in md and "one seed: no interval" in md
    client = sweep["client"]
    logged = {a.path for a in client.list_artifacts(sweep["parent"], "report/scatter")}
    assert logged == {f"report/{c['scatter']}" for c in corr.values()} and len(logged) == len(corr)
    assert {"report/report.csv", "report/correlations.csv", "report/report.md"} <= {
        a.path for a in client.list_artifacts(sweep["parent"], "report")}


def test_label_free_patterns_and_ranges():
    assert report.label_free("robustness/eps_0.10/criterion/max_eps") and report.label_free("spectrum/rankme")
    assert not report.label_free("robustness/criterion") and not report.label_free("robustness/a/b/criterion/max_eps")
    assert not any(report.label_free(n) or report.is_truth(n) for n in NOISE)
    assert report.is_truth("downstream/robust_accuracy/eps_0.1") and report.is_truth("downstream/accuracy")
    assert report.value_range("mnist: downstream/robust_accuracy/eps_0.1") == (0, 1)
    assert report.value_range("spectrum/rankme") == (1, math.inf)
    assert report.value_range("spectrum/alpha_req") == (-math.inf, math.inf)


@pytest.mark.parametrize("values, bounds, side, note", [
    ([0.97, 1.0], (0.0, 1.0), 1, "clipped to [0, 1]"),
    ([0.0, 0.02, 0.01], (0.0, 1.0), 0, "clipped to [0, 1]"),
    ([1.1, 3.0], (1.0, math.inf), 0, "clipped to [1, inf)"),
])
def test_interval_is_clipped_to_the_metric_range(values, bounds, side, note):
    raw = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert not bounds[0] <= raw[side] <= bounds[1]  # the raw interval does leave the range
    mean, lo, hi, said = report.bounded_interval(values, bounds)
    assert mean == pytest.approx(np.mean(values)) and said == note
    assert (lo, hi)[side] == bounds[side] and (lo, hi)[1 - side] == pytest.approx(raw[1 - side])
    assert report.bounded_interval([0.5, 0.51, 0.52], (0.0, 1.0))[3] == ""  # inside: no note
    mean, lo, hi, said = report.bounded_interval([0.4], (0.0, 1.0))
    assert math.isnan(lo) and math.isnan(hi) and said == "one seed: no interval"


def test_too_few_models_is_a_note_not_a_crash(sweep, tmp_path, capsys):
    values = {(m, "mnist", 0): {"synbench/score": s, "downstream/accuracy": a}
              for m, s, a in (("alpha", 0.2, 0.6), ("beta", 0.4, 0.8))}
    values[("gamma", "mnist", 0)] = {"synbench/score": 0.3}  # no truth: two models have both
    parent = fake_sweep(sweep["client"], f"few-{uuid.uuid4().hex[:8]}", values, sweep["artifacts"])
    down = tmp_path / "acc.csv"
    down.write_text("model,accuracy\nalpha,0.5\nzeta,0.9\n")
    out = tmp_path / "out"
    assert report.main(["--parent", parent, "--tracking-uri", sweep["uri"], "--out", str(out), "--downstream",
                        str(down), "--bootstrap", "10"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "synbench.report: note: cannot correlate synbench/score with 'mnist: downstream/accuracy': only 2 models " \
           "have both (need >= 3)" in err
    assert "synbench.report: note: cannot correlate synbench/score with 'csv: accuracy': only 1 model has both " \
           "(need >= 3)" in err
    assert f"synbench.report: note: --downstream {str(down)!r} line 3: model 'zeta' matches no run, so it is left " \
           "out; did you mean 'beta'?" in err
    assert read(out / parent / "correlations.csv") == [] and (out / parent / "report.csv").is_file()
    assert "only 1 model has both" in (out / parent / "report.md").read_text()


def refused(argv: list[str], out) -> str:
    with pytest.raises(SystemExit) as e:
        report.main([*argv, "--out", str(out)])
    msg = str(e.value.code)
    assert msg.startswith(ONE_LINE) and "\n" not in msg, msg
    assert not out.exists()  # nothing written before the refusal
    return msg


def test_unknown_parent_or_experiment_is_one_line(sweep, tmp_path):
    msg = refused(["--parent", "0123abcd", "--tracking-uri", sweep["uri"]], tmp_path / "out")
    assert "'0123abcd'" in msg and sweep["parent"] in msg  # names the bad id and a valid one
    msg = refused(["--experiment", "nope", "--tracking-uri", sweep["uri"]], tmp_path / "out")
    assert "'nope'" in msg and "fake" in msg


@pytest.mark.parametrize("text, said", [
    (None, "no such file"),
    ("name,acc\nalpha,0.5\n", "no column model or accuracy"),
    ("model,score\nalpha,0.5\n", "no column accuracy"),
    ("model,accuracy\nalpha,0.5\nbeta,high\n", "line 3 (model 'beta'): accuracy 'high' is not a finite number"),
    ("model,accuracy\nalpha,0.5\nbeta,\n", "line 3 (model 'beta'): accuracy '' is not a finite number"),
    ("model,accuracy\nalpha,0.5\nalpha,0.6\n", "line 3: model 'alpha' again (first on line 2)"),
])
def test_bad_downstream_csv_is_one_line(sweep, tmp_path, text, said):
    path = tmp_path / "acc.csv"
    if text is not None:
        path.write_text(text)
    msg = refused(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--downstream", str(path)],
                  tmp_path / "out")
    assert str(path) in msg and said in msg


def test_bootstrap_below_one_is_one_line(sweep, tmp_path):
    msg = refused(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--bootstrap", "0"], tmp_path / "out")
    assert "--bootstrap 0" in msg and "at least 1" in msg


def test_missing_sqlite_store_is_refused_not_created(tmp_path):
    db = tmp_path / "none" / "mlflow.db"
    msg = refused(["--parent", "x", "--tracking-uri", f"sqlite:///{db}"], tmp_path / "out")
    assert str(db) in msg and not db.exists() and not db.parent.exists()
    for content in (b"", b"not a database at all, just text\n" * 200):  # a file that is no MLflow store stays as it is
        db.parent.mkdir(exist_ok=True)
        db.write_bytes(content)
        msg = refused(["--parent", "x", "--tracking-uri", f"sqlite:///{db}"], tmp_path / "out")
        assert str(db) in msg and db.read_bytes() == content
    folder = tmp_path / "mlruns"
    assert str(folder) in refused(["--experiment", "e", "--tracking-uri", str(folder)], tmp_path / "out")
    assert not folder.exists()


def test_unreachable_server_is_one_line_and_fast(tmp_path):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    msg = refused(["--parent", "x", "--tracking-uri", f"http://127.0.0.1:{port}"], tmp_path / "out")
    assert f"'http://127.0.0.1:{port}'" in msg and "cannot read the MLflow store" in msg
    assert time.monotonic() - start < 20


def test_scores_of_several_mixture_directions_are_separate_metrics(sweep, tmp_path):
    """A sweep that scores each model under two directions (tag synbench.direction): one name per direction,
    each the mean of its own runs, never two seeds of one score."""
    client = sweep["client"]
    name = f"dirs-{uuid.uuid4().hex[:8]}"
    exp = client.create_experiment(name, artifact_location=str(sweep["artifacts"] / name))
    parent = client.create_run(exp, tags={"synbench.kind": "sweep"}).info.run_id
    rng = np.random.default_rng(11)
    want = {}
    for model in ("a", "b", "c"):
        for direction in ("ones", "lowfreq"):
            score = rng.uniform(0, 1)
            want[(model, direction)] = score
            run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "synbench.kind": "job",
                                               "synbench.model": model, "synbench.direction": direction})
            client.log_batch(run.info.run_id, metrics=[Metric("synbench/score", score, 0, 0)],
                             params=[Param("seed", "0")])
            client.set_terminated(run.info.run_id)
    client.set_terminated(parent)
    assert report.main(["--parent", parent, "--tracking-uri", sweep["uri"], "--out", str(tmp_path)]) == 0
    rows = {(r["model"], r["metric"]): r for r in read(tmp_path / parent / "report.csv")}
    assert set(rows) == {(m, f"synbench/score [{d}]") for m, d in want}
    for (model, direction), score in want.items():
        row = rows[(model, f"synbench/score [{direction}]")]
        assert float(row["mean"]) == pytest.approx(score) and row["n"] == "1"


def test_a_typo_in_the_downstream_csv_is_named_with_what_it_could_mean(sweep, tmp_path, capsys):
    """A CSV model that matches no run lowers the count behind every correlation: each such row is a note
    with its line and the runs' models it could have meant, and the correlations use the rest."""
    down = tmp_path / "acc.csv"
    down.write_text("model,accuracy\n" + "".join(f"{'gamm' if m == 'gamma' else m},{a}\n" for m, a in CSV_ACC.items())
                    + "resnet,0.5\n")
    out = tmp_path / "out"
    assert report.main(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"], "--out", str(out),
                        "--downstream", str(down), "--bootstrap", "10"]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "matches no run" in ln]
    assert notes == [
        f"synbench.report: note: --downstream {str(down)!r} line 4: model 'gamm' matches no run, so it is left out; "
        "did you mean 'gamma'?",
        f"synbench.report: note: --downstream {str(down)!r} line 7: model 'resnet' matches no run, so it is left out "
        f"(the runs' models: {', '.join(sorted(MODELS))})"]
    corr = [c for c in read(out / sweep["parent"] / "correlations.csv") if c["truth"] == "csv: accuracy"]
    assert corr and all(c["models"] == "4" for c in corr)  # gamma's row is not behind them
    assert "line 4: model 'gamm' matches no run" in (out / sweep["parent"] / "report.md").read_text()


def test_a_constant_column_is_said_and_not_counted(sweep, tmp_path, capsys):
    """A metric (or truth) equal for every model has no correlation: a note saying so, no blank row, and the
    count of correlated pairs leaves it out."""
    values = {(m, "mnist", 0): {"synbench/score": 0.0, "spectrum/rankme": r, "downstream/accuracy": a}
              for m, r, a in (("alpha", 3.0, 0.6), ("beta", 5.0, 0.8), ("gamma", 4.0, 0.7), ("delta", 9.0, 0.9))}
    parent = fake_sweep(sweep["client"], f"const-{uuid.uuid4().hex[:8]}", values, sweep["artifacts"])
    out = tmp_path / "out"
    assert report.main(["--parent", parent, "--tracking-uri", sweep["uri"], "--out", str(out), "--bootstrap",
                        "10"]) == 0
    captured = capsys.readouterr()
    assert "synbench.report: note: 'synbench/score' is constant over the sweep (0 for all 4 models): not correlated " \
           "with 'mnist: downstream/accuracy'" in captured.err.splitlines()
    corr = read(out / parent / "correlations.csv")
    assert [(c["metric"], c["truth"]) for c in corr] == [("spectrum/rankme", "mnist: downstream/accuracy")]
    assert float(corr[0]["kendall"]) == pytest.approx(stats.kendalltau([3, 5, 4, 9], [0.6, 0.8, 0.7, 0.9])[0])
    assert "(1 correlated pairs)" in captured.out
    md = (out / parent / "report.md").read_text()
    assert "constant over the sweep" in md and "[, ]" not in md


def test_a_metric_stuck_at_one_value_for_most_models_is_flagged_not_correlated(sweep, tmp_path, capsys):
    """"7 of 9 members score 0.000": a floored score ranks by ties; it is named as such instead of being
    correlated, while a metric with a tie or two is still correlated."""
    scores = [0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.5]  # 7 of 9 at the floor
    ranks = [3.0, 5.0, 4.0, 9.0, 9.0, 2.0, 7.0, 1.0, 6.0]  # one tie: fine
    acc = [0.6, 0.8, 0.7, 0.9, 0.65, 0.75, 0.85, 0.55, 0.95]
    values = {(f"m{i}", "mnist", 0): {"synbench/score": s_, "spectrum/rankme": r, "downstream/accuracy": a}
              for i, (s_, r, a) in enumerate(zip(scores, ranks, acc))}
    parent = fake_sweep(sweep["client"], f"floor-{uuid.uuid4().hex[:8]}", values, sweep["artifacts"])
    out = tmp_path / "out"
    assert report.main(["--parent", parent, "--tracking-uri", sweep["uri"], "--out", str(out), "--bootstrap",
                        "10"]) == 0
    err = capsys.readouterr().err
    assert "'synbench/score' is 0 for 7 of 9 models (floored): not correlated with 'mnist: downstream/accuracy'" in err
    corr = read(out / parent / "correlations.csv")
    assert [c["metric"] for c in corr] == ["spectrum/rankme"]
    assert report.degenerate("x", np.array([1.0, 1.0, 2.0, 3.0])) is None  # half is not most
    assert report.degenerate("x", np.array([0.0, 0.0, 0.5])) is None  # two models tied: just a tie
    assert "(at its ceiling)" in report.degenerate("synbench/score", np.array([1.0, 1.0, 1.0, 0.5]))
    many = report.stuck_note("'x' is 0 for 7 of 9 models (floored)", ["a", "b", "c"])  # one note per column
    assert many.startswith("'x' is 0 for 7 of 9 models (floored): not correlated with any of 3 columns ('a', 'b', ...)")


def test_a_job_run_as_parent_names_its_sweep(sweep, tmp_path):
    client = sweep["client"]
    [child] = client.search_runs([client.get_run(sweep["parent"]).info.experiment_id], max_results=1,
                                 filter_string=f"tags.mlflow.parentRunId = '{sweep['parent']}'")
    msg = refused(["--parent", child.info.run_id, "--tracking-uri", sweep["uri"]], tmp_path / "out")
    assert f"--parent '{child.info.run_id}' is a job run, not a sweep parent" in msg
    assert f"its sweep's parent is {sweep['parent']}: --parent {sweep['parent']}" in msg
    exp = client.get_run(sweep["parent"]).info.experiment_id
    alone = client.create_run(exp, tags={"synbench.kind": "job"}).info.run_id
    msg = refused(["--parent", alone, "--tracking-uri", sweep["uri"]], tmp_path / "out")
    assert "is a job run, not a sweep parent; it belongs to no sweep: --experiment NAME" in msg


def test_a_plain_folder_is_not_an_mlflow_store(tmp_path):
    folder = tmp_path / "results"
    (folder / "plots").mkdir(parents=True)
    (folder / "notes.txt").write_text("not mlflow")
    msg = refused(["--experiment", "e", "--tracking-uri", str(folder)], tmp_path / "out")
    assert f"--tracking-uri {str(folder)!r}: not an MLflow store" in msg and "sqlite:///" in msg
    assert "maintenance mode" not in msg and sorted(p.name for p in folder.iterdir()) == ["notes.txt", "plots"]
    (folder / "0").mkdir()  # an MLflow file store: one folder per experiment, each with its meta.yaml
    (folder / "0" / "meta.yaml").write_text("name: Default\n")
    msg = refused(["--experiment", "e", "--tracking-uri", str(folder)], tmp_path / "out")
    assert "is an MLflow file store" in msg and "MLFLOW_ALLOW_FILE_STORE=true" in msg


def test_per_radius_robustness_skips_vacuous_radii_and_the_repeated_last(sweep, tmp_path, capsys):
    """Every radius is its own metric, but a radius the run marks vacuous ranks nothing and is left out with a
    note; max_eps repeats the last radius and is read only from runs that have no per-radius numbers."""
    rng = np.random.default_rng(4)
    values = {}
    for i in range(4):
        values[(f"m{i}", "mnist", 0)] = {
            "robustness/eps_0.10/criterion/eps_0.01": rng.uniform(0, 1),
            "robustness/eps_0.10/criterion/eps_0.2": rng.uniform(0, 0.01),
            "robustness/eps_0.10/criterion/max_eps": rng.uniform(0, 0.01),
            "robustness/reference/vacuous/eps_0.01": 0.0, "robustness/reference/vacuous/eps_0.2": 1.0,
            "robustness/reference/certified/eps_0.01": 0.97, "downstream/accuracy": rng.uniform(0.5, 0.9)}
    parent = fake_sweep(sweep["client"], f"radii-{uuid.uuid4().hex[:8]}", values, sweep["artifacts"])
    out = tmp_path / "out"
    assert report.main(["--parent", parent, "--tracking-uri", sweep["uri"], "--out", str(out), "--bootstrap",
                        "10"]) == 0
    assert "robustness/eps_0.10/criterion/eps_0.2: at a vacuous radius" in capsys.readouterr().err
    assert {r["metric"] for r in read(out / parent / "report.csv")} == {
        "robustness/eps_0.10/criterion/eps_0.01", "mnist: downstream/accuracy"}


def test_an_unwritable_out_is_one_line_and_an_experiment_name_never_leaves_it(sweep, tmp_path):
    (tmp_path / "afile").write_text("")
    msg = refused(["--parent", sweep["parent"], "--tracking-uri", sweep["uri"]], tmp_path / "afile" / "rep")
    assert "--out" in msg and "pass --out a writable folder" in msg
    client = sweep["client"]
    name = f"../../escape-{uuid.uuid4().hex[:6]}"
    fake_sweep(client, name, sweep["values"], sweep["artifacts"])
    assert report.main(["--experiment", name, "--tracking-uri", sweep["uri"], "--out", str(tmp_path / "o" / "r")]) == 0
    written = [p for p in tmp_path.rglob("report.md")]
    assert len(written) == 1 and (tmp_path / "o" / "r") in written[0].parents


def test_most_probes_stopping_at_max_iter_is_one_note():
    from types import SimpleNamespace

    from synbench.report.runs import probe_notes

    def run(short):
        metrics = {} if short is None else {"downstream/probe_at_max_iter": float(short)}
        return SimpleNamespace(data=SimpleNamespace(metrics=metrics))

    [note] = probe_notes([run(1), run(1), run(0), run(None)])
    assert "stopped at metrics.downstream.probe.max_iter in 2 of 3 runs" in note
    assert probe_notes([run(1), run(0), run(None)]) == []  # half is not most

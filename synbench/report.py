"""A sweep as tables people can read: ``python -m synbench.report --parent RUN_ID`` (or ``--experiment NAME``).

Pulls the FINISHED job runs of a sweep (the parent's children plus the runs it reused on resume) or of a whole
experiment from MLflow, and writes into ``--out``:
- ``report.csv`` and ``report.md``: per model and metric, the mean over seeds, a 95% t-interval (two or more
  seeds) and the seeds used;
- with ``--downstream accuracies.csv`` (columns ``model,accuracy``: the user's own downstream numbers),
  Pearson's r and Kendall's tau of every metric's per-model mean with them, each with a percentile bootstrap
  interval over models, like the papers' tables (``correlations.csv`` and a section of ``report.md``);
- ``score_per_model.png`` (mean and interval per model) and ``accuracy_vs_scale.png`` (SynBench's eps = 0
  accuracy curve of every model on one chart).
With ``--parent`` the files are also logged to the parent run under ``report/``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from synbench.files import write_csv_atomic
from synbench.progress import bar

METRICS = ("synbench/score", "synbench/best_eps", "rmqm/noise", "rmqm/pgd", "spectrum/rankme",
           "spectrum/alpha_req", "robustness/criterion")  # the headline ones a run may have


def sweep_runs(client, parent: str | None, experiment: str | None) -> list:
    """FINISHED job runs of a sweep (children and reused runs) or of an experiment."""
    if parent is not None:
        head = client.get_run(parent)
        children = client.search_runs([head.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=50000)
        reused = [client.get_run(v) for k, v in head.data.tags.items() if k.startswith("synbench.reused.")]
        runs = children + reused
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise SystemExit(f"synbench.report: error: no experiment named {experiment!r}")
        runs = client.search_runs([exp.experiment_id], filter_string="tags.`synbench.kind` = 'job'",
                                  max_results=50000)
    return [r for r in runs if r.info.status == "FINISHED"]


def interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t-interval of the mean; the interval is NaN with fewer than two values."""
    a = np.asarray(values, dtype=np.float64)
    mean = float(a.mean())
    if len(a) < 2:
        return mean, math.nan, math.nan
    if a.std() == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return mean, mean - half, mean + half


def correlations(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> dict:
    """Pearson's r and Kendall's tau of x with y, each with a percentile bootstrap interval over the pairs
    (resamples where a statistic is undefined, e.g. all-equal values, are left out)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant column has no correlation: NaN, said as such
        return {k: math.nan for k in ("pearson", "kendall", "pearson_lo", "pearson_hi", "kendall_lo", "kendall_hi")}
    out = {"pearson": float(stats.pearsonr(x, y)[0]), "kendall": float(stats.kendalltau(x, y)[0])}
    rng = np.random.default_rng(seed)
    boot = {"pearson": [], "kendall": []}
    for _ in bar(range(n_boot), "bootstrap", "resample"):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            continue
        boot["pearson"].append(stats.pearsonr(x[i], y[i])[0])
        boot["kendall"].append(stats.kendalltau(x[i], y[i])[0])
    for key, values in boot.items():
        lo, hi = (np.percentile(values, [50 * (1 - level), 50 * (1 + level)]) if values else (math.nan, math.nan))
        out[f"{key}_lo"], out[f"{key}_hi"] = float(lo), float(hi)
    return out


def summarise(runs) -> tuple[list[dict], dict]:
    """Rows (model, metric, mean, lo, hi, n, seeds) and the per-model means {metric: {model: mean}}."""
    values = defaultdict(lambda: defaultdict(list))
    seeds = defaultdict(set)
    for run in runs:
        model = run.data.tags.get("synbench.model", "?")
        seeds[model].add(run.data.params.get("seed", "?"))
        for metric in METRICS:
            if metric in run.data.metrics:
                values[metric][model].append(run.data.metrics[metric])
    rows, means = [], defaultdict(dict)
    for metric in METRICS:
        for model in sorted(values[metric]):
            mean, lo, hi = interval(values[metric][model])
            means[metric][model] = mean
            rows.append({"model": model, "metric": metric, "mean": mean, "ci_lo": lo, "ci_hi": hi,
                         "n": len(values[metric][model]), "seeds": " ".join(sorted(seeds[model]))})
    return rows, means


def write_csv(path: Path, rows: list[dict]) -> Path:
    return write_csv_atomic(path, list(rows[0]), [list(r.values()) for r in rows])


def markdown(rows: list[dict], corr: list[dict], source: str) -> str:
    fmt = lambda v: "" if isinstance(v, float) and math.isnan(v) else (f"{v:.4f}" if isinstance(v, float) else v)  # noqa: E731
    lines = [f"# SynBench report: {source}", "", "| model | metric | mean | 95% CI | seeds |", "|---|---|---:|---|---|"]
    for r in rows:
        ci = f"[{fmt(r['ci_lo'])}, {fmt(r['ci_hi'])}]" if not math.isnan(r["ci_lo"]) else "(one seed)"
        lines.append(f"| {r['model']} | {r['metric']} | {fmt(r['mean'])} | {ci} | {r['seeds']} |")
    if corr:
        lines += ["", "## Correlation with downstream accuracy (per-model means; bootstrap 95% CI over models)", "",
                  "| metric | models | Pearson r | CI | Kendall tau | CI |", "|---|---:|---:|---|---:|---|"]
        for c in corr:
            lines.append(f"| {c['metric']} | {c['models']} | {fmt(c['pearson'])} | [{fmt(c['pearson_lo'])}, "
                         f"{fmt(c['pearson_hi'])}] | {fmt(c['kendall'])} | [{fmt(c['kendall_lo'])}, "
                         f"{fmt(c['kendall_hi'])}] |")
    return "\n".join(lines) + "\n"


def plots(client, runs, rows: list[dict], out: Path) -> list[Path]:
    from synbench.tracking.local import figure

    files = []
    score = [r for r in rows if r["metric"] == "synbench/score"]
    if score:
        with figure(out / "score_per_model.png", (6.4, 4.0)) as (_, ax):
            err = [[r["mean"] - r["ci_lo"] if not math.isnan(r["ci_lo"]) else 0 for r in score],
                   [r["ci_hi"] - r["mean"] if not math.isnan(r["ci_hi"]) else 0 for r in score]]
            ax.bar([r["model"] for r in score], [r["mean"] for r in score], yerr=err, capsize=4)
            ax.set(title="SynBench score per model (mean, 95% CI over seeds)", ylabel="SynBench (a_t = 0.7)")
        files.append(out / "score_per_model.png")
    curves = {}
    for run in runs:
        model = run.data.tags.get("synbench.model", "?")
        if model in curves:
            continue
        acc = sorted(client.get_metric_history(run.info.run_id, "synbench/accuracy/eps_0.00"), key=lambda m: m.step)
        grid = sorted(client.get_metric_history(run.info.run_id, "synbench/grid/scale"), key=lambda m: m.step)
        if acc and len(acc) == len(grid):
            curves[model] = ([g.value for g in grid], [a.value for a in acc])
    if curves:
        with figure(out / "accuracy_vs_scale.png") as (_, ax):
            for model, (x, y) in curves.items():
                ax.plot(x, y, label=model)
            ax.set(title="SynBench probe accuracy vs scale (eps = 0, one seed per model)", xlabel="scale s",
                   ylabel="test accuracy")
            ax.legend(fontsize=7)
        files.append(out / "accuracy_vs_scale.png")
    return files


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synbench.report", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--parent", help="the sweep's parent run id (printed by the sweep, tag synbench.kind=sweep)")
    src.add_argument("--experiment", help="every FINISHED job run of this MLflow experiment")
    p.add_argument("--tracking-uri", default=f"sqlite:///{Path('outputs/mlflow/mlflow.db').resolve()}")
    p.add_argument("--downstream", type=Path, help="CSV with columns model,accuracy")
    p.add_argument("--out", type=Path, default=Path("outputs/reports"))
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the correlations")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    runs = sweep_runs(client, args.parent, args.experiment)
    if not runs:
        raise SystemExit(f"synbench.report: error: no FINISHED job runs in {args.parent or args.experiment!r}")
    out = args.out / (args.parent or args.experiment)
    out.mkdir(parents=True, exist_ok=True)
    rows, means = summarise(runs)
    corr = []
    if args.downstream is not None:
        with args.downstream.open() as f:
            downstream = {r["model"]: float(r["accuracy"]) for r in csv.DictReader(f)}
        for metric, per_model in means.items():
            models = sorted(set(per_model) & set(downstream))
            if len(models) >= 3:
                x = np.array([per_model[m] for m in models])
                y = np.array([downstream[m] for m in models])
                corr.append({"metric": metric, "models": len(models),
                             **correlations(x, y, args.bootstrap, args.seed)})
    files = [write_csv(out / "report.csv", rows)]
    if corr:
        files.append(write_csv(out / "correlations.csv", corr))
    (out / "report.md").write_text(markdown(rows, corr, args.parent or args.experiment))
    files.append(out / "report.md")
    files += plots(client, runs, rows, out)
    if args.parent:
        for f in files:
            client.log_artifact(args.parent, str(f), "report")
    print(f"report of {len(runs)} runs: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

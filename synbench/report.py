"""A sweep as tables people can read: ``python -m synbench.report --parent RUN_ID`` (or ``--experiment NAME``).

Pulls the FINISHED job runs of a sweep (the parent's children plus the runs it reused on resume) or of a whole
experiment from MLflow, and writes into ``--out``:
- ``report.csv`` and ``report.md``: per model and metric (the label-free ones and the downstream truth), the
  mean over seeds, a 95% t-interval over seeds kept inside the metric's own range (``ci_note`` says when it was
  clipped, or that one seed has none) and the seeds used;
- against the truth: the runs' own ``downstream/accuracy`` and ``downstream/robust_accuracy/eps_*`` (one truth
  column per ``synbench.dataset``, named ``<dataset>: <metric>``) and, with ``--downstream accuracies.csv``
  (columns ``model,accuracy``), one more (``csv: accuracy``). Pearson's r and Kendall's tau of every label-free
  metric's per-model mean with every truth column, each with a percentile bootstrap interval over models
  (``correlations.csv``, a section of ``report.md`` and one ``scatter/<metric>__<truth>.png`` per pair); a
  pair with fewer than 3 models having both numbers is a note on stderr and in ``report.md``;
- ``score_per_model.png`` (mean and interval per model) and ``accuracy_vs_scale.png`` (SynBench's eps = 0
  accuracy curve of every model on one chart).
With ``--parent`` the files are also logged to the parent run under ``report/`` (plots of pairs under
``report/scatter/``). Bad inputs (an unknown run or experiment, a missing store, a bad CSV) stop with one line
before any file is written; a missing SQLite store is never created.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import math
import os
import re
import sqlite3
import sys
from collections import defaultdict
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from scipy import stats

from synbench.files import write_csv_atomic
from synbench.progress import bar

# the headline label-free metrics a run may have: exact names and patterns (a `*` stays inside one segment);
# `*/data/*` is the same metric on the job's real images (never their labels), beside the mixture's
METRICS = ("synbench/score", "synbench/best_eps", "rmqm/noise", "rmqm/pgd", "rmqm/data/noise", "rmqm/data/pgd",
           "spectrum/rankme", "spectrum/alpha_req", "spectrum/data/rankme", "spectrum/data/alpha_req",
           "robustness/*/criterion/eps_*", "robustness/*/bound_data/eps_*",
           "robustness/*/criterion/max_eps", "robustness/*/bound_data/max_eps")  # max_eps: runs before per-radius
# the downstream truth a job logs on a real labelled dataset; anything else under downstream/ is a diagnostic
TRUTH = ("downstream/accuracy", "downstream/robust_accuracy/eps_*")
CSV_TRUTH = "csv: accuracy"  # the truth column of --downstream
MIN_MODELS = 3  # fewer points than this have no correlation worth a number
INF = math.inf
# each metric's own range: an interval over seeds is clipped to it (first match wins; others are unbounded)
RANGES = (("synbench/score", (0.0, 1.0)), ("synbench/best_eps", (0.0, 1.0)),
          ("robustness/*/criterion/max_eps", (0.0, 1.0)), ("robustness/*/bound_data/max_eps", (0.0, INF)),
          ("robustness/*/criterion/eps_*", (0.0, 1.0)), ("robustness/*/bound_data/eps_*", (0.0, INF)),
          ("spectrum/rankme", (1.0, INF)), ("spectrum/data/rankme", (1.0, INF)), ("rmqm/noise", (0.0, INF)),
          ("rmqm/pgd", (0.0, INF)), ("rmqm/data/noise", (0.0, INF)), ("rmqm/data/pgd", (0.0, INF)),
          ("downstream/accuracy", (0.0, 1.0)), ("downstream/robust_accuracy/eps_*", (0.0, 1.0)))
REPORT_COLUMNS = ("model", "metric", "mean", "ci_lo", "ci_hi", "ci_note", "n", "seeds")
CORR_COLUMNS = ("metric", "truth", "models", "pearson", "pearson_lo", "pearson_hi", "kendall", "kendall_lo",
                "kendall_hi", "scatter")
ERROR, NOTE = "synbench.report: error: ", "synbench.report: note: "


def _match(name: str, pattern: str) -> bool:
    """fnmatch where ``*`` does not cross a ``/``: ``robustness/*/criterion/max_eps`` is one variant deep."""
    return fnmatchcase(name, pattern) and name.count("/") == pattern.count("/")


def label_free(name: str) -> bool:
    return not name.startswith("downstream/") and any(_match(name, p) for p in METRICS)


def metric_of(name: str) -> str:
    """The logged metric behind a report name: ``synbench/score [lowfreq]`` -> ``synbench/score``."""
    return re.sub(r" \[[^]]*\]$", "", name)


def is_truth(name: str) -> bool:
    return any(_match(name, p) for p in TRUTH)


def _natural(text: str) -> list:
    """Numbers compare as numbers, so eps_0.05 < eps_0.1 < eps_2 < eps_10."""
    return [(0, float(t), "") if re.fullmatch(r"\d+(\.\d*)?", t) else (1, 0.0, t)
            for t in re.split(r"(\d+(?:\.\d*)?)", text) if t]


def rank(name: str) -> tuple:
    """Label-free metrics in METRICS' order, then the truth columns by dataset (accuracy first, radii ascending),
    the user's CSV last."""
    dataset, _, metric = name.rpartition(": ")
    patterns = TRUTH if dataset else METRICS
    first = next((i for i, p in enumerate(patterns) if _match(metric_of(metric), p)), len(patterns))
    return bool(dataset), name == CSV_TRUTH, dataset, first, _natural(metric)


def value_range(name: str) -> tuple[float, float]:
    metric = metric_of(name.rpartition(": ")[2])
    return next((r for p, r in RANGES if _match(metric, p)), (-INF, INF))


def span(bounds: tuple[float, float]) -> str:
    lo, hi = (f"{b:g}" for b in bounds)
    return f"{'(' if lo == '-inf' else '['}{lo}, {hi}{')' if hi == 'inf' else ']'}"


def read_downstream(path: Path) -> tuple[dict[str, float], dict[str, int]]:
    """The user's own accuracies (``model,accuracy``) and the line of each model; a bad row is refused by its
    line, never skipped, since a silently dropped model changes every correlation."""
    where = f"--downstream {str(path)!r}"
    if not path.is_file():
        raise SystemExit(f"{ERROR}{where}: no such file; pass a CSV with columns model,accuracy")
    out, lines = {}, {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("model", "accuracy") if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{ERROR}{where} has no column {' or '.join(missing)} (its header: "
                             f"{','.join(reader.fieldnames or [])!r}); need columns model,accuracy")
        for row in reader:
            model, text = (row["model"] or "").strip(), (row["accuracy"] or "").strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not model:
                raise SystemExit(f"{ERROR}{where} line {reader.line_num}: empty model name")
            if not math.isfinite(value):
                raise SystemExit(f"{ERROR}{where} line {reader.line_num} (model {model!r}): accuracy {text!r} "
                                 "is not a finite number, e.g. 0.71")
            if model in out:
                raise SystemExit(f"{ERROR}{where} line {reader.line_num}: model {model!r} again (first on line "
                                 f"{lines[model]}); give each model one accuracy")
            out[model], lines[model] = value, reader.line_num
    return out, lines


def unmatched(path: Path, lines: dict[str, int], models: set[str]) -> list[str]:
    """A note per CSV row whose model no run has (a typo lowers the count behind every correlation), with the
    models of the runs it could have meant."""
    notes = []
    for model, line in sorted(lines.items(), key=lambda item: item[1]):
        if model not in models:
            close = difflib.get_close_matches(model, sorted(models), n=3, cutoff=0.5)
            notes.append(f"--downstream {str(path)!r} line {line}: model {model!r} matches no run, so it is left out"
                         + (f"; did you mean {' or '.join(map(repr, close))}?" if close else
                            f" (the runs' models: {', '.join(sorted(models)) or 'none'})"))
    return notes


def check_store(uri: str) -> None:
    """A read-only command must never create a store, and MlflowClient makes a missing SQLite file (or a
    file store's folder) on the spot: so a local store is checked with the stdlib before any client exists."""
    where = f"--tracking-uri {uri!r}"
    valid = "pass the tracking.uri the jobs logged to (sqlite:///path/to/mlflow.db or http://host:port)"
    if uri.startswith("sqlite:"):
        path = uri.partition("?")[0][len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if path in ("", ":memory:"):
            raise SystemExit(f"{ERROR}{where} names no database file; {valid}")
        if not Path(path).is_file():
            raise SystemExit(f"{ERROR}{where}: no MLflow store there ({Path(path).resolve()} does not exist); {valid}")
        try:
            ro = f"{Path(path).resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(ro, uri=True)) as db:
                tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
        except sqlite3.Error as e:
            raise SystemExit(f"{ERROR}{where}: not a readable SQLite database ({e}); {valid}") from None
        if not {"experiments", "runs", "alembic_version"} <= tables:
            raise SystemExit(f"{ERROR}{where}: {path} is not an MLflow store (no experiments/runs tables); {valid}")
    elif "://" not in uri or uri.startswith("file:"):
        folder = Path(urlparse(uri).path if uri.startswith("file:") else uri)
        if not folder.is_dir():
            raise SystemExit(f"{ERROR}{where}: no MLflow store there ({folder.resolve()} is not a folder); {valid}")
        if not any(folder.glob("*/meta.yaml")):  # a file store holds one folder per experiment, each a meta.yaml
            raise SystemExit(f"{ERROR}{where}: not an MLflow store ({folder.resolve()} is a folder without MLflow "
                             f"experiments); {valid}")
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            raise SystemExit(f"{ERROR}{where} is an MLflow file store, which this MLflow reads only with "
                             f"MLFLOW_ALLOW_FILE_STORE=true set (or after `mlflow migrate-filestore` to SQLite)")


def connect(uri: str):
    """An MlflowClient on an existing, reachable store (its first call is the check), else one line."""
    check_store(uri)
    from mlflow.tracking import MlflowClient

    from synbench.encoders.base import first_line
    from synbench.tracking.mlflow_run import fast_fail

    with fast_fail(10):
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - whatever the backend raises, the user gets one line
            raise SystemExit(f"{ERROR}--tracking-uri {uri!r}: cannot read the MLflow store: {first_line(e)}") from None
    return client


def sweep_parents(client, limit: int = 5) -> list[str]:
    """The latest sweep parents of the store, to show what a valid --parent looks like."""
    try:
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, "tags.`synbench.kind` = 'sweep'", max_results=limit,
                                  order_by=["attributes.start_time DESC"]) if ids else []
    except Exception:  # noqa: BLE001 - only a hint for an error message
        return []
    return [r.info.run_id for r in runs]


def sweep_runs(client, parent: str | None, experiment: str | None) -> list:
    """FINISHED job runs of a sweep (children and reused runs) or of an experiment."""
    from mlflow.exceptions import MlflowException

    if parent is not None:
        try:
            head = client.get_run(parent)
        except MlflowException:
            known = sweep_parents(client)
            raise SystemExit(f"{ERROR}--parent {parent!r}: no such run in this store; "
                             + (f"its latest sweep parents: {', '.join(known)}" if known
                                else "it has no sweep parent runs (tag synbench.kind=sweep)")) from None
        kind = head.data.tags.get("synbench.kind")
        if kind != "sweep":
            up = head.data.tags.get("mlflow.parentRunId")
            raise SystemExit(f"{ERROR}--parent {parent!r} is a {kind or 'non-synbench'} run, not a sweep parent; "
                             + (f"its sweep's parent is {up}: --parent {up}" if up else
                                "it belongs to no sweep: --experiment NAME reports every job run of an experiment"))
        children = client.search_runs([head.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=50000)
        reused = [client.get_run(v) for k, v in head.data.tags.items() if k.startswith("synbench.reused.")]
        runs = children + reused
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise SystemExit(f"{ERROR}no experiment named {experiment!r}; this store has: {', '.join(names) or 'none'}")
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


def bounded_interval(values: list[float], bounds: tuple[float, float],
                     level: float = 0.95) -> tuple[float, float, float, str]:
    """``interval`` kept inside the metric's own range (the t-interval of an accuracy near 1 passes 1), with a
    note saying that it was clipped, or why there is none."""
    mean, lo, hi = interval(values, level)
    if len(values) < 2:
        return mean, lo, hi, "one seed: no interval"
    clipped = lo < bounds[0] or hi > bounds[1]
    return mean, max(lo, bounds[0]), min(hi, bounds[1]), f"clipped to {span(bounds)}" if clipped else ""


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


def vacuous(name: str, metrics: dict) -> bool:
    """A robustness number at a radius where even the raw-input Bayes classifier certifies under 1% (the run's
    ``robustness/reference/vacuous/eps_<r>``): every encoder is ~0 there, so it ranks nothing."""
    radius = re.fullmatch(r"robustness/[^/]+/[^/]+/(eps_[^/]+)", name)
    return bool(radius) and metrics.get(f"robustness/reference/vacuous/{radius.group(1)}") == 1.0


def reported(name: str, metrics: dict) -> bool:
    """A label-free number the report keeps: not at a vacuous radius, and ``max_eps`` (the last radius) only
    from runs older than the per-radius numbers, which repeat it."""
    if name.endswith("/max_eps") and any(k.startswith(name[:-len("max_eps")] + "eps_") for k in metrics):
        return False
    return label_free(name) and not vacuous(name, metrics)


def vacuous_notes(runs) -> list[str]:
    names = sorted({n for r in runs for n in r.data.metrics if label_free(n) and vacuous(n, r.data.metrics)})
    return [f"{', '.join(names)}: at a vacuous radius (the raw-input reference certifies under 1%), not reported"] \
        if names else []


def collect(runs) -> dict:
    """{name: {model: {seed: [values]}}} of every label-free metric and truth column (``<dataset>: <metric>``,
    since one sweep may score the same models on several datasets). A label-free metric that the sweep computed
    under several mixture directions is one name per direction (``synbench/score [lowfreq]``): those are
    different scores, never seeds of one."""
    directions = defaultdict(set)
    for run in runs:
        for name in run.data.metrics:
            if reported(name, run.data.metrics):
                directions[name].add(run.data.tags.get("synbench.direction", "?"))
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        tags = run.data.tags
        model, seed = tags.get("synbench.model", "?"), run.data.params.get("seed", "?")
        for name, value in run.data.metrics.items():
            if reported(name, run.data.metrics):
                key = name if len(directions[name]) == 1 else f"{name} [{tags.get('synbench.direction', '?')}]"
                values[key][model][seed].append(value)
            elif is_truth(name):
                values[f"{tags.get('synbench.dataset', '?')}: {name}"][model][seed].append(value)
    return values


def summarise(runs) -> tuple[list[dict], dict, dict]:
    """Rows (model, metric, mean, ci_lo, ci_hi, ci_note, n, seeds) and the per-model means of the label-free
    metrics and of the truth columns, {name: {model: mean}}. A seed's runs are averaged first (its label-free
    numbers repeat in the run of every dataset), so the interval is over seeds."""
    values = collect(runs)
    rows, means, truth = [], defaultdict(dict), defaultdict(dict)
    for name in sorted(values, key=rank):
        for model in sorted(values[name]):
            per_seed = values[name][model]
            mean, lo, hi, note = bounded_interval([float(np.mean(v)) for v in per_seed.values()], value_range(name))
            (truth if ": " in name else means)[name][model] = mean
            rows.append({"model": model, "metric": name, "mean": mean, "ci_lo": lo, "ci_hi": hi, "ci_note": note,
                         "n": len(per_seed), "seeds": " ".join(sorted(per_seed, key=_natural))})
    return rows, means, truth


def paired(a: dict, b: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The models with a finite number in both, and those numbers."""
    models = sorted(m for m in set(a) & set(b) if math.isfinite(a[m]) and math.isfinite(b[m]))
    return models, np.array([a[m] for m in models]), np.array([b[m] for m in models])


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def unique(stem: str, used: set) -> str:
    """Two pairs may differ only where safe_name flattened them: the second gets -2, and so on."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name


def too_few(metrics: list[str], column: str, n: int) -> str:
    have = "no model has" if n == 0 else f"only {n} model{'s have' if n > 1 else ' has'}"
    return f"cannot correlate {', '.join(metrics)} with {column!r}: {have} both (need >= {MIN_MODELS})"


def degenerate(name: str, values: np.ndarray) -> str | None:
    """Why ``name`` cannot be correlated over these models, or None: it is constant, or more than half the
    models, and at least 3, share one value (a score floored at 0 by a short grid, a vacuous radius's 0
    accuracy): its ranking is then mostly ties, and a correlation would read them as a measurement. Two
    models tied is just a tie."""
    vals, counts = np.unique(values, return_counts=True)
    v, k, n = float(vals[counts.argmax()]), int(counts.max()), len(values)
    if k == n:
        return f"{name!r} is constant over the sweep ({v:.4g} for all {n} models)"
    if 2 * k > n and k >= 3:
        lo, hi = value_range(name)
        kind = "floored" if v == lo else "at its ceiling" if v == hi else "mostly one value"
        return f"{name!r} is {v:.4g} for {k} of {n} models ({kind})"
    return None


def stuck_note(reason: str, others: list[str]) -> str:
    """One note per degenerate column, whatever the number of columns it would have been paired with."""
    which = repr(others[0]) if len(others) == 1 else \
        f"any of {len(others)} columns ({', '.join(map(repr, others[:2]))}, ...)"
    hint = "" if "constant" in reason else "; read its runs for why (e.g. synbench/floored, a vacuous radius)"
    return f"{reason}: not correlated with {which}{hint}"


def correlate(means: dict, truth: dict, n_boot: int, seed: int) -> tuple[list[dict], list[str]]:
    """Every label-free metric against every truth column: the rows of correlations.csv, and one note per
    truth column and model count that is too small to correlate (so a skipped pair is never silent)."""
    if truth and not means:
        return [], [f"no label-free metric in the runs to correlate with {', '.join(map(repr, truth))}"]
    rows, short, used, notes, stuck = [], defaultdict(list), set(), [], {}
    for column in sorted(truth, key=rank):
        for metric in sorted(means, key=rank):
            models, x, y = paired(means[metric], truth[column])
            if len(models) < MIN_MODELS:
                short[(column, len(models))].append(metric)
                continue
            why = degenerate(metric, x) or degenerate(column, y)
            if why:  # no correlation to speak of: said (once per column), never a blank row or a number
                stuck.setdefault(why, []).append(column if why.startswith(repr(metric)) else metric)
                continue
            name = unique(f"{safe_name(metric)}__{safe_name(column)}", used)
            rows.append({"metric": metric, "truth": column, "models": len(models),
                         **correlations(x, y, n_boot, seed), "scatter": f"scatter/{name}.png"})
    notes += [stuck_note(why, others) for why, others in stuck.items()]
    for (column, n), metrics in short.items():
        notes.append(too_few(metrics, column, n))
    return rows, notes


def scatter_plots(corr: list[dict], means: dict, truth: dict, out: Path) -> list[Path]:
    """One chart per correlated pair, a labelled point per model: a correlation of 4 points wants looking at."""
    from synbench.tracking.local import figure

    for old in (out / "scatter").glob("*.png"):  # a pair of an earlier report may be gone
        old.unlink()
    files = []
    for c in corr:
        models, x, y = paired(means[c["metric"]], truth[c["truth"]])
        with figure(out / c["scatter"], (5.6, 4.4)) as (_, ax):
            ax.scatter(x, y)
            for m, xi, yi in zip(models, x, y):
                ax.annotate(m, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
            ax.set(title=f"Pearson r = {c['pearson']:.3f}, Kendall tau = {c['kendall']:.3f} ({len(models)} models)",
                   xlabel=f"{c['metric']} (label-free, mean over seeds)",
                   ylabel=c["truth"] if c["truth"] == CSV_TRUTH else f"{c['truth']} (mean over seeds)")
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
        files.append(out / c["scatter"])
    return files


def write_csv(path: Path, rows: list[dict], columns) -> Path:
    return write_csv_atomic(path, list(columns), [[r[c] for c in columns] for r in rows])


def markdown(rows: list[dict], corr: list[dict], notes: list[str], source: str, has_truth: bool) -> str:
    fmt = lambda v: "" if isinstance(v, float) and math.isnan(v) else (f"{v:.4f}" if isinstance(v, float) else v)  # noqa: E731
    lines = [f"# SynBench report: {source}", "", "| model | metric | mean | 95% CI | CI note | seeds |",
             "|---|---|---:|---|---|---|"]
    for r in rows:
        ci = f"[{fmt(r['ci_lo'])}, {fmt(r['ci_hi'])}]" if not math.isnan(r["ci_lo"]) else ""
        lines.append(f"| {r['model']} | {r['metric']} | {fmt(r['mean'])} | {ci} | {r['ci_note']} | {r['seeds']} |")
    if has_truth:
        lines += ["", "## Correlation with the truth (per-model means; bootstrap 95% CI over models)", "",
                  "| metric | truth | models | Pearson r | CI | Kendall tau | CI | plot |",
                  "|---|---|---:|---:|---|---:|---|---|"]
        for c in corr:
            lines.append(f"| {c['metric']} | {c['truth']} | {c['models']} | {fmt(c['pearson'])} | "
                         f"[{fmt(c['pearson_lo'])}, {fmt(c['pearson_hi'])}] | {fmt(c['kendall'])} | "
                         f"[{fmt(c['kendall_lo'])}, {fmt(c['kendall_hi'])}] | [scatter]({c['scatter']}) |")
        lines += [""] + [f"- note: {n}" for n in notes] if notes else []
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


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m synbench.report", description=__doc__.split("\n\n")[0],
                                epilog="Truth columns: the runs' downstream/accuracy and downstream/robust_accuracy/"
                                       "eps_* per synbench.dataset tag, plus 'csv: accuracy' from --downstream.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--parent", help="the sweep's parent run id (printed by the sweep, tag synbench.kind=sweep)")
    src.add_argument("--experiment", help="every FINISHED job run of this MLflow experiment")
    p.add_argument("--tracking-uri", default=f"sqlite:///{Path('outputs/mlflow/mlflow.db').resolve()}",
                   help="an existing MLflow store (never created): sqlite:///path/to/mlflow.db or http://host:port")
    p.add_argument("--downstream", type=Path,
                   help="CSV with columns model,accuracy: your own downstream numbers, one more truth column")
    p.add_argument("--out", type=Path, default=Path("outputs/reports"), help="files go to OUT/<parent or experiment>/")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the correlations (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = p.parse_args(argv)
    if args.bootstrap < 1:
        raise SystemExit(f"{ERROR}--bootstrap {args.bootstrap}: need at least 1 resample (default 2000)")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    downstream, lines = read_downstream(args.downstream) if args.downstream is not None else (None, {})
    client = connect(args.tracking_uri)
    runs = sweep_runs(client, args.parent, args.experiment)
    if not runs:
        raise SystemExit(f"{ERROR}no FINISHED job runs in {args.parent or args.experiment!r}")
    rows, means, truth = summarise(runs)
    notes = unmatched(args.downstream, lines, {r.data.tags.get("synbench.model", "?") for r in runs})
    notes += vacuous_notes(runs)
    if downstream is not None:
        truth[CSV_TRUTH] = downstream
    corr, pair_notes = correlate(means, truth, args.bootstrap, args.seed)
    notes += pair_notes
    for note in notes:
        print(f"{NOTE}{note}", file=sys.stderr)
    out = args.out / (args.parent or args.experiment)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(out / "report.csv", rows, REPORT_COLUMNS)]
    if truth:
        files.append(write_csv(out / "correlations.csv", corr, CORR_COLUMNS))
    (out / "report.md").write_text(markdown(rows, corr, notes, args.parent or args.experiment, bool(truth)))
    files.append(out / "report.md")
    files += plots(client, runs, rows, out)
    pairs = scatter_plots(corr, means, truth, out)
    if args.parent:
        for f in files:
            client.log_artifact(args.parent, str(f), "report")
        for f in pairs:
            client.log_artifact(args.parent, str(f), "report/scatter")
    print(f"report of {len(runs)} runs ({len(corr)} correlated pairs): {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

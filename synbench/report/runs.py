"""Reading a sweep back from MLflow: the store is checked before any client exists (a read-only command must
never create one), then the FINISHED job runs are gathered into per-model means over seeds. A seed's runs are
averaged first, since its label-free numbers repeat in the run of every dataset."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from synbench.report.messages import ERROR
from synbench.report.names import _natural, is_truth, label_free, rank, reads_data, reported, vacuous, value_range
from synbench.report.stats import bounded_interval


def check_store(uri: str) -> None:
    """A local store checked with the stdlib: MlflowClient makes a missing SQLite file (or a file store's
    folder) on the spot."""
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


def vacuous_notes(runs) -> list[str]:
    names = sorted({n for r in runs for n in r.data.metrics if label_free(n) and vacuous(n, r.data.metrics)})
    return [f"{', '.join(names)}: at a vacuous radius (the raw-input reference certifies under 1%), not reported"] \
        if names else []


def probe_notes(runs) -> list[str]:
    """Most runs' downstream probe stopped at its ``max_iter``: their accuracy (the truth) is that of nearly
    converged heads, said once for the report."""
    short = [r for r in runs if r.data.metrics.get("downstream/probe_at_max_iter") == 1.0]
    with_probe = [r for r in runs if "downstream/probe_at_max_iter" in r.data.metrics]
    if with_probe and 2 * len(short) > len(with_probe):
        return [f"the downstream probe's refit stopped at metrics.downstream.probe.max_iter in {len(short)} of "
                f"{len(with_probe)} runs (downstream/probe_at_max_iter): their accuracy is a nearly converged "
                f"head's; raise max_iter to converge them"]
    return []


def where(name: str, tags: dict) -> str:
    """What tells two runs' ``name`` apart as scores: the dataset it read, or the mixture's direction."""
    return tags.get("synbench.dataset" if reads_data(name) else "synbench.direction", "?")


def collect(runs) -> dict:
    """{name: {model: {seed: [values]}}} of every label-free metric and truth column (``<dataset>: <metric>``,
    since one sweep may score the same models on several datasets). A label-free metric that the sweep computed
    under several mixture directions is one name per direction (``synbench/score [lowfreq]``), and one that
    reads the dataset, computed on several, one name per dataset (``logme/logme [mnist]``): those are different
    scores, never seeds of one."""
    seen = defaultdict(set)  # the directions (mixture scores) or datasets (data metrics) a name occurs under
    for run in runs:
        for name in run.data.metrics:
            if reported(name, run.data.metrics):
                seen[name].add(where(name, run.data.tags))
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        tags = run.data.tags
        model, seed = tags.get("synbench.model", "?"), run.data.params.get("seed", "?")
        for name, value in run.data.metrics.items():
            if reported(name, run.data.metrics):
                key = name if len(seen[name]) == 1 else f"{name} [{where(name, tags)}]"
                values[key][model][seed].append(value)
            elif is_truth(name):
                values[f"{tags.get('synbench.dataset', '?')}: {name}"][model][seed].append(value)
    return values


def summarise(runs) -> tuple[list[dict], dict, dict]:
    """Rows (model, metric, mean, ci_lo, ci_hi, ci_note, n, seeds) and the per-model means of the label-free
    metrics and of the truth columns, {name: {model: mean}}; the interval is over seeds."""
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

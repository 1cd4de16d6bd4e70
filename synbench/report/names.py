"""Which logged numbers the report reads, and how it orders and bounds them: the label-free scores, the
downstream truth (everything else under ``downstream/`` is a diagnostic, never truth), and each metric's own
range, which keeps an interval over seeds from claiming an accuracy above 1."""

from __future__ import annotations

import math
import re
from fnmatch import fnmatchcase

# the headline label-free metrics a run may have: exact names and patterns (a `*` stays inside one segment);
# `*/data/*` is the same metric on the job's real images (never their labels), beside the mixture's
METRICS = ("synbench/score", "synbench/best_eps", "rmqm/noise", "rmqm/pgd", "rmqm/data/noise", "rmqm/data/pgd",
           "spectrum/rankme", "spectrum/alpha_req", "spectrum/data/rankme", "spectrum/data/alpha_req",
           "robustness/*/criterion/eps_*", "robustness/*/bound_data/eps_*",
           "robustness/*/criterion/max_eps", "robustness/*/bound_data/max_eps",  # max_eps: runs before per-radius
           "logme/logme")  # LogME reads labels: a labelled yardstick beside the label-free scores, never truth
# metrics that read the job's dataset, not the mixture: a sweep that runs them on several datasets gets one name
# per dataset (``logme/logme [fashion_mnist]``), as the mixture's scores get one per direction
DATA_METRICS = ("*/data/*", "logme/*")
# the downstream truth a job logs on a real labelled dataset; anything else under downstream/ is a diagnostic
TRUTH = ("downstream/accuracy", "downstream/robust_accuracy/eps_*")
CSV_TRUTH = "csv: accuracy"  # the truth column of --downstream
INF = math.inf
# each metric's own range: an interval over seeds is clipped to it (first match wins; others are unbounded)
RANGES = (("synbench/score", (0.0, 1.0)), ("synbench/best_eps", (0.0, 1.0)),
          ("robustness/*/criterion/max_eps", (0.0, 1.0)), ("robustness/*/bound_data/max_eps", (0.0, INF)),
          ("robustness/*/criterion/eps_*", (0.0, 1.0)), ("robustness/*/bound_data/eps_*", (0.0, INF)),
          ("spectrum/rankme", (1.0, INF)), ("spectrum/data/rankme", (1.0, INF)), ("rmqm/noise", (0.0, INF)),
          ("rmqm/pgd", (0.0, INF)), ("rmqm/data/noise", (0.0, INF)), ("rmqm/data/pgd", (0.0, INF)),
          ("downstream/accuracy", (0.0, 1.0)), ("downstream/robust_accuracy/eps_*", (0.0, 1.0)))


def _match(name: str, pattern: str) -> bool:
    """fnmatch where ``*`` does not cross a ``/``: ``robustness/*/criterion/max_eps`` is one variant deep."""
    return fnmatchcase(name, pattern) and name.count("/") == pattern.count("/")


def label_free(name: str) -> bool:
    return not name.startswith("downstream/") and any(_match(name, p) for p in METRICS)


def reads_data(name: str) -> bool:
    return any(fnmatchcase(name, p) for p in DATA_METRICS)


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

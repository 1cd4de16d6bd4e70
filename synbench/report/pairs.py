"""Which (label-free metric, truth) pairs are correlated, over which models, in which groups. A pair that is
not correlated (too few models, a column that is constant or mostly one value) is a note, never a blank row or
a number read from ties; a subset without the untrained baselines (``--untrained``) asks whether a score ranks
trained encoders, not just trained above random ones."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from synbench.progress import bar
from synbench.report.names import rank, value_range
from synbench.report.stats import correlations, holm

MIN_MODELS = 3  # fewer points than this have no correlation worth a number
ALL, TRAINED = "all", "trained"  # the subsets: every model; those not matching --untrained


def paired(a: dict, b: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The models with a finite number in both, and those numbers."""
    models = sorted(m for m in set(a) & set(b) if math.isfinite(a[m]) and math.isfinite(b[m]))
    return models, np.array([a[m] for m in models]), np.array([b[m] for m in models])


def group_codes(models: list[str], group: re.Pattern | None) -> np.ndarray:
    """Integer group of each model (0, 1, ... by first appearance): the first capture group of ``group``
    fullmatching its name; a model that does not match (or without a pattern) is a group of its own."""
    codes: dict = {}
    keys = []
    for m in models:
        match = group.fullmatch(m) if group is not None else None
        keys.append(("group", match.group(1)) if match and match.group(1) is not None else ("model", m))
    return np.array([codes.setdefault(k, len(codes)) for k in keys], dtype=np.intp)


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


def _over(subset: str) -> str:
    return "" if subset == ALL else " over the trained models"


def too_few(metrics: list[str], column: str, n: int, subset: str = ALL) -> str:
    have = "no model has" if n == 0 else f"only {n} model{'s have' if n > 1 else ' has'}"
    return f"cannot correlate {', '.join(metrics)} with {column!r}{_over(subset)}: {have} both (need >= {MIN_MODELS})"


def degenerate(name: str, values: np.ndarray, subset: str = ALL) -> str | None:
    """Why ``name`` cannot be correlated over these models, or None: it is constant, or more than half the
    models, and at least 3, share one value (a score floored at 0 by a short grid, a vacuous radius's 0
    accuracy): its ranking is then mostly ties, and a correlation would read them as a measurement. Two
    models tied is just a tie."""
    vals, counts = np.unique(values, return_counts=True)
    v, k, n = float(vals[counts.argmax()]), int(counts.max()), len(values)
    models = "models" if subset == ALL else "trained models"
    if k == n:
        return f"{name!r} is constant over the {'sweep' if subset == ALL else models} ({v:.4g} for all {n} {models})"
    if 2 * k > n and k >= 3:
        lo, hi = value_range(name)
        kind = "floored" if v == lo else "at its ceiling" if v == hi else "mostly one value"
        return f"{name!r} is {v:.4g} for {k} of {n} {models} ({kind})"
    return None


def stuck_note(reason: str, others: list[str]) -> str:
    """One note per degenerate column, whatever the number of columns it would have been paired with."""
    which = repr(others[0]) if len(others) == 1 else \
        f"any of {len(others)} columns ({', '.join(map(repr, others[:2]))}, ...)"
    hint = "" if "constant" in reason else "; read its runs for why (e.g. synbench/floored, a vacuous radius)"
    return f"{reason}: not correlated with {which}{hint}"


def correlate(means: dict, truth: dict, n_boot: int, seed: int, group: re.Pattern | None = None,
              untrained: re.Pattern | None = None) -> tuple[list[dict], list[str]]:
    """Every label-free metric against every truth column, over all models and (with ``untrained``) over the
    models that do not fullmatch it: the rows of correlations.csv, with ``p_holm`` over the whole table, and one
    note per truth column, subset and model count that is too small to correlate (a skipped pair is never
    silent)."""
    if truth and not means:
        return [], [f"no label-free metric in the runs to correlate with {', '.join(map(repr, truth))}"]
    subsets = (ALL, TRAINED) if untrained is not None else (ALL,)
    rows, short, used, notes, stuck = [], defaultdict(list), set(), [], {}
    todo = [(column, metric) for column in sorted(truth, key=rank) for metric in sorted(means, key=rank)]
    for column, metric in bar(todo, "correlations", "pair"):
        models, x, y = paired(means[metric], truth[column])
        scatter = None
        for subset in subsets:
            keep = np.array([subset == ALL or not untrained.fullmatch(m) for m in models], dtype=bool)
            kept = [m for m, k in zip(models, keep) if k]
            if len(kept) < MIN_MODELS:
                short[(column, len(kept), subset)].append(metric)
                continue
            xs, ys = x[keep], y[keep]
            why = degenerate(metric, xs, subset) or degenerate(column, ys, subset)
            if why:  # no correlation to speak of: said (once per column), never a blank row or a number
                stuck.setdefault(why, []).append(column if why.startswith(repr(metric)) else metric)
                continue
            scatter = scatter or unique(f"{safe_name(metric)}__{safe_name(column)}", used)
            rows.append({"metric": metric, "truth": column, "subset": subset, "models": len(kept),
                         **correlations(xs, ys, n_boot, seed, groups=group_codes(kept, group)),
                         "scatter": f"scatter/{scatter}.png"})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = float(adjusted)
    notes += [stuck_note(why, others) for why, others in stuck.items()]
    for (column, n, subset), metrics in short.items():
        notes.append(too_few(metrics, column, n, subset))
    return rows, notes

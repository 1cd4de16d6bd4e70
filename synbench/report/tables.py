"""The report as files people and scripts read: report.csv and correlations.csv (their columns are what other
code reads, so they only grow) and report.md, which says in words how each number was computed."""

from __future__ import annotations

import math
from pathlib import Path

from synbench.files import write_csv_atomic
from synbench.report.stats import EXACT_UP_TO, PERMUTATIONS

REPORT_COLUMNS = ("model", "metric", "mean", "ci_lo", "ci_hi", "ci_note", "n", "seeds")
CORR_COLUMNS = ("metric", "truth", "subset", "models", "groups", "pearson", "pearson_lo", "pearson_hi", "kendall",
                "kendall_lo", "kendall_hi", "kendall_groups", "p", "p_holm", "scatter")


def write_csv(path: Path, rows: list[dict], columns) -> Path:
    return write_csv_atomic(path, list(columns), [[r[c] for c in columns] for r in rows])


def _fmt(v, spec: str = ".4f") -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, spec)
    return str(v)


def _with_ci(value: float, lo: float, hi: float) -> str:
    if math.isnan(value):
        return ""
    return f"{_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}]" if not math.isnan(lo) else _fmt(value)


def method(group: str | None, untrained: str | None) -> list[str]:
    """How the correlation table was computed, in words, under its heading."""
    groups = (f"groups of models (`--group '{group}'`: a model's group is the pattern's first capture group; "
              "all members of a drawn group enter together)" if group else "models (each model its own group)")
    lines = [f"Kendall tau and Pearson r over the models' per-model means, with a percentile bootstrap 95% CI that "
             f"resamples {groups}. p: two-sided permutation test of Kendall tau between the groups' means of the "
             f"metric and of the truth (every permutation up to {EXACT_UP_TO} groups, else {PERMUTATIONS:,} "
             "random ones); p (Holm): Holm-Bonferroni adjusted over every row of the table."]
    if untrained:
        lines += ["", f"Subset `all`: every model; `trained`: the models whose name does not match "
                     f"`--untrained '{untrained}'`."]
    return lines


def _link(scatter: str) -> str:
    return f"[scatter]({scatter})" if scatter else ""  # empty: not drawn (--scatter)


def markdown(rows: list[dict], corr: list[dict], notes: list[str], source: str, has_truth: bool,
             group: str | None = None, untrained: str | None = None) -> str:
    lines = [f"# SynBench report: {source}", "", "| model | metric | mean | 95% CI | CI note | seeds |",
             "|---|---|---:|---|---|---|"]
    for r in rows:
        ci = f"[{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}]" if not math.isnan(r["ci_lo"]) else ""
        lines.append(f"| {r['model']} | {r['metric']} | {_fmt(r['mean'])} | {ci} | {r['ci_note']} | {r['seeds']} |")
    if has_truth:
        lines += ["", "## Correlation with the truth (per-model means; bootstrap 95% CI over groups of models)", "",
                  *method(group, untrained), "",
                  "| metric | truth | subset | models | groups | Kendall tau [95% CI] | p | p (Holm) | "
                  "Pearson r [95% CI] | plot |",
                  "|---|---|---|---:|---:|---|---:|---:|---|---|"]
        for c in corr:
            lines.append(f"| {c['metric']} | {c['truth']} | {c['subset']} | {c['models']} | {c['groups']} | "
                         f"{_with_ci(c['kendall'], c['kendall_lo'], c['kendall_hi'])} | {_fmt(c['p'], '.3g')} | "
                         f"{_fmt(c['p_holm'], '.3g')} | {_with_ci(c['pearson'], c['pearson_lo'], c['pearson_hi'])} | "
                         f"{_link(c['scatter'])} |")
        lines += [""] + [f"- note: {n}" for n in notes] if notes else []
    return "\n".join(lines) + "\n"

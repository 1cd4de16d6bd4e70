"""The report's charts: a correlation of a handful of models wants looking at, so every correlated pair gets a
scatter with a labelled point per model, beside the score per model and every model's SynBench accuracy curve."""

from __future__ import annotations

import math
import re
from pathlib import Path

from synbench.report.names import CSV_TRUTH
from synbench.report.pairs import paired


def scatter_plots(corr: list[dict], means: dict, truth: dict, out: Path,
                  untrained: re.Pattern | None = None) -> list[Path]:
    """One chart per correlated pair (its subsets share it), untrained models (``--untrained``) drawn apart."""
    from synbench.tracking.local import figure

    for old in (out / "scatter").glob("*.png"):  # a pair of an earlier report may be gone
        old.unlink()
    by_file: dict[str, list[dict]] = {}
    for c in corr:
        by_file.setdefault(c["scatter"], []).append(c)
    files = []
    for path, rows in by_file.items():
        c = rows[0]
        models, x, y = paired(means[c["metric"]], truth[c["truth"]])
        baseline = [untrained is not None and bool(untrained.fullmatch(m)) for m in models]
        with figure(out / path, (5.6, 4.4)) as (_, ax):
            for flag, style in ((False, {}), (True, {"marker": "x", "color": "grey", "label": "untrained"})):
                pts = [(xi, yi) for xi, yi, b in zip(x, y, baseline) if b == flag]
                if pts:
                    ax.scatter(*zip(*pts), **style)
            for m, xi, yi in zip(models, x, y):
                ax.annotate(m, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
            ax.set(title="; ".join(f"{r['subset']}: r = {r['pearson']:.3f}, tau = {r['kendall']:.3f} "
                                   f"({r['models']} models)" for r in rows),
                   xlabel=f"{c['metric']} (label-free, mean over seeds)",
                   ylabel=c["truth"] if c["truth"] == CSV_TRUTH else f"{c['truth']} (mean over seeds)")
            if any(baseline):
                ax.legend(fontsize=7)
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
        files.append(out / path)
    return files


def summary_plots(client, runs, rows: list[dict], out: Path) -> list[Path]:
    """``score_per_model.png`` (mean and interval over seeds) and ``accuracy_vs_scale.png`` (SynBench's eps = 0
    accuracy curve of every model, one seed each)."""
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

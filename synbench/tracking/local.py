"""The job folder holds every result before MLflow sees it: results.json and the plots as PNG files."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from synbench.metrics import MetricResult, Plot


def _clean(obj):
    """JSON has no NaN/inf: write them as null so the file stays valid for every reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json_atomic(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_clean(payload), f, indent=2)
    os.replace(tmp, path)
    return path


def render_plot(plot: Plot, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for s in plot.series:
        ax.plot(s.x, s.y, s.style, label=s.label, lw=1.4)
    ax.set(title=plot.title, xlabel=plot.xlabel, ylabel=plot.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_local_results(output_dir: Path, job: dict, results: list[MetricResult]) -> list[Path]:
    """Write ``results.json`` (job info + every metric's numbers) and ``plots/*.png``; return the files."""
    output_dir = Path(output_dir)
    files = [write_json_atomic(output_dir / "results.json",
                               {"job": job, "metrics": {r.name: r.to_dict() for r in results}})]
    for r in results:
        for plot in r.plots:
            files.append(render_plot(plot, output_dir / "plots" / f"{plot.name}.png"))
    return files

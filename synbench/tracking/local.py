"""The job folder holds every result before MLflow sees it: results.json and the plots as PNG files."""

from __future__ import annotations

import contextlib
from pathlib import Path

from synbench.files import write_json_atomic
from synbench.metrics import MetricResult, Plot


@contextlib.contextmanager
def figure(path: Path, size: tuple[float, float] = (6.4, 4.4)):
    """One matplotlib axes (headless Agg backend), saved to ``path`` and closed on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=110)
    try:
        yield fig, ax
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)


def render_plot(plot: Plot, path: Path) -> Path:
    with figure(path) as (_, ax):
        for s in plot.series:
            ax.plot(s.x, s.y, s.style, label=s.label, lw=1.4)
        ax.set(title=plot.title, xlabel=plot.xlabel, ylabel=plot.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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

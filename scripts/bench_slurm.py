#!/usr/bin/env python
"""Benchmark of what a job costs under Slurm beyond its own work, against the joblib launcher on one machine.

    python scripts/bench_slurm.py                        # 8 tiny jobs, 2 at a time, each launcher twice
    python scripts/bench_slurm.py --jobs 8 --parallel 2 --repeats 3
    python scripts/bench_slurm.py --cluster /tmp/slurm   # a cluster already started (scripts/slurm_cluster)

The same sweep (``seed=0..jobs-1`` of a tiny job: test_vit on a 64+64-image mixture) runs with
``hydra/launcher=joblib`` (``n_jobs=parallel``) and with ``hydra/launcher=slurm`` on the one-node test cluster
(``array_parallelism=parallel``, one CPU per job), each into a fresh MLflow experiment of a local SQLite store,
with the embedding cache off. Without ``--cluster`` it starts a cluster under a temporary folder and stops it at
the end (as root; ``scripts/slurm_cluster`` installs Debian's packages where they are missing).

Per launcher it prints the sweep's wall time (command start to exit, submit to FINISHED), the mean time of a
job's own MLflow run (start to end), how long after the command started the first run began, and the overhead
per job: the wall time the sweep took per job slot (wall x parallel / jobs) beyond the job's own run. The
medians of the repeats are shown; each launcher's repeats alternate with the other's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["mixture.scales=[0.5,1.5,2.5,3.5]", "mixture.n_train=64", "mixture.n_test=64", "mixture.chunk_size=32",
        "epsilon.grid=[0.0,0.5]", "embed.batch_size=64", "progress=false", "cache.enabled=false"]
# the launchers, on this machine's one node: the same number of jobs at once
LAUNCHERS = {
    "joblib": lambda parallel: ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={parallel}"],
    "slurm": lambda parallel: ["hydra/launcher=slurm", "hydra.launcher.partition=debug",
                               "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
                               "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10",
                               f"hydra.launcher.array_parallelism={parallel}"],
}


def one_sweep(launcher: str, jobs: int, parallel: int, outputs: Path, experiment: str, env: dict) -> dict:
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, "-m", "synbench", "--multirun", f"paths.outputs={outputs}", *LAUNCHERS[launcher](parallel),
           *TINY, f"tracking.experiment={experiment}", "seed=" + ",".join(map(str, range(jobs)))]
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"bench_slurm: the {launcher} sweep failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{outputs}/mlflow/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`synbench.kind` = 'job'")
    if len(runs) != jobs or any(r.info.status != "FINISHED" for r in runs):
        raise SystemExit(f"bench_slurm: the {launcher} sweep left {len(runs)} job runs, not {jobs} FINISHED")
    run_s = statistics.mean((r.info.end_time - r.info.start_time) / 1000 for r in runs)
    first = min(r.info.start_time for r in runs) / 1000 - t0
    return {"wall": wall, "run": run_s, "first": first, "overhead": wall * parallel / jobs - run_s}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2, help="jobs at once, under either launcher")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cluster", type=Path, help="a running cluster's folder (default: start one, stop it after)")
    args = ap.parse_args(argv)
    for name, value in (("--jobs", args.jobs), ("--parallel", args.parallel), ("--repeats", args.repeats)):
        if value < 1:
            raise SystemExit(f"bench_slurm: {name}={value} must be >= 1")
    cluster = args.cluster or Path(tempfile.mkdtemp(prefix="synbench-bench-slurm-"))
    script = str(ROOT / "scripts" / "slurm_cluster")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SLURM_CONF": str(cluster / "etc" / "slurm.conf")}
    if not args.cluster:
        subprocess.run([script, "start", str(cluster)], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="synbench-bench-slurm-out-"))
    try:
        found = {name: [] for name in LAUNCHERS}
        for rep in range(args.repeats):
            for name in LAUNCHERS:
                found[name].append(one_sweep(name, args.jobs, args.parallel, work / f"{name}-{rep}",
                                             f"bench-{name}-{rep}", env))
                print(f"[bench_slurm] {name} repeat {rep + 1}: {found[name][-1]['wall']:.1f} s", file=sys.stderr)
    finally:
        if not args.cluster:
            subprocess.run([script, "stop", str(cluster)], capture_output=True)
            shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.jobs} tiny jobs, {args.parallel} at a time; medians of {args.repeats} sweeps per launcher\n")
    print("| launcher | sweep wall s (submit to FINISHED) | job run s (mean) | first run starts after s "
          "| overhead per job s |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in found.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"| {name} | {med['wall']:.1f} | {med['run']:.1f} | {med['first']:.1f} | {med['overhead']:.1f} |")


if __name__ == "__main__":
    main()

"""Sweeps on a real one-node Slurm cluster (``scripts/slurm_cluster``: munge, MariaDB, slurmdbd, slurmctld,
slurmd) through ``hydra/launcher=slurm``: every job goes through sbatch, logs into the PostgreSQL-backed MLflow
server of ``scripts/tracking_server`` and carries its Slurm job id; the report reads the sweep back.

Needs root and Debian's Slurm packages (``scripts/slurm_cluster start`` installs them where apt can); in CI
(``CI=1``) their absence fails these tests, elsewhere they skip and say why. Every daemon started here is
stopped by its recorded PID, whatever the outcome."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synbench import report
from tests.test_server import check_complete, job_runs, server, sweep  # noqa: F401  (server: a fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# this project's Slurm launcher defaults, cut to the test node (2 CPUs, no GPU)
ON_TEST_NODE = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def cluster():
    reason = ("it runs its daemons as root" if os.geteuid() != 0 else
              "apt-get is not available to install Slurm" if not (shutil.which("slurmctld") or shutil.which("apt-get"))
              else None)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the Slurm test cluster cannot start in CI: {reason}")
        pytest.skip(f"no Slurm test cluster: {reason}")
    # .ci/run names the folder (SYNBENCH_SLURM_DIR) and stops it on exit too: no daemon outlives a killed suite
    root = Path(os.environ.get("SYNBENCH_SLURM_DIR") or tempfile.mkdtemp(prefix="synbench-slurm-"))
    try:
        started = subprocess.run([str(ROOT / "scripts" / "slurm_cluster"), "start", str(root)], capture_output=True,
                                 text=True, timeout=600)
        assert started.returncode == 0, started.stderr[-3000:]
        yield {"SLURM_CONF": str(root / "etc" / "slurm.conf")}
    finally:
        subprocess.run([str(ROOT / "scripts" / "slurm_cluster"), "stop", str(root)], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def sacct_states(conf: dict, job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    """Slurm's final state of each job: a job whose run is FINISHED may still be exiting (submitit returns when
    the result file is written), so wait until no job is PENDING, RUNNING or COMPLETING."""
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, env={**os.environ, **conf}, check=True).stdout
        states = dict(line.split("|", 1) for line in out.strip().splitlines())
        if not {"PENDING", "RUNNING", "COMPLETING"} & set(states.values()) or time.time() > deadline:
            return states
        time.sleep(1)


def test_a_slurm_sweep_through_sbatch_into_the_team_server(cluster, server, tmp_path):
    proc = sweep(tmp_path, *ON_TEST_NODE, "tracking=server", f"tracking.uri={server.uri}",
                 "tracking.experiment=slurm", "seed=0,1,2", env=cluster)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(server.uri)
    runs = job_runs(client, "slurm")
    assert len(runs) == 3 and sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]
    ids = [r.data.tags["synbench.slurm_job_id"] for r in runs]
    assert len(set(ids)) == 3 and all(i.isdigit() for i in ids)  # each job ran as a Slurm job of its own
    assert {r.data.tags["synbench.slurm_cluster"] for r in runs} == {"synbench"}
    arrays = {r.data.tags["synbench.slurm_array_job_id"] for r in runs}
    assert len(arrays) == 1  # one sbatch array for the sweep
    assert set(sacct_states(cluster, ids).values()) == {"COMPLETED"}  # the scheduler agrees
    check_complete(client, runs)
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).info.status == "FINISHED"
    assert report.main(["--parent", parent, "--tracking-uri", server.uri, "--out", str(tmp_path / "report"),
                        "--bootstrap", "50"]) == 0
    assert (tmp_path / "report" / parent / "report.csv").is_file()

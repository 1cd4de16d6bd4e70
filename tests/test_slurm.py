"""Sweeps on a real one-node Slurm cluster (``scripts/slurm_cluster``: munge, MariaDB, slurmdbd, slurmctld,
slurmd) through ``hydra/launcher=slurm``: docs/slurm.md's sweep (partition, time, memory, gres, array
parallelism) runs as written there, every job through sbatch into the PostgreSQL-backed MLflow server of
``scripts/tracking_server`` with its Slurm job id; the report reads the sweep back. Then the faults clusters
have, staged for real: ``scancel`` mid-run, a job past its time limit, and a lost node (slurmd and the job
SIGKILLed, the job requeued). After each, no run is left RUNNING, the dead attempt's run is KILLED with Slurm's
state, and there is one FINISHED run per job once it is re-run (by a resume, or by Slurm's requeue); a failed
sweep ends with one line. Also: a dead job's run recognised from another host by its heartbeat.

Needs root and Debian's Slurm packages (``scripts/slurm_cluster start`` installs them where apt can); in CI
(``CI=1``) their absence fails these tests, elsewhere they skip and say why. Every daemon started here is
stopped by its recorded PID, whatever the outcome."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synbench import report
from synbench.tracking.slurm import job_name
from tests.test_readme import bash_commands
from tests.test_server import check_complete, job_runs, server, sweep  # noqa: F401  (server: a fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# this project's Slurm launcher defaults, cut to the test node (2 CPUs, no GPU); the queue read every second
# (the default 5 s would add seconds to each sweep's end)
ON_TEST_NODE = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.poll_s=1",
                "hydra.launcher.timeout_min=10"]


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


def docs_launcher() -> list[str]:
    """The launcher settings of docs/slurm.md's sweep on the test cluster (partition, time, memory, gres,
    array_parallelism), as written there: the docs run as written."""
    [line] = [cmd for cmd in bash_commands(ROOT / "docs" / "slurm.md") if "hydra.launcher.gres=" in cmd]
    return [arg for arg in shlex.split(line) if arg.startswith("hydra")]


def test_a_slurm_sweep_through_sbatch_into_the_team_server(cluster, server, tmp_path):
    launcher = docs_launcher()
    assert {"hydra.launcher.gres=gpu:1", "hydra.launcher.array_parallelism=2"} <= set(launcher)
    proc = sweep(tmp_path, *launcher, "tracking=server", f"tracking.uri={server.uri}", "tracking.experiment=slurm",
                 "seed=0,1,2", env=cluster)
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
    tres = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "AllocTRES", "-j", ",".join(ids)], capture_output=True,
                          text=True, env={**os.environ, **cluster}, check=True).stdout.split()
    assert len(tres) == 3 and all("gres/gpu=1" in t.split(",") for t in tres), tres  # each job had its GPU
    [script] = {p.read_text() for p in tmp_path.glob("sweeps/*/*/.submitit/*/*_submission.sh")}
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --gres=gpu:1" in script
    check_complete(client, runs)
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).info.status == "FINISHED"
    assert report.main(["--parent", parent, "--tracking-uri", server.uri, "--out", str(tmp_path / "report"),
                        "--bootstrap", "50"]) == 0
    assert (tmp_path / "report" / parent / "report.csv").is_file()


# --- faults -------------------------------------------------------------------------------------------------
# the default job (test_vit, the reduced mixture): long enough in its run to be hit mid-run (seconds), short
# enough to re-run; `heavy` is a job that outlives the time limit of one minute
HEAVY = ["mixture.n_train=2048", "mixture.n_test=2048"]
QUIET = ["progress=false", "tracking.heartbeat_s=2", "tracking.stale_after_s=30"]


def slurm_sweep(outputs: Path, server, experiment: str, *overrides: str, conf: dict, launcher=ON_TEST_NODE):
    cmd = [sys.executable, "-m", "synbench", "--multirun", f"paths.outputs={outputs}", *launcher, *QUIET,
           "tracking=server", f"tracking.uri={server.uri}", f"tracking.experiment={experiment}", *overrides]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **conf})


def wait_until(what: str, check, timeout: float = 240, every: float = 0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def running(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return exp and client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and "
                                                           "tags.`synbench.kind` = 'job'") or []


def all_runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def one_line_failure(proc, timeout=900) -> str:
    """The launcher's end after a fault: exit status 1 and one line (no traceback) naming the failed jobs."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 1, (out[-2000:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("synbench: error: ") and "re-run the same command" in last, last
    return last


def scontrol(conf: dict, *args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True,
                          env={**os.environ, **conf}).stdout


# --- a sweep Slurm can never start (issue 35) ----------------------------------------------------------------

def slurm_jobs(conf: dict) -> set[str]:
    """Every job Slurm still lists (ended ones stay MinJobAge, 300 s): a refused sweep adds none."""
    return set(subprocess.run(["squeue", "-h", "-t", "all", "-r", "-o", "%i"], capture_output=True, text=True,
                              check=True, env={**os.environ, **conf}).stdout.split())


def refused(proc) -> tuple[str, str]:
    """A sweep refused before submission: exit status 1, one line on stderr and nothing else said after it."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out[-2000:], err[-3000:])
    assert "Traceback" not in err + out, err[-3000:]
    # the parent run, deleted, is not closed with a warning (synbench/tracking/sweep.py skips a deleted parent)
    assert "could not close MLflow parent run" not in out, out[-2000:]
    return err.strip().splitlines()[-1], out


def no_run_left(client, experiment: str) -> None:
    """Nothing ran: no job run, and the sweep's parent (made before the launcher ran) deleted."""
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name(experiment)
    assert client.search_runs([exp.experiment_id]) == []
    every = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert [(r.data.tags["synbench.kind"], r.info.lifecycle_stage) for r in every] == [("sweep", "deleted")]


def test_a_sweep_slurm_can_never_start_is_refused_before_submission(cluster, server, tmp_path):
    """The launcher's defaults (8 CPUs, 32 GB, a GPU per job) on the 2-CPU node: Slurm would queue them PENDING
    (PartitionConfig) for ever; the launcher refuses them in one line, before any job or run exists. Then a
    constraint no node has, which sbatch itself refuses: one line too, naming sbatch's message."""
    client = MlflowClient(server.uri)
    before = slurm_jobs(cluster)
    start = time.time()
    proc = slurm_sweep(tmp_path / "defaults", server, "refused", "seed=0,1", conf=cluster,
                       launcher=["hydra/launcher=slurm"])
    line, _ = refused(proc)
    assert time.time() - start < 30
    assert line == ("synbench: error: hydra.launcher.cpus_per_task=8, but partition debug's nodes have 2 CPUs (at "
                    "most cpus_per_task=2); nothing was submitted")
    no_run_left(client, "refused")

    proc = slurm_sweep(tmp_path / "constraint", server, "no-feature", "seed=0,1", conf=cluster,
                       launcher=[*ON_TEST_NODE, "hydra.launcher.constraint=nosuchfeature"])
    line, _ = refused(proc)
    assert line == ("synbench: error: sbatch refused the sweep's 2 jobs: Batch job submission failed: Invalid "
                    "feature specification (check hydra.launcher.constraint=nosuchfeature); nothing was submitted")
    no_run_left(client, "no-feature")
    assert slurm_jobs(cluster) <= before  # no job was queued


def test_a_job_pending_for_a_reason_that_never_resolves_ends_the_sweep(cluster, server, tmp_path):
    """A reason the check before submission cannot see: the jobs depend on a job that failed, so Slurm keeps them
    PENDING with DependencyNeverSatisfied. The sweep shows the reason while it waits, then (after the grace)
    cancels its jobs and ends with one line naming the reason and the override; its parent is FAILED with that
    line, and no run is left RUNNING."""
    client = MlflowClient(server.uri)
    env = {**os.environ, **cluster}
    failed = subprocess.run(["sbatch", "--parsable", "--output", str(tmp_path / "failed-%j.out"), "--wrap", "false"],
                            capture_output=True, text=True, env=env, check=True).stdout.strip()
    wait_until("the job it depends on FAILED", lambda: sacct_states(cluster, [failed]).get(failed) == "FAILED",
               timeout=60, every=0.5)
    proc = slurm_sweep(tmp_path, server, "never", "seed=0,1", conf=cluster, launcher=[
        *ON_TEST_NODE, "hydra.launcher.pending_grace_s=2",
        f"+hydra.launcher.additional_parameters.dependency=afterok:{failed}"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("synbench: error: 2 of 2 jobs can never start: Slurm keeps them PENDING with reason "
                           "DependencyNeverSatisfied for Slurm jobs "), line
    assert "hydra.launcher.additional_parameters.dependency" in line and "Slurm jobs were cancelled" in line, line
    ids = re.findall(r"-> Slurm job (\d+_\d+)", out)
    assert len(ids) == 2
    for job in ids:  # what each job waited for was said while it waited
        assert f"Slurm job {job} (#{job[-1]} seed={job[-1]}): PENDING (DependencyNeverSatisfied)" in out, out[-3000:]
    # no job is left in the queue (array tasks that never started are one row in sacct: squeue -r lists each)
    listed = subprocess.run(["squeue", "-h", "-t", "all", "-r", "-j", ids[0].split("_")[0], "-o", "%i|%T"],
                            capture_output=True, text=True, env=env, check=True).stdout.split()
    assert sorted(listed) == [f"{job}|CANCELLED" for job in ids], listed
    runs = all_runs(client, "never")
    assert [r.data.tags["synbench.kind"] for r in runs] == ["sweep"]  # no job ran
    [parent] = runs
    assert parent.info.status == "FAILED" and parent.data.tags["synbench.error"] == line[len("synbench: error: "):]


def test_sweeps_waiting_on_resources_keep_waiting(cluster, server, tmp_path):
    """Two sweeps at once whose jobs cannot share the node (each asks for more than half its memory: memory, not
    CPUs, so that each job keeps its one thread): one waits (Resources) while the other runs, and, with no grace
    at all for reasons that never resolve, neither ends early: both finish."""
    client = MlflowClient(server.uri)
    client.create_experiment("queue")  # (two sweeps creating one new experiment at once race in MLflow)
    node_mb = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%m"], capture_output=True, text=True, check=True,
                                 env={**os.environ, **cluster}).stdout.split()[0])
    launcher = [*ON_TEST_NODE, f"hydra.launcher.mem_gb={node_mb // 1024 // 2 + 1}", "hydra.launcher.pending_grace_s=0"]
    procs = [slurm_sweep(tmp_path / str(seed), server, "queue", f"seed={seed}", conf=cluster, launcher=launcher)
             for seed in (0, 1)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)
    assert any(re.search(r"Slurm job \d+ \(#0 the job\): PENDING \(Resources\)", out) for out in outs), outs
    runs = all_runs(client, "queue")
    assert sorted((r.data.tags["synbench.kind"], r.info.status) for r in runs) == [
        ("job", "FINISHED"), ("job", "FINISHED"), ("sweep", "FINISHED"), ("sweep", "FINISHED")]


def test_a_cancelled_job_is_killed_with_its_state_and_a_resume_runs_only_it(cluster, server, tmp_path):
    client = MlflowClient(server.uri)
    proc = slurm_sweep(tmp_path / "first", server, "cancel", "seed=0,1,2", conf=cluster)
    [victim] = wait_until("a job run RUNNING", lambda: running(client, "cancel")[:1])
    job = job_name(victim.data.tags)
    subprocess.run(["scancel", job], check=True, env={**os.environ, **cluster})
    last = one_line_failure(proc)
    assert "1 of 3 jobs did not finish" in last and f"Slurm job {job}): Slurm state CANCELLED" in last
    runs = all_runs(client, "cancel")
    assert not [r for r in runs if r.info.status == "RUNNING"]  # nothing left RUNNING, the parent included
    killed = client.get_run(victim.info.run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["synbench.slurm_state"] == "CANCELLED"
    jobs = [r for r in runs if r.data.tags["synbench.kind"] == "job"]
    assert sorted(r.info.status for r in jobs) == ["FINISHED", "FINISHED", "KILLED"]
    [parent] = [r for r in runs if r.data.tags["synbench.kind"] == "sweep"]
    assert parent.info.status == "FAILED" and parent.data.tags["synbench.jobs"] == "2 FINISHED, 1 KILLED"
    assert parent.data.tags["synbench.error"].startswith("1 of 3 jobs did not finish")

    resume = slurm_sweep(tmp_path / "second", server, "cancel", "seed=0,1,2", conf=cluster)
    out, err = resume.communicate(timeout=900)
    assert resume.returncode == 0, err[-3000:]
    assert "Slurm sweep of 3 jobs (2 already FINISHED)" in out  # only the cancelled job went to Slurm
    finished = [r for r in job_runs(client, "cancel") if r.info.status == "FINISHED"]
    assert sorted(r.data.params["seed"] for r in finished) == ["0", "1", "2"]
    new_parent = [r for r in all_runs(client, "cancel") if r.data.tags["synbench.kind"] == "sweep"][-1]
    assert new_parent.info.status == "FINISHED" and new_parent.data.tags["synbench.jobs"] == "1 FINISHED, 2 reused"


def test_a_job_past_its_time_limit_is_killed_as_timeout(cluster, server, tmp_path):
    """A two-minute limit on a job that needs more: Slurm's warning signal (submitit's USR2, sent before the
    limit) stops the job in its run, which ends KILLED with the state TIMEOUT."""
    client = MlflowClient(server.uri)
    # Slurm sends the warning signal up to 60 s earlier than asked (its event resolution): with a 2-minute limit
    # and 20 s asked, it comes 40-100 s after the start, once the job's run exists (with the default 120 s and a
    # 1-minute limit it came at once, on a loaded node before the run existed); the job needs minutes
    launcher = [*ON_TEST_NODE[:-1], "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=20"]
    proc = slurm_sweep(tmp_path, server, "timeout", "mixture.n_train=8192", "mixture.n_test=8192", "seed=0",
                       conf=cluster, launcher=launcher)
    last = one_line_failure(proc)
    assert "1 of 1 jobs did not finish" in last and "killed by Slurm: TIMEOUT" in last
    runs = all_runs(client, "timeout")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    [run] = [r for r in runs if r.data.tags["synbench.kind"] == "job"]
    assert run.info.status == "KILLED" and run.data.tags["synbench.slurm_state"] == "TIMEOUT"
    [parent] = [r for r in runs if r.data.tags["synbench.kind"] == "sweep"]
    assert parent.info.status == "FAILED" and parent.data.tags["synbench.jobs"] == "1 KILLED"


def kill_job_processes(job_id: str) -> None:
    """SIGKILL every process of Slurm job ``job_id`` on this node, as the node's death would: its step daemons
    (``slurmstepd: [<id>.batch]``, ``[<id>.0]``) and all they started (the batch script, srun, the job's python).
    Processes of the dead attempt left alive are not what a dead node leaves (and runs that left some were the
    ones in which slurmctld 22.05 crashed; docs/slurm.md)."""
    parents, names = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            names[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    doomed = {pid for pid, cmd in names.items() if cmd.startswith(f"slurmstepd: [{job_id}.")}
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in doomed} - doomed
        if not more:
            break
        doomed |= more
    assert doomed, f"no process of Slurm job {job_id} on this node"
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_lost_node_requeues_the_job_and_leaves_one_finished_run(cluster, server, tmp_path):
    """The node dies mid-run: slurmd and every process of the job SIGKILLed at once. Once slurmd has been
    silent past SlurmdTimeout, Slurm marks the node DOWN, the job NODE_FAIL, and requeues it (with a start
    delay, cut short here). The node comes back (slurmd restarted; ReturnToService=2) and the job's next attempt
    runs from scratch: the dead attempt's run is KILLED with NODE_FAIL, the new one FINISHED, one FINISHED run
    for the config hash, and the sweep succeeds (the requeue recovered the job)."""
    client = MlflowClient(server.uri)
    env = {**os.environ, **cluster}
    slurmd_pid = Path(cluster["SLURM_CONF"]).parent.parent / "pids" / "slurmd.pid"
    proc = slurm_sweep(tmp_path, server, "lost", "seed=0", conf=cluster)
    try:
        [victim] = wait_until("a job run RUNNING", lambda: running(client, "lost")[:1])
        job = job_name(victim.data.tags)
        os.kill(int(slurmd_pid.read_text()), signal.SIGKILL)
        kill_job_processes(victim.data.tags["synbench.slurm_job_id"])
        wait_until("the node DOWN and the job requeued", lambda: "Restarts=1" in scontrol(cluster, "show", "job", job),
                   timeout=180, every=2)
    finally:  # the node back, whatever happened: later tests and the cluster's stop need it
        subprocess.run(["slurmd"], env=env, check=True)
    wait_until("the node back", lambda: subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True,
                                                        text=True, env=env).stdout.strip() in {"idle", "mixed"},
               timeout=120, every=1)
    time.sleep(3)  # the node's registration settles before the job is released onto it
    scontrol(cluster, "update", f"JobId={job}", "StartTime=now")  # skip Slurm's requeue delay
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()  # nothing outlives a failed test
    assert proc.returncode == 0, err[-3000:]
    assert sacct_states(cluster, [job]) == {job: "COMPLETED"}  # (waits while the second attempt exits)
    attempts = subprocess.run(["sacct", "-n", "-X", "-P", "-D", "-o", "State", "-j", job], capture_output=True,
                              text=True, env=env, check=True).stdout.split()
    assert attempts == ["NODE_FAIL", "COMPLETED"]  # the scheduler saw two attempts, the first on the lost node
    runs = all_runs(client, "lost")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    jobs = [r for r in runs if r.data.tags["synbench.kind"] == "job"]
    assert [(r.info.status, r.data.tags["synbench.slurm_attempt"]) for r in jobs] == [("KILLED", "0"),
                                                                                     ("FINISHED", "1")]
    dead = client.get_run(victim.info.run_id)
    assert dead.data.tags["synbench.slurm_state"] == "NODE_FAIL" and "NODE_FAIL" in dead.data.tags["synbench.error"]
    assert len({r.data.tags["synbench.config_hash"] for r in jobs}) == 1
    [parent] = [r for r in runs if r.data.tags["synbench.kind"] == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["synbench.jobs"] == "1 FINISHED, 1 KILLED"


# A job run on "node-a": its process starts the run the way a job does (its tags, its heartbeat), then waits
# to be killed; the hostname is the only thing simulated.
HOST_A = """
import socket, sys, time
socket.gethostname = lambda: "node-a"
from tests.conftest import make_cfg
from synbench.config import job_hash
from synbench.tracking.mlflow_run import process_tags
from synbench.tracking.sweep import tracker_from
cfg = make_cfg(*sys.argv[1:])
tags = {"synbench.kind": "job", "synbench.config_hash": job_hash(cfg), **process_tags()}
with tracker_from(cfg).job_run("on node-a", {}, tags):
    print("running", flush=True)
    time.sleep(600)
"""


def test_a_dead_job_is_recognised_from_another_host_by_its_heartbeat(server, tmp_path):
    """Two hosts on one server store: a run whose heartbeat is fresh is left alone from the other host; once
    its process is SIGKILLed and the heartbeat is older than tracking.stale_after_s, the next run of the same
    job, on the other host, marks it KILLED with the reason and runs the job."""
    from synbench.config import job_hash
    from synbench.tracking.sweep import tracker_from
    from tests.conftest import make_cfg

    overrides = [str(tmp_path), "tracking=server", f"tracking.uri={server.uri}", "tracking.experiment=hosts",
                 "tracking.heartbeat_s=1", "tracking.stale_after_s=4", "resume=true"]
    host_a = subprocess.Popen([sys.executable, "-c", HOST_A, *overrides], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert host_a.stdout.readline().strip() == "running"
        client = MlflowClient(server.uri)
        [run_a] = running(client, "hosts")
        assert run_a.data.tags["synbench.host"] == "node-a"
        beat = run_a.data.tags["synbench.heartbeat"]
        wait_until("a heartbeat", lambda: client.get_run(run_a.info.run_id).data.tags["synbench.heartbeat"] != beat,
                   timeout=30)
        cfg = make_cfg(*overrides)
        tracker = tracker_from(cfg)
        tracker.connect()
        assert tracker.finished_run(job_hash(cfg)) is None
        assert client.get_run(run_a.info.run_id).info.status == "RUNNING"  # alive on node-a: left alone
    finally:
        host_a.kill()
        host_a.wait()
    time.sleep(5)  # the heartbeat ages past stale_after_s
    job = subprocess.run([sys.executable, "-m", "synbench", f"paths.outputs={tmp_path}", *overrides[1:], *QUIET[:1],
                          "mixture.scales=[0.5,1.5,2.5,3.5]", "mixture.n_train=64", "mixture.n_test=64",
                          "mixture.chunk_size=32", "epsilon.grid=[0.0,0.5]", "embed.batch_size=64"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert job.returncode == 0, job.stderr[-3000:]
    dead = client.get_run(run_a.info.run_id)
    assert dead.info.status == "KILLED"
    assert "no heartbeat from node-a" in dead.data.tags["synbench.error"], dead.data.tags["synbench.error"]
    runs = all_runs(client, "hosts")
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    assert runs[1].data.tags["synbench.host"] != "node-a"

"""Many writers on a real tracking server: PostgreSQL and ``mlflow server`` on loopback, started by
``scripts/tracking_server`` as docs/slurm.md shows; parallel sweeps log through it, and an outage mid-sweep loses
nothing that a re-run cannot complete. Also a real sweep through Hydra's submitit launcher (Slurm's local twin).

Needs PostgreSQL's server binaries (Debian: ``apt-get install postgresql``); ``.ci/run`` installs them. Outside
CI, where they are absent, these tests skip and say why."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synbench import report

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
JOB = ["mixture.scales=[0.5,1.5,2.5,3.5]", "mixture.n_train=64", "mixture.n_test=64", "mixture.chunk_size=32",
       "epsilon.grid=[0.0,0.5]", "progress=false", "embed.batch_size=64"]
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def postgres_available() -> bool:
    return shutil.which("initdb") is not None or bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """scripts/tracking_server in a process group of its own, so a test can stop it mid-sweep."""

    def __init__(self, root: Path):
        self.root, self.port, self.pg_port = root, free_port(), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 180) -> None:
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "tracking_server"), str(self.root / "state"),
                                      "--port", str(self.port), "--pg-port", str(self.pg_port), "--workers", "1"],
                                     stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tracking server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).read().strip() == b"OK":
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("tracking server did not answer /health in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries are missing in CI: .ci/run installs them (apt-get install postgresql)")
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    # a folder PostgreSQL's own user can enter when the suite runs as root (pytest's tmp_path is private)
    root = Path(tempfile.mkdtemp(prefix="synbench-server-"))
    root.chmod(0o755)
    srv = Server(root)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        subprocess.run([str(ROOT / "scripts" / "tracking_server"), str(root / "state"), "--stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def sweep(outputs: Path, *overrides: str, env: dict | None = None, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "synbench", "--multirun", f"paths.outputs={outputs}", *JOB, *overrides]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, **popen)


def job_runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string="tags.`synbench.kind` = 'job'", max_results=1000)


def check_complete(client, runs) -> None:
    """Each FINISHED run holds every metric its job wrote to results.json, each logged once."""
    for run in runs:
        assert run.info.status == "FINISHED"
        results = json.loads(Path(client.download_artifacts(run.info.run_id, "results.json")).read_text())
        for name, metric in results["metrics"].items():
            for key in metric["scalars"]:
                assert f"{name}/{key}" in run.data.metrics, (run.info.run_id, name, key)
        assert len(client.get_metric_history(run.info.run_id, "synbench/score")) == 1


def test_parallel_sweep_through_a_postgres_backed_server(server, tmp_path):
    proc = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "tracking=server",
                 f"tracking.uri={server.uri}", "tracking.experiment=team", "seed=0,1,2,3")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(server.uri)
    runs = job_runs(client, "team")
    assert len(runs) == 4  # every job arrived, none twice
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert len({r.data.tags["synbench.config_hash"] for r in runs}) == 4
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).info.status == "FINISHED"
    check_complete(client, runs)
    # the report reads the sweep back from the server and logs its files to the parent there
    assert report.main(["--parent", parent, "--tracking-uri", server.uri, "--out", str(tmp_path / "report"),
                        "--bootstrap", "50"]) == 0
    assert (tmp_path / "report" / parent / "report.csv").is_file()
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent, "report")}


def test_server_outage_mid_sweep_loses_nothing_a_rerun_cannot_complete(server, tmp_path):
    """Stop the server while two jobs are running: those end not FINISHED with their results on disk, the jobs
    after them fail fast, nothing is FINISHED with missing metrics; after a restart the same sweep completes."""
    slow = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "tracking=server", f"tracking.uri={server.uri}",
            "tracking.experiment=outage", "seed=0,1,2,3", "mixture.n_train=512", "mixture.n_test=512",
            "mixture.scales=[0.5,1.0,1.5,2.0,2.5,3.0,3.5]"]
    proc = sweep(tmp_path / "first", *slow, env=FAST_FAIL)
    client = MlflowClient(server.uri)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("outage")
        running = exp and client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and "
                                                                 "tags.`synbench.kind` = 'job'")
        if running:
            break
        time.sleep(0.3)
    assert proc.poll() is None, "the sweep ended before the outage could be staged"
    server.stop()
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0
    assert "unreachable" in out  # the jobs after the outage: one line each, before any work
    on_disk = list((tmp_path / "first").rglob("results.json"))
    assert on_disk, "the running jobs' results must be on disk"

    server.start()
    before = job_runs(client, "outage")
    assert before and all(r.info.status != "FINISHED" for r in before)  # never FINISHED with missing metrics
    rerun = sweep(tmp_path / "second", *slow)
    out, _ = rerun.communicate(timeout=1200)
    assert rerun.returncode == 0, out[-3000:]
    after = job_runs(client, "outage")
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert sorted(r.data.params["seed"] for r in finished) == ["0", "1", "2", "3"]
    check_complete(client, finished)
    for r in after:
        if r.info.status != "FINISHED":  # the runs the outage interrupted: marked by the re-run, with the reason
            assert r.info.status == "KILLED" and "stale" in r.data.tags["synbench.error"]
    exp_id = client.get_experiment_by_name("outage").experiment_id
    sweeps = client.search_runs([exp_id], "tags.`synbench.kind` = 'sweep'", order_by=["attributes.start_time ASC"])
    assert [s.info.status for s in sweeps] == ["KILLED", "FINISHED"]  # the dead sweep is not left RUNNING
    saved = {json.loads(p.read_text())["job"]["config_hash"] for p in on_disk}
    assert saved <= {r.data.tags["synbench.config_hash"] for r in finished}


def test_submitit_local_sweep(tmp_path):
    """Hydra's submitit launcher for real (submitit_local: the Slurm launcher's code path, minus Slurm)."""
    proc = sweep(tmp_path, "hydra/launcher=submitit_local", "seed=0,1", "tracking.experiment=submitit")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    runs = job_runs(client, "submitit")
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and "synbench/score" in r.data.metrics for r in runs)
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).info.status == "FINISHED"
    assert len(list(tmp_path.rglob(".submitit"))) == 1  # it really went through submitit


def test_the_printed_ui_command_serves_the_runs(tmp_path):
    """The `mlflow ui` command a job prints (docs/mlflow-ui.md) opens the store."""
    from synbench.tracking.mlflow_run import MlflowTracker, ui_command

    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    tracker = MlflowTracker(uri, "ui", str(tmp_path / "artifacts"), 10)
    exp_id = tracker.connect()
    run = MlflowClient(uri).create_run(exp_id, run_name="shown")
    MlflowClient(uri).log_metric(run.info.run_id, "synbench/score", 0.25)
    port = free_port()
    cmd = ui_command(uri).replace("--port 5000", f"--port {port}")
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read().strip() == b"OK":
                    break
            except OSError:
                time.sleep(0.5)
        [shown] = MlflowClient(f"http://127.0.0.1:{port}").search_runs([exp_id])
        assert shown.info.run_id == run.info.run_id and shown.data.metrics["synbench/score"] == 0.25
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

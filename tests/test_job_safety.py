"""Nothing lost, nothing left RUNNING, no secret leaked: SIGTERM ends a run KILLED with its reason, jobs started at
once on a new store both finish, refusals leave no store behind, unwritable places are one line naming the key,
and a password in tracking.uri never reaches a param, tag, artifact, printed line or error."""

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synbench import app
from synbench.config import flat_params, redact
from synbench.tracking import TrackingError
from synbench.tracking.mlflow_run import JobRun, MlflowTracker
from tests.conftest import SMALL, make_cfg

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-pw"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def synbench(outputs, *args, flags=(), timeout=300):
    return subprocess.run([sys.executable, "-m", "synbench", *flags, f"paths.outputs={outputs}", *SMALL, *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("synbench")]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def _connect_at(uri: str, start: float, out) -> None:
    time.sleep(max(0.0, start - time.time()))
    try:
        MlflowTracker(uri, "race", None, 30).connect()
        out.put("ok")
    except Exception as err:  # noqa: BLE001 (reported to the test)
        out.put(f"{type(err).__name__}: {err}")


@pytest.mark.slow
def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    """Without the lock, the second migration fails ("Online migration expected to match one row")."""
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 8  # every process has imported mlflow by then: they hit the new store together
    procs = [ctx.Process(target=_connect_at, args=(uri, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert results == ["ok"] * 3
    assert [e.name for e in MlflowClient(uri).search_experiments()].count("race") == 1


@pytest.mark.slow
def test_sigterm_ends_the_run_killed_with_its_reason(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "synbench", f"paths.outputs={tmp_path}", *SMALL,
                             "mixture.n_train=4000", "mixture.n_test=4000"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "mlflow" / "mlflow.db"
    try:
        deadline = time.time() + 240
        running = []
        while not running and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            if db.exists():
                with MlflowTracker(f"sqlite:///{db}", "x", None, 30)._creation_lock():  # not while it migrates
                    client = MlflowClient(f"sqlite:///{db}")
                    running = [r for e in client.search_experiments()
                               for r in client.search_runs([e.experiment_id]) if r.info.status == "RUNNING"]
        assert running, "the job never had a RUNNING run"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    line = one_line(err)
    assert "stopped by SIGTERM" in line and "KILLED" in line
    run = MlflowClient(f"sqlite:///{db}").get_run(running[0].info.run_id)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["synbench.error"]
    [log] = list(tmp_path.glob("runs/*/*/synbench.log"))
    assert "stopped by SIGTERM" in log.read_text()  # the job folder says so


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["metrics=[synbench,robustness]", "metrics.robustness.scale=9.9"],  # checked once the model is loaded
    ["mixture.scales=[0.5,1.0,2.2]"],  # a grid SynBench cannot score: known only with the model's mixture
    ["model=custom", "model.module._target_=torch.nn.Flatten", "model.input_shape=[1,4,4]",
     "metrics=[logme]", "dataset=npz", "dataset.path=RGB"],  # a model that cannot take the data's channels
])
def test_refusals_after_the_data_are_read_leave_no_store(tmp_path, overrides):
    if "dataset.path=RGB" in overrides:
        import numpy as np
        np.savez(tmp_path / "rgb.npz", x=np.zeros((20, 4, 4, 3), np.uint8), y=np.arange(20) % 2)
        overrides = [o.replace("dataset.path=RGB", f"dataset.path={tmp_path / 'rgb.npz'}") for o in overrides]
    model_two_channels = ["model.input_shape=[2,4,4]"] if "model=custom" in overrides else []
    cfg = make_cfg(tmp_path / "out", *overrides, *model_two_channels)
    with pytest.raises(ValueError):
        app.run(cfg, tmp_path / "job")
    assert not (tmp_path / "out" / "mlflow").exists()


@pytest.mark.slow
def test_unwritable_places_are_one_line_naming_the_key(tmp_path):
    (tmp_path / "afile").write_text("")
    below = synbench(tmp_path / "afile" / "out")
    assert below.returncode == 1
    assert "paths.outputs=" in one_line(below.stderr) and "point paths.outputs at a writable folder" in below.stderr
    sweep = synbench(tmp_path / "afile" / "out", flags=["--multirun"])
    assert sweep.returncode == 1 and "paths.outputs=" in one_line(sweep.stderr)
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(ro)]).returncode == 0:
        try:  # a read-only filesystem (root can write anywhere else)
            read_only = synbench(ro / "out")
        finally:
            subprocess.run(["umount", str(ro)], check=True)
        assert read_only.returncode == 1
        assert "paths.outputs=" in one_line(read_only.stderr) and "Read-only file system" in read_only.stderr
    spaced = synbench(tmp_path / "out", "dataset=npz", "dataset.path=sp ü data/näme.npz")  # Hydra's lexer stops at ü
    assert spaced.returncode == 1
    assert """quotes inside the override, e.g. 'dataset.path="sp ü data/näme.npz"'""" in one_line(spaced.stderr)
    store = synbench(tmp_path / "out", f"tracking.uri=sqlite:///{tmp_path / 'afile' / 'mlflow.db'}")
    assert store.returncode == 1
    line = one_line(store.stderr)
    assert "tracking.uri=" in line and "is a file" in line and not list((tmp_path / "out").rglob("mlflow.db"))


def test_passwords_in_urls_are_redacted_wherever_they_are_written(tmp_path, monkeypatch):
    uri = f"http://alice:{SECRET}@127.0.0.1:9"
    assert redact(f"uri={uri} and postgresql://u:{SECRET}@db/x") == \
        "uri=http://alice:***@127.0.0.1:9 and postgresql://u:***@db/x"
    assert redact("http://host:5000/a@b sqlite:////x.db") == "http://host:5000/a@b sqlite:////x.db"
    assert redact(f"#0 : tracking.uri=http\\://alice\\:{SECRET}@h\\:9") == "#0 : tracking.uri=http\\://alice\\:***@h\\:9"
    params = flat_params(make_cfg(tmp_path, "tracking=server", f"tracking.uri={uri}"))
    assert params["tracking.uri"] == "http://alice:***@127.0.0.1:9"
    assert not any(SECRET in str(v) for v in params.values())
    # the tracker hands the credentials to MLflow's own variables; no message shows them
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    tracker = MlflowTracker(uri, "x", None, 2)
    assert tracker.uri == "http://127.0.0.1:9" and os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET
    with pytest.raises(TrackingError) as err:
        tracker.connect()  # nothing listens on port 9
    assert SECRET not in str(err.value) and "127.0.0.1:9" in str(err.value)
    # uploaded Hydra files are redacted copies
    db = f"sqlite:///{tmp_path / 'store.db'}"
    local = MlflowTracker(db, "redact", None, 30)
    hydra = tmp_path / "hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(f"tracking:\n  uri: {uri}\n")
    with local.job_run("r", {}, {}) as run:
        JobRun.log_dir(run, hydra, "hydra")
    text = Path(MlflowClient(db).download_artifacts(run.run_id, "hydra/config.yaml", str(tmp_path))).read_text()
    assert SECRET not in text and "http://alice:***@127.0.0.1:9" in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_password_in_tracking_uri_reaches_no_param_tag_artifact_or_line(tmp_path):
    """A live MLflow server (no auth: it ignores the credentials), a one-job sweep logging to it with the password
    in tracking.uri: nothing the server stores, and nothing printed, holds the password."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(1)
        time.sleep(2)
        uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
        job = synbench(tmp_path / "out", "tracking=server", f"tracking.uri={uri}", "tracking.experiment=creds",
                       flags=["--multirun"])
        assert job.returncode == 0, job.stderr[-2000:]
        assert SECRET not in job.stdout + job.stderr and "MLflow run: http://127.0.0.1:" in job.stdout
        client = MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.get_experiment_by_name("creds")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 2  # the sweep's parent and its job
        for run in runs:
            assert not any(SECRET in v for v in (*run.data.params.values(), *run.data.tags.values()))
        stored = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
        assert any(p.name == "overrides.yaml" for p in stored)
        assert not any(SECRET in p.read_text(errors="replace") for p in stored)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)

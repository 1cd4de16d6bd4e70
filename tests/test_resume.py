"""Resume: a finished job is skipped, failed and killed ones are re-run, and a run whose process was killed
with SIGKILL (left RUNNING forever) is marked KILLED by the next run of the same job."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synbench import app
from synbench.tracking.mlflow_run import PARENT_ENV
from tests.conftest import SMALL

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_a_finished_job_is_skipped_and_recorded_by_the_parent(cfg_factory, tmp_path, monkeypatch, caplog):
    cfg = cfg_factory("resume=true", "tracking.experiment=resume-skip")
    first = app.run(cfg, tmp_path / "a")
    parent = MlflowClient(cfg.tracking.uri).create_run(runs(cfg.tracking.uri, "resume-skip")[0].info.experiment_id)
    monkeypatch.setenv(PARENT_ENV, parent.info.run_id)
    with caplog.at_level("INFO", logger="synbench"):
        again = app.run(cfg, tmp_path / "b")
    assert again["reused_run_id"] == first["run_id"] and "skipping the job" in caplog.text
    assert again["scalars"]["synbench/score"] == first["scalars"]["synbench/score"]
    assert not (tmp_path / "b" / "results.json").exists()
    assert len(runs(cfg.tracking.uri, "resume-skip")) == 2  # the job's run and the parent: nothing new
    tags = MlflowClient(cfg.tracking.uri).get_run(parent.info.run_id).data.tags
    assert tags[f"synbench.reused.{first['config_hash']}"] == first["run_id"]
    monkeypatch.delenv(PARENT_ENV)
    forced = app.run(cfg_factory("resume=false", "tracking.experiment=resume-skip"), tmp_path / "c")
    assert forced["run_id"] != first["run_id"] and forced["config_hash"] == first["config_hash"]


def test_a_failed_job_is_run_again(cfg_factory, tmp_path, monkeypatch):
    from synbench.metrics.synbench_score import SynBenchScore

    cfg = cfg_factory("resume=true", "tracking.experiment=resume-failed")
    real = SynBenchScore.compute
    monkeypatch.setattr(SynBenchScore, "compute", lambda self, inputs: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        app.run(cfg, tmp_path / "a")
    monkeypatch.setattr(SynBenchScore, "compute", real)
    summary = app.run(cfg, tmp_path / "b")
    assert "reused_run_id" not in summary
    statuses = sorted(r.info.status for r in runs(cfg.tracking.uri, "resume-failed"))
    assert statuses == ["FAILED", "FINISHED"]


def test_a_run_killed_with_sigkill_is_marked_killed_and_the_job_re_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    job = [sys.executable, "-m", "synbench", f"paths.outputs={tmp_path}", *SMALL, "resume=true",
           "tracking.experiment=resume-killed"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    slow = subprocess.Popen([*job, "mixture.n_train=1024", "mixture.n_test=1024", "cache.enabled=false"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(r.info.status == "RUNNING" for r in runs(uri, "resume-killed")):
            assert slow.poll() is None, "the job ended before it could be killed"
            time.sleep(1)
        time.sleep(2)
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait(30)
    finally:
        if slow.poll() is None:
            slow.kill()
    [stale] = runs(uri, "resume-killed")
    assert stale.info.status == "RUNNING"  # what SIGKILL leaves behind
    proc = subprocess.run([*job, "mixture.n_train=1024", "mixture.n_test=1024", "cache.enabled=false"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = {r.info.run_id: r for r in runs(uri, "resume-killed")}
    assert after[stale.info.run_id].info.status == "KILLED"
    assert "stale: its process" in after[stale.info.run_id].data.tags["synbench.error"]
    assert sorted(r.info.status for r in after.values()) == ["FINISHED", "KILLED"]


def test_a_requeued_slurm_job_reuses_its_earlier_attempt_even_with_resume_false(cfg_factory, tmp_path,
                                                                                 monkeypatch):
    """Slurm requeues a job whose node it lost and the next attempt starts from scratch: with resume=false it
    still must not log a second FINISHED run of the work its own first attempt finished. Another job (a new
    sweep, another job id) with resume=false re-runs as asked."""
    cfg = cfg_factory("resume=false", "tracking.experiment=resume-requeue")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    first = app.run(cfg, tmp_path / "a")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job's next attempt
    again = app.run(cfg, tmp_path / "b")
    assert again["reused_run_id"] == first["run_id"]
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # an attempt of another job: resume=false holds
    other = app.run(cfg, tmp_path / "c")
    assert "reused_run_id" not in other and other["run_id"] != first["run_id"]
    finished = [r for r in runs(cfg.tracking.uri, "resume-requeue") if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["synbench.slurm_job_id"] for r in finished) == ["77", "78"]

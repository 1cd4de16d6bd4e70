"""When a RUNNING run is judged dead (``why_stale``), and what ``sacct`` / ``scontrol`` answers are read as
(``attempt_state``, against fake commands on PATH). No Slurm and no MLflow needed."""

import os
import socket
import stat
import time

import pytest

from synbench.tracking import TrackingError
from synbench.tracking.mlflow_run import MlflowTracker, _utc_now, why_stale
from synbench.tracking.slurm import attempt_state, job_name

NOW = time.time()


def beat(age_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - age_s))


def never(*_):
    raise AssertionError("Slurm must not be asked")


def test_same_host_is_judged_by_its_process_first():
    alive = {"synbench.host": socket.gethostname(), "synbench.pid": str(os.getpid()), "synbench.heartbeat": beat(9e9)}
    assert why_stale(alive, 60, NOW, state_of=never) is None  # alive: an old heartbeat does not matter
    gone = {**alive, "synbench.pid": "999999999"}
    reason, state = why_stale(gone, 60, NOW, state_of=never)
    assert "999999999" in reason and "gone" in reason and state is None
    under_slurm = {**gone, "synbench.slurm_job_id": "7", "synbench.slurm_attempt": "0"}
    reason, state = why_stale(under_slurm, 60, NOW, state_of=lambda job, attempt: "NODE_FAIL")
    assert state == "NODE_FAIL" and "Slurm job 7 attempt 0: NODE_FAIL" in reason


def test_another_host_asks_slurm_before_the_heartbeat():
    tags = {"synbench.host": "node-a", "synbench.pid": "1", "synbench.slurm_array_job_id": "5",
            "synbench.slurm_array_task_id": "2", "synbench.slurm_job_id": "8", "synbench.slurm_attempt": "1",
            "synbench.heartbeat": beat(9e9)}
    asked = []
    assert why_stale(tags, 60, NOW, state_of=lambda job, a: asked.append((job, a)) or "RUNNING") is None
    assert asked == [("5_2", 1)]  # the array task and the run's own attempt
    reason, state = why_stale(tags, 60, NOW, state_of=lambda job, a: "CANCELLED")
    assert state == "CANCELLED" and "5_2" in reason
    # an attempt a requeue superseded has ended, though the job itself runs again
    reason, state = why_stale(tags, 60, NOW, state_of=lambda job, a: "REQUEUED")
    assert state == "REQUEUED" and "attempt 1 is REQUEUED" in reason
    # Slurm unreachable from here: the heartbeat decides
    reason, state = why_stale(tags, 60, NOW, state_of=lambda job, a: None)
    assert "no heartbeat from node-a" in reason and state is None


@pytest.mark.parametrize("age, dead", [(10, False), (59, False), (61, True), (3600, True)])
def test_the_heartbeat_decides_for_a_run_slurm_does_not_know(age, dead):
    tags = {"synbench.host": "node-a", "synbench.pid": "1", "synbench.heartbeat": beat(age)}
    assert (why_stale(tags, 60, NOW, state_of=never) is not None) == dead


def test_a_run_with_no_sign_to_read_is_left_alone():
    assert why_stale({"synbench.host": "node-a", "synbench.pid": "1"}, 60, NOW, state_of=never) is None
    assert abs(time.mktime(time.strptime(_utc_now(), "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime())) < 5


def test_heartbeat_settings_are_checked():
    for beat_s, stale_s in [(-1, 600), (60, 100), (60, 120)]:
        with pytest.raises(TrackingError, match="stale_after_s"):
            MlflowTracker("sqlite:////tmp/x.db", "e", None, 10, heartbeat_s=beat_s, stale_after_s=stale_s)
    MlflowTracker("sqlite:////tmp/x.db", "e", None, 10, heartbeat_s=0, stale_after_s=1)


def fake(bin_dir, name: str, stdout: str, rc: int = 0) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {rc}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_attempt_state_reads_sacct_one_row_per_attempt(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    fake(tmp_path, "sacct", "9_1|NODE_FAIL\n9_1|CANCELLED by 0\n9_10|RUNNING")
    assert attempt_state("9_1", 0) == "NODE_FAIL"
    assert attempt_state("9_1", 1) == "CANCELLED"  # "by <uid>" dropped
    assert attempt_state("9_1") == "CANCELLED"  # the current attempt: the last row
    assert attempt_state("9_1", 5) == "CANCELLED"


def test_attempt_state_falls_back_to_scontrol(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    fake(tmp_path, "sacct", "", rc=1)
    fake(tmp_path, "scontrol", "JobId=9 JobName=x JobState=PENDING Reason=BeginTime Restarts=1 Requeue=1")
    assert attempt_state("9", 0) == "REQUEUED"  # superseded by the requeue
    assert attempt_state("9", 1) == "PENDING"
    fake(tmp_path, "scontrol", "", rc=1)
    assert attempt_state("9", 0) is None


def test_job_name_is_what_sacct_takes():
    assert job_name({"synbench.slurm_job_id": "12", "synbench.slurm_array_job_id": "10",
                     "synbench.slurm_array_task_id": "2"}) == "10_2"
    assert job_name({"synbench.slurm_job_id": "12"}) == "12"
    assert job_name({}) is None

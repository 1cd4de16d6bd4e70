"""What Slurm says about a job: who a job process is (from Slurm's environment) and what became of an attempt
(from ``sacct``, else ``scontrol``). The scheduler is the authority on whether a job still runs: a run left
RUNNING on a node that died is judged by it, from any host that can reach the cluster's commands."""

from __future__ import annotations

import os
import re
import subprocess

ENV_TAGS = {"SLURM_JOB_ID": "synbench.slurm_job_id", "SLURM_ARRAY_JOB_ID": "synbench.slurm_array_job_id",
            "SLURM_ARRAY_TASK_ID": "synbench.slurm_array_task_id", "SLURM_CLUSTER_NAME": "synbench.slurm_cluster",
            "SLURM_RESTART_COUNT": "synbench.slurm_attempt"}  # 0 on the first attempt; +1 per requeue
# states in which an attempt may still be running or about to (everything else has ended; an earlier attempt
# that a requeue superseded reads REQUEUED, and has ended)
LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT",
        "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED"}
# states of a job's current attempt in which the job is still to run: while Slurm requeues it, it reads REQUEUED
WAITING = LIVE | {"REQUEUED"}


def job_tags() -> dict[str, str]:
    """The Slurm ids of this process's job (empty outside Slurm), as run tags: what ``sacct -j`` takes."""
    tags = {tag: os.environ[var] for var, tag in ENV_TAGS.items() if os.environ.get(var)}
    if "synbench.slurm_job_id" in tags:
        tags.setdefault("synbench.slurm_attempt", "0")
    return tags


def job_name(tags: dict) -> str | None:
    """The job as Slurm names it in sacct: ``<array>_<task>`` for an array task, else the job id."""
    if tags.get("synbench.slurm_array_job_id") and tags.get("synbench.slurm_array_task_id"):
        return f"{tags['synbench.slurm_array_job_id']}_{tags['synbench.slurm_array_task_id']}"
    return tags.get("synbench.slurm_job_id")


def attempt_state(job: str, attempt: int | None = None, timeout_s: float = 15) -> str | None:
    """Slurm's state of one attempt of ``job`` (``CANCELLED``, ``TIMEOUT``, ``NODE_FAIL``, ``RUNNING``, ...;
    None: its current attempt); an attempt that a requeue superseded is ``REQUEUED`` when Slurm keeps no state
    of its own for it. None when neither ``sacct`` nor ``scontrol`` answers (no Slurm here, or no such job)."""
    rows = _run(["sacct", "-n", "-X", "-P", "-D", "-o", "JobID,State", "-j", job], timeout_s)
    states = [line.split("|")[1].split()[0] for line in rows.splitlines()
              if line.count("|") == 1 and line.split("|")[0] == job and line.split("|")[1].strip()]
    if states:  # one row per attempt, oldest first
        return states[attempt] if attempt is not None and attempt < len(states) else states[-1]
    fields = dict(re.findall(r"(\w+)=(\S*)", _run(["scontrol", "-o", "show", "job", job], timeout_s)))
    if "JobState" not in fields:
        return None
    restarts = int(fields.get("Restarts", "0") or 0)
    return "REQUEUED" if attempt is not None and restarts > attempt else fields["JobState"]


def _run(cmd: list[str], timeout_s: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def scheduler_stop(err: BaseException) -> str | None:
    """Slurm's reason when ``err`` is the scheduler stopping this job, else None. submitit turns Slurm's
    warning signal (sent before the time limit, or on preemption) into ``UncompletedJobError`` inside the job."""
    if type(err).__name__ == "UncompletedJobError" and type(err).__module__.startswith("submitit"):
        return "TIMEOUT" if "timed-out" in str(err) else "PREEMPTED"
    return None


def attempts(job: str, timeout_s: float = 15) -> int:
    """How many attempts ``job`` has had (one more per requeue): sacct's rows, else scontrol's Restarts + 1."""
    rows = _run(["sacct", "-n", "-X", "-P", "-D", "-o", "JobID", "-j", job], timeout_s).split()
    if rows.count(job):
        return rows.count(job)
    fields = dict(re.findall(r"(\w+)=(\S*)", _run(["scontrol", "-o", "show", "job", job], timeout_s)))
    return int(fields.get("Restarts") or 0) + 1

"""Hydra's Slurm launcher (the submitit plugin) with what a sweep on a cluster needs beyond submitting.

The plugin submits every job, even one a FINISHED run already did, and returns at the first job that does not
finish, with a traceback, leaving the other jobs unwatched and the dead job's run RUNNING (Slurm killed its
process, which could not end it). This launcher submits only the jobs without a FINISHED run (resume: no queue
wait for done work); waits for every job; marks KILLED, with Slurm's state, the run of each job Slurm ended
(cancelled, timed out, node lost); and ends a failed sweep with one line that names each failed job and says
that re-running the same command runs only those. A job Slurm could never start would wait forever, so it
also checks the request against the partition's nodes before submitting (``precheck``), says what each job
waits for while it waits, and ends the sweep when a job pends for a reason that never resolves. Its own keys
(``precheck``, ``pending_grace_s``, ``poll_s``) extend the plugin's schema (``SynbenchSlurmConf``) and never
reach submitit. ``conf/hydra/launcher/slurm.yaml`` selects it, under its registered name in
``synbench/_hydra/hydra_plugins/synbench_launcher``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher
from omegaconf import MISSING, OmegaConf, open_dict

from synbench import cluster
from synbench.config import job_hash
from synbench.encoders.base import first_line
from synbench.runner import data_digest, reuse_finished
from synbench.tracking import slurm
from synbench.tracking.mlflow_run import PARENT_ENV, tag_sweep_error
from synbench.tracking.sweep import tracker_from

log = logging.getLogger(__name__)
OWN_KEYS = ("precheck", "pending_grace_s", "poll_s")  # this launcher's keys: never passed to submitit


@dataclass
class SynbenchSlurmConf(SlurmQueueConf):
    """The plugin's schema plus this launcher's keys (unknown keys fail at compose time); their values live in
    ``conf/hydra/launcher/slurm.yaml``."""

    _target_: str = "hydra_plugins.synbench_launcher.SlurmLauncher"
    precheck: bool = MISSING  # compare the request with the partition's nodes before submitting
    pending_grace_s: float = MISSING  # how long a job may pend for a reason that never resolves
    poll_s: float = MISSING  # how often the queue is read while the sweep waits


ConfigStore.instance().store(group="hydra/launcher", name="synbench_slurm_schema", node=SynbenchSlurmConf,
                             provider="synbench")


class SweepFailed(SystemExit):
    """A sweep with jobs that did not finish: one line for the user, exit status 1 (no traceback)."""


# sbatch's refusals -> the key that most likely asked for it
SBATCH_KEYS = {"feature": "constraint", "partition": "partition", "account": "account", "qos": "qos",
               "gres": "gres", "node name": "additional_parameters.nodelist", "time limit": "timeout_min",
               "memory": "mem_gb", "node configuration": "cpus_per_task, mem_gb, gpus_per_node or gres"}


class SlurmLauncher(PluginSlurmLauncher):
    def __init__(self, **params) -> None:
        own = {k: params.pop(k) for k in OWN_KEYS}
        super().__init__(**params)
        self.precheck, self.pending_grace_s, self.poll_s = bool(own["precheck"]), float(own["pending_grace_s"]), \
            float(own["poll_s"])
        if self.pending_grace_s < 0 or self.poll_s <= 0:
            raise SweepFailed(f"synbench: error: hydra.launcher.pending_grace_s={own['pending_grace_s']} and "
                              f"hydra.launcher.poll_s={own['poll_s']}: the grace must be >= 0 and the poll > 0 s")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.precheck:
            self._check_request()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        common = set.intersection(*(set(filter_overrides(o)) for o in job_overrides))
        names = {initial_job_idx + i: " ".join(o for o in filter_overrides(ov) if o not in common) or "the job"
                 for i, ov in enumerate(job_overrides)}
        returns = dict(self._reused(job_overrides, initial_job_idx, sweep_dir))
        todo = [(initial_job_idx + i, list(ov)) for i, ov in enumerate(job_overrides)
                if initial_job_idx + i not in returns]
        log.info("Slurm sweep of %d jobs (%d already FINISHED), output dir %s", len(job_overrides), len(returns),
                 sweep_dir)
        failed = []
        if todo:
            jobs = self._submit(todo)
            for (num, overrides), job in zip(todo, jobs):
                log.info("\t#%d : %s -> Slurm job %s", num, names[num], job.job_id)
            self._wait(jobs, {job.job_id: f"#{num} {names[num]}" for (num, _), job in zip(todo, jobs)},
                       len(job_overrides))
            for (num, overrides), job in zip(todo, jobs):
                returns[num], why = self._outcome(job, overrides)
                if why:
                    failed.append(f"#{num} ({names[num]}, Slurm job {job.job_id}): {why}")
        if failed:
            self._fail(failed, len(job_overrides))
        return [returns[n] for n in sorted(returns)]

    def _reused(self, job_overrides, initial_job_idx: int, sweep_dir: Path):
        """(number, JobReturn) of each job whose work a FINISHED run already holds (resume): never submitted."""
        tracker = tracker_from(self.config)
        tracker.connect()
        digests: dict[str, str | None] = {}  # the data of a sweep's jobs are mostly one dataset: read it once
        for i, overrides in enumerate(job_overrides):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]  # what the job itself sees (and hashes)
            if not cfg.get("resume", False):
                continue
            try:
                data = cfg.get("dataset")
                reads = json.dumps([None if data is None else OmegaConf.to_container(data, resolve=True),
                                    sorted(cfg.get("metrics") or ())], sort_keys=True)
                if reads not in digests:
                    digests[reads] = data_digest(cfg)
            except Exception:  # noqa: BLE001 - bad data or config: the job says so in one line when it runs
                continue
            config_hash = job_hash(cfg, digests[reads])
            done = tracker.finished_run(config_hash, kinds=("job", "comparison"))
            if done is not None:
                summary = reuse_finished(done, tracker, config_hash, sweep_dir,
                                         done.data.tags.get("synbench.kind", "job"))
                yield initial_job_idx + i, JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                                                     _return_value=summary)

    def _check_request(self) -> None:
        """Refuse, before anything is submitted, a request that no node of the partition can ever hold (Slurm
        would queue it and leave it PENDING forever). Where the cluster cannot be read, say so and go on."""
        try:
            partitions = cluster.read_cluster()
        except cluster.ClusterUnknown as err:
            log.warning("could not check the request against the cluster (%s); submitting it unchecked", err)
            return
        why = cluster.misfit(self.params, partitions)
        if why:
            self._refuse(f"{why}; nothing was submitted")

    def _submit(self, todo: list):
        """One Slurm array for the jobs; sbatch's refusal (a constraint no node has, an unknown partition or
        account) ends the sweep with its message in one line, before any job exists."""
        import submitit

        # the jobs run the plugin's own class (importable on every node); this one only launches and watches
        plain = PluginSlurmLauncher.__new__(PluginSlurmLauncher)
        plain.__dict__.update(self.__dict__)
        nums = [n for n, _ in todo]
        stderr = io.StringIO()  # submitit prints sbatch's complaint before raising it: it goes into the one line
        try:
            with contextlib.redirect_stderr(stderr):
                return self._executor().map_array(plain, [ov for _, ov in todo], ["hydra.sweep.dir"] * len(todo),
                                                  nums, [f"job_id_for_{n}" for n in nums],
                                                  [Singleton.get_state()] * len(todo))
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as err:
            said = [ln.split("error:", 1)[1].strip() for ln in str(err).splitlines() if "error:" in ln]
            message = said[-1] if said else first_line(err)
            keys = [key for word, key in SBATCH_KEYS.items() if word in message.lower()][:1]
            hint = "".join(f" (check hydra.launcher.{k}" + (f"={self.params[k]}" if self.params.get(k) else "") + ")"
                           for k in keys)
            self._refuse(f"sbatch refused the sweep's {len(todo)} job{'s' * (len(todo) != 1)}: {message}{hint}; "
                         f"nothing was submitted")

    def _refuse(self, line: str) -> None:
        """End a sweep that never started: no job ran, so its parent run, made before the launcher, goes too."""
        parent = os.environ.get(PARENT_ENV)
        if parent:
            from mlflow.tracking import MlflowClient

            try:
                MlflowClient(tracker_from(self.config).uri).delete_run(parent)
            except Exception as err:
                log.warning("could not delete the sweep's parent run %s: %s", parent, first_line(err))
        raise SweepFailed(f"synbench: error: {line}")

    def _wait(self, jobs: list, labels: dict[str, str], n_jobs: int) -> None:
        """Until every job is done (submitit's view): read the queue every ``poll_s``, log each change of a
        job's Slurm state and pending reason (a long queue reads as a queue, not a hang), and end the sweep when
        a job has pended past ``pending_grace_s`` for a reason that never resolves."""
        watch = cluster.QueueWatch(self.pending_grace_s)
        recheck: set[str] = set()
        gone: set[str] = set()
        while True:
            left = [job for job in jobs if not job.done(force_check=job.job_id in recheck)]
            if not left:
                return
            rows = cluster.queue([job.job_id for job in left])
            if rows is None:
                time.sleep(self.poll_s)
                continue
            rows = {job.job_id: rows[job.job_id] for job in left if job.job_id in rows}
            # a job that just ended or left the queue: ask submitit (sacct) once now, not at its own pace (which
            # slows to every 10 minutes)
            recheck = {job.job_id for job in left if job.job_id not in rows and job.job_id in watch.seen} - gone
            gone |= recheck
            for job_id, state, reason in watch.update(rows, time.time()):
                shown = f" ({reason})" if reason and reason != "None" else ""
                log.info("Slurm job %s (%s): %s%s", job_id, labels[job_id], state, shown)
                if state not in slurm.LIVE:
                    recheck.add(job_id)
            stuck = watch.stuck(time.time())
            if stuck:
                self._stuck(stuck, jobs, labels, n_jobs, watch)
            time.sleep(self.poll_s)

    def _stuck(self, stuck: dict, jobs: list, labels: dict[str, str], n_jobs: int, watch) -> None:
        """Jobs that can never start: cancel the sweep's jobs, mark KILLED the run of any that had started, and
        end the sweep with one line naming each reason and the override that fixes it."""
        by_reason: dict[str, list[str]] = {}
        for job_id, (reason, meaning, fix) in sorted(stuck.items()):
            by_reason.setdefault(reason.split(",")[0], []).append(job_id)
        parts = []
        for word, ids in by_reason.items():
            _, meaning, fix = stuck[ids[0]]
            shown = ", ".join(f"{i} ({labels[i]})" for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3
                                                                         else "")
            parts.append(f"{word} for Slurm job{'s' * (len(ids) > 1)} {shown}: {meaning}; {fix}")
        cancelled = cluster.cancel([job.job_id for job in jobs])
        ran = [job for job in jobs if watch.seen.get(job.job_id, ("PENDING",))[0] != "PENDING"]
        if cancelled is None:
            for job in ran:  # they end within Slurm's KillWait; then their runs are marked KILLED
                while slurm.attempt_state(job.job_id) in slurm.WAITING:
                    time.sleep(self.poll_s)
                for attempt in range(slurm.attempts(job.job_id)):
                    self._kill_runs(job.job_id, attempt, slurm.attempt_state(job.job_id, attempt) or "CANCELLED")
        done = ("the sweep's Slurm jobs were cancelled" if cancelled is None else
                f"the sweep's Slurm jobs could not be cancelled ({cancelled}): scancel {jobs[0].job_id.split('_')[0]}")
        message = (f"{len(stuck)} of {n_jobs} jobs can never start: Slurm keeps them PENDING with reason "
                   f"{'; '.join(parts)}. After {self.pending_grace_s:g} s of that, {done}; re-run the same command "
                   f"once fixed (jobs with a FINISHED run are skipped)")
        self._tag_parent(message)
        raise SweepFailed(f"synbench: error: {message}")

    def _executor(self):
        """A submitit executor with this launcher's parameters (the plugin's keys: generic ones as they are,
        Slurm-specific ones prefixed)."""
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster=self._EXECUTOR,
                                         **{f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")})
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def _outcome(self, job, overrides) -> tuple[JobReturn, str | None]:
        """Wait for ``job``, through Slurm's requeues (a lost node); its JobReturn, and why it did not finish
        (None when it did)."""
        for attempt in itertools.count():
            error = job.exception()  # waits; None when the job's function returned
            if error is None:
                ret = job.results()[0]
                if ret.status == JobStatus.COMPLETED:
                    return ret, None
                stop = slurm.scheduler_stop(ret._return_value)
                return ret, f"killed by Slurm: {stop}" if stop else first_line(ret._return_value)
            # how the attempt ended: CANCELLED, TIMEOUT, NODE_FAIL, FAILED, ...
            state = (slurm.attempt_state(job.job_id, attempt) or job.state).split()[0]
            self._kill_runs(job.job_id, attempt, state)
            if slurm.attempt_state(job.job_id) not in slurm.WAITING:
                return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error), \
                    f"Slurm state {state}"
            log.warning("Slurm requeued job %s after %s; waiting for its next attempt", job.job_id, state)
            while slurm.attempt_state(job.job_id) in slurm.WAITING:  # submitit counts the job as done: watch it here
                time.sleep(self.poll_s)

    def _kill_runs(self, job_id: str, attempt: int, state: str) -> None:
        parent = os.environ.get(PARENT_ENV)
        if parent:
            try:
                tracker_from(self.config).kill_runs_of_slurm_job(parent, job_id, attempt, state)
            except Exception as err:  # the store away: the next run of the job marks it (heartbeat, sacct)
                log.warning("could not mark the run of Slurm job %s KILLED: %s", job_id, first_line(err))

    def _fail(self, failed: list[str], n_jobs: int) -> None:
        message = (f"{len(failed)} of {n_jobs} jobs did not finish: {'; '.join(failed)}. Their logs are in "
                   f"{self.params['submitit_folder'].replace('%j', '<job id>')}; re-run the same command to run "
                   f"only the jobs without a FINISHED run (resume)")
        self._tag_parent(message)
        raise SweepFailed(f"synbench: error: {message}")

    def _tag_parent(self, message: str) -> None:
        if os.environ.get(PARENT_ENV):  # a sweep of the callback's, whose tracking config is then set
            tag_sweep_error(tracker_from(self.config).uri, message)

"""Hydra's Slurm launcher (the submitit plugin) with what a sweep on a cluster needs beyond submitting.

The plugin submits every job, even one a FINISHED run already did, and returns at the first job that does not
finish, with a traceback, leaving the other jobs unwatched and the dead job's run RUNNING (Slurm killed its
process, which could not end it). This launcher submits only the jobs without a FINISHED run (resume: no queue
wait for done work); waits for every job; marks KILLED, with Slurm's state, the run of each job Slurm ended
(cancelled, timed out, node lost); and ends a failed sweep with one line that names each failed job and says
that re-running the same command runs only those. ``conf/hydra/launcher/slurm.yaml`` selects it, under its
registered name in ``synbench/_hydra/hydra_plugins/synbench_launcher``.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher
from omegaconf import OmegaConf, open_dict

from synbench.config import job_hash
from synbench.encoders.base import first_line
from synbench.runner import reuse_finished
from synbench.tracking import slurm
from synbench.tracking.mlflow_run import PARENT_ENV
from synbench.tracking.sweep import tracker_from

log = logging.getLogger(__name__)
REQUEUE_POLL_S = 5  # how often a requeued job's state is read while it waits for its next attempt


class SweepFailed(SystemExit):
    """A sweep with jobs that did not finish: one line for the user, exit status 1 (no traceback)."""


class SlurmLauncher(PluginSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
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
            # the jobs run the plugin's own class (importable on every node); this one only launches and watches
            plain = PluginSlurmLauncher.__new__(PluginSlurmLauncher)
            plain.__dict__.update(self.__dict__)
            nums = [n for n, _ in todo]
            jobs = self._executor().map_array(plain, [ov for _, ov in todo], ["hydra.sweep.dir"] * len(todo), nums,
                                              [f"job_id_for_{n}" for n in nums], [Singleton.get_state()] * len(todo))
            for (num, overrides), job in zip(todo, jobs):
                log.info("\t#%d : %s -> Slurm job %s", num, names[num], job.job_id)
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
        for i, overrides in enumerate(job_overrides):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]  # what the job itself sees (and hashes)
            if not cfg.get("resume", False):
                continue
            config_hash = job_hash(cfg)
            done = tracker.finished_run(config_hash, kinds=("job", "comparison"))
            if done is not None:
                summary = reuse_finished(done, tracker, config_hash, sweep_dir,
                                         done.data.tags.get("synbench.kind", "job"))
                yield initial_job_idx + i, JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                                                     _return_value=summary)

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
                time.sleep(REQUEUE_POLL_S)

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
        parent = os.environ.get(PARENT_ENV)
        if parent:
            from mlflow.tracking import MlflowClient

            try:
                MlflowClient(tracker_from(self.config).uri).set_tag(parent, "synbench.error", message[:5000])
            except Exception as err:
                log.warning("could not tag the sweep's parent run: %s", first_line(err))
        raise SweepFailed(f"synbench: error: {message}")

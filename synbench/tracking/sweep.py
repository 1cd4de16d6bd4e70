"""Hydra callback that groups a multirun under one MLflow parent run.

In the launcher process, before any job starts: connect (this also creates/migrates a new SQLite store, which
parallel jobs must not race on), open a parent run with the client API (never the fluent active run: the basic
launcher runs jobs in this same process), and export its id; every job nests under it. At the end the parent
is FINISHED, or FAILED when a child failed or the sweep died.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from synbench.config import redact
from synbench.tracking.mlflow_run import PARENT_ENV, MlflowTracker, process_tags

log = logging.getLogger(__name__)


def tracker_from(cfg: DictConfig) -> MlflowTracker:
    t = cfg.tracking
    return MlflowTracker(t.uri, t.experiment, t.artifact_location, t.connect_timeout_s, t.run_name, t.heartbeat_s,
                         t.stale_after_s)


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        tracker = tracker_from(config)
        exp_id = tracker.connect()
        tracker.kill_stale_sweeps()
        sweep_dir = str(config.hydra.sweep.dir)
        overrides = redact(" ".join(config.hydra.overrides.task))
        client = MlflowClient(tracker.uri)
        run = client.create_run(exp_id, run_name=f"sweep {Path(sweep_dir).name}", tags={
            "synbench.kind": "sweep", "synbench.sweep_dir": sweep_dir, "synbench.sweep_overrides": overrides,
            **process_tags()})
        self.parent_id, self.uri = run.info.run_id, tracker.uri
        os.environ[PARENT_ENV] = self.parent_id
        atexit.register(self._close, "FAILED")  # the sweep died before on_multirun_end
        log.info("MLflow parent run %s for sweep %s", self.parent_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._close(None)

    def _close(self, status: str | None) -> None:
        """End the parent: FAILED when it died (``status``) or a job of the sweep has no FINISHED run (an
        attempt that a requeue superseded is KILLED beside its FINISHED re-run, and the job counts as done);
        tag ``synbench.jobs`` counts its runs by status. A reason a launcher already gave is kept."""
        from mlflow.tracking import MlflowClient

        if self.parent_id is None:
            return
        parent, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        try:
            client = MlflowClient(self.uri)
            run = client.get_run(parent)
            if run.info.lifecycle_stage == "deleted":  # the launcher refused the sweep before any job ran
                return
            runs = client.search_runs([run.info.experiment_id], max_results=10000,
                                      filter_string=f"tags.mlflow.parentRunId = '{parent}'")
            jobs = {r.data.tags.get("synbench.config_hash") for r in runs}
            missing = jobs - {r.data.tags.get("synbench.config_hash") for r in runs if r.info.status == "FINISHED"}
            status = status or ("FAILED" if missing else "FINISHED")
            counts = Counter(r.info.status for r in runs)
            reused = sum(k.startswith("synbench.reused.") for k in run.data.tags)
            summary = ", ".join([f"{n} {s}" for s, n in sorted(counts.items())] + [f"{reused} reused"] * bool(reused))
            client.set_tag(parent, "synbench.jobs", summary or "no job ran")
            if status == "FAILED" and "synbench.error" not in run.data.tags:
                client.set_tag(parent, "synbench.error", f"{len(missing)} of {len(jobs)} jobs have no FINISHED run "
                                                         f"({summary})" if missing else "the sweep did not complete")
            client.set_terminated(parent, status=status)
        except Exception as err:  # closing is best effort: never mask the sweep's own outcome
            log.warning("could not close MLflow parent run %s: %s", parent, err)

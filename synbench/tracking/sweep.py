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
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from synbench.tracking.mlflow_run import PARENT_ENV, MlflowTracker, process_tags

log = logging.getLogger(__name__)


def tracker_from(cfg: DictConfig) -> MlflowTracker:
    t = cfg.tracking
    return MlflowTracker(t.uri, t.experiment, t.artifact_location, t.connect_timeout_s, t.run_name)


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
        overrides = " ".join(config.hydra.overrides.task)
        client = MlflowClient(tracker.uri)
        run = client.create_run(exp_id, run_name=f"sweep {Path(sweep_dir).name}", tags={
            "synbench.kind": "sweep", "synbench.sweep_dir": sweep_dir, "synbench.sweep_overrides": overrides,
            **process_tags()})
        self.parent_id, self.uri = run.info.run_id, tracker.uri
        os.environ[PARENT_ENV] = self.parent_id
        atexit.register(self._close, "FAILED")  # the sweep died before on_multirun_end
        log.info("MLflow parent run %s for sweep %s", self.parent_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        if self.parent_id is None:
            return
        client = MlflowClient(self.uri)
        unfinished = client.search_runs(
            [client.get_run(self.parent_id).info.experiment_id], max_results=1,
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}' and attributes.status != 'FINISHED'")
        self._close("FAILED" if unfinished else "FINISHED")

    def _close(self, status: str) -> None:
        from mlflow.tracking import MlflowClient

        if self.parent_id is None:
            return
        parent, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        try:
            MlflowClient(self.uri).set_terminated(parent, status=status)
        except Exception as err:  # closing is best effort: never mask the sweep's own outcome
            log.warning("could not close MLflow parent run %s: %s", parent, err)

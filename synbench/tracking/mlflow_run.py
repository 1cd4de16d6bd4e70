"""MLflow: connect (with a fast reachability check), one run per job nested under its sweep's parent, and a
generic logger for ``MetricResult``s. mlflow is imported lazily: it costs seconds and config tools need none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from synbench.metrics import MetricResult

log = logging.getLogger(__name__)

PARENT_ENV = "SYNBENCH_PARENT_RUN_ID"  # set by the sweep callback; every job of the sweep nests under it
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable, bad URI)."""


@contextlib.contextmanager
def fast_fail(timeout_s: float):
    """No retries and a short timeout for a reachability check (an unreachable server is one line in seconds,
    not minutes of backoff); jobs keep MLflow's retries for their logging."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, timeout_s)))}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on a local store (light settings: one worker, no job runner)."""
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_bin} ui --backend-store-uri {uri} "
            f"--workers 1 --host 127.0.0.1 --port 5000")


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, artifact_location: str | None, connect_timeout_s: float,
                 run_name: str | None = None):
        self.uri = str(uri)
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.connect_timeout_s = float(connect_timeout_s)
        self.run_name = run_name
        self.experiment_id: str | None = None

    @property
    def is_local(self) -> bool:
        return urlparse(self.uri).scheme == "sqlite"

    def connect(self) -> str:
        """Check the store answers, create the experiment if needed; returns its id. One-line errors."""
        import mlflow
        from mlflow.tracking import MlflowClient

        scheme = urlparse(self.uri).scheme
        if scheme not in ("sqlite", "http", "https", "postgresql", "mysql", "databricks", "file"):
            raise TrackingError(f"tracking.uri={self.uri!r} has an unsupported scheme; use sqlite:///abs/path.db "
                                f"or http(s)://host:port of an MLflow server")
        if scheme == "sqlite":
            Path(urlparse(self.uri).path).parent.mkdir(parents=True, exist_ok=True)
        try:
            with fast_fail(self.connect_timeout_s):
                client = MlflowClient(self.uri)
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    location = None
                    if self.artifact_location:
                        Path(self.artifact_location).mkdir(parents=True, exist_ok=True)
                        location = Path(self.artifact_location).resolve().as_uri()
                    exp_id = client.create_experiment(
                        self.experiment, artifact_location=location,
                        tags={"mlflow.experimentKind": "custom_model_development"})
                else:
                    exp_id = exp.experiment_id
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise TrackingError(f"MLflow store tracking.uri={self.uri!r} is unreachable or unusable: {first}") from err
        mlflow.set_tracking_uri(self.uri)
        self.experiment_id = exp_id
        return exp_id

    @contextlib.contextmanager
    def job_run(self, run_name: str, params: dict, tags: dict, parent_run_id: str | None = None
                ) -> Iterator["JobRun"]:
        """An MLflow run for one job: FINISHED on success; on any error FAILED with the error as a tag. It nests
        under ``parent_run_id`` (a comparison's pairs), else under the sweep's parent when there is one."""
        import mlflow

        if self.experiment_id is None:
            self.connect()
        parent = parent_run_id or os.environ.get(PARENT_ENV) or None
        with mlflow.start_run(run_name=run_name, experiment_id=self.experiment_id, parent_run_id=parent,
                              nested=parent is not None, tags=tags) as run:
            job = JobRun(run.info.run_id, run.info.experiment_id)
            try:
                job.log_params(params)
                yield job
            except BaseException as err:
                with contextlib.suppress(Exception):
                    mlflow.set_tag("synbench.error", f"{type(err).__name__}: {err}"[:5000])
                raise

    def finished_run(self, config_hash: str, kind: str = "job"):
        """The newest FINISHED run of the job with this ``synbench.config_hash`` (None when there is none),
        after marking KILLED every RUNNING run of it whose process is gone: a job killed with SIGKILL never
        ended its run, and nothing may trust it. FAILED and KILLED runs are never reused."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        runs = client.search_runs([self.experiment_id], order_by=["attributes.start_time DESC"],
                                  filter_string=f"tags.`synbench.config_hash` = '{config_hash}' "
                                                f"and tags.`synbench.kind` = '{kind}'")
        self._kill_stale(client, runs, "a later run of the same job")
        return next((r for r in runs if r.info.status == "FINISHED"), None)

    def kill_stale_sweeps(self) -> None:
        """Mark KILLED the sweep parents left RUNNING by a launcher process that died (killed, or its tracking
        server went away before it could close the parent), so the UI never shows a dead sweep as running."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        runs = client.search_runs([self.experiment_id], filter_string="tags.`synbench.kind` = 'sweep' and "
                                                                       "attributes.status = 'RUNNING'")
        self._kill_stale(client, runs, "the next sweep")

    @staticmethod
    def _kill_stale(client, runs, finder: str) -> None:
        for run in runs:
            if run.info.status == "RUNNING" and _process_gone(run.data.tags):
                tags = run.data.tags
                client.set_tag(run.info.run_id, "synbench.error",
                               f"stale: its process {tags['synbench.pid']} on {tags['synbench.host']} is gone "
                               f"(killed without ending the run); found by {finder}")
                client.set_terminated(run.info.run_id, status="KILLED")
                log.warning("marked stale run %s KILLED: its process is gone", run.info.run_id)

    def record_reuse(self, config_hash: str, run_id: str) -> None:
        """In a sweep, the parent run records which earlier run stands for this job."""
        from mlflow.tracking import MlflowClient

        parent = os.environ.get(PARENT_ENV)
        if parent:
            MlflowClient(self.uri).set_tag(parent, f"synbench.reused.{config_hash}", run_id)

    def run_url(self, job: "JobRun") -> str:
        base = self.uri if not self.is_local else "http://127.0.0.1:5000"
        # the query opens MLflow 3's classic "model training" view instead of its GenAI view
        return f"{base.rstrip('/')}/#/experiments/{job.experiment_id}/runs/{job.run_id}?workflowType=machine_learning"


SLURM_TAGS = {"SLURM_JOB_ID": "synbench.slurm_job_id", "SLURM_ARRAY_JOB_ID": "synbench.slurm_array_job_id",
              "SLURM_ARRAY_TASK_ID": "synbench.slurm_array_task_id", "SLURM_CLUSTER_NAME": "synbench.slurm_cluster"}


def process_tags() -> dict[str, str]:
    """Who runs a job: what a later run checks to tell a live RUNNING run from one whose process died, and
    under Slurm which job it is (to find it in sacct, or ask the scheduler what became of it)."""
    return {"synbench.host": socket.gethostname(), "synbench.pid": str(os.getpid()),
            **{tag: os.environ[var] for var, tag in SLURM_TAGS.items() if os.environ.get(var)}}


def _process_gone(tags: dict) -> bool:
    """A RUNNING run is stale when it was started on this host by a process that no longer exists. Runs of
    other hosts cannot be checked from here and are left alone (the job is re-run all the same)."""
    if tags.get("synbench.host") != socket.gethostname() or not tags.get("synbench.pid", "").isdigit():
        return False
    try:
        os.kill(int(tags["synbench.pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class JobRun:
    """Log into one active run."""

    def __init__(self, run_id: str, experiment_id: str):
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: dict) -> None:
        import mlflow

        mlflow.log_params({k: (str(v) if not isinstance(v, (int, float, bool)) else v) for k, v in params.items()})

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        self._batch([(k, v, step or 0) for k, v in values.items()])

    def log_result(self, result: MetricResult) -> None:
        """Scalars as metrics, curves as step metrics plus their x grids, tables as JSON artifacts."""
        import mlflow

        prefix = result.name
        points = [(f"{prefix}/{k}", v, 0) for k, v in result.scalars.items()]
        grids = {}
        for key, curve in result.curves.items():
            points += [(f"{prefix}/{key}", y, i) for i, y in enumerate(curve.y)]
            grids[curve.x_name] = curve.x
        for x_name, xs in grids.items():
            points += [(f"{prefix}/grid/{x_name}", x, i) for i, x in enumerate(xs)]
        self._batch(points)
        for name, table in result.tables.items():
            mlflow.log_dict(table, f"tables/{prefix}/{name}.json")
        if result.params:
            self.log_params({f"{prefix}.{k}": v for k, v in result.params.items()})

    def log_files(self, files: list[Path], root: Path) -> None:
        import mlflow

        for f in files:
            rel = Path(f).relative_to(root).parent.as_posix()
            mlflow.log_artifact(str(f), artifact_path=None if rel == "." else rel)

    def log_logs(self, folder: Path) -> None:
        """The job's own log file(s) (Hydra writes ``<job name>.log`` into the job folder), as they stand now."""
        import mlflow

        for f in sorted(Path(folder).glob("*.log")):
            mlflow.log_artifact(str(f), artifact_path="logs")

    def log_dir(self, path: Path, artifact_path: str) -> None:
        import mlflow

        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)

    def _batch(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v) if v is not None else float("nan"), now, int(s)) for k, v, s in points]
        client = MlflowClient()
        for i in range(0, len(metrics), MAX_BATCH):
            client.log_batch(self.run_id, metrics=metrics[i:i + MAX_BATCH], synchronous=True)

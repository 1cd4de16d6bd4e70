"""MLflow: connect (with a fast reachability check), one run per job nested under its sweep's parent, and a
generic logger for ``MetricResult``s. mlflow is imported lazily: it costs seconds and config tools need none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse, urlunparse

from synbench.config import redact

from synbench.metrics import MetricResult
from synbench.tracking import slurm

log = logging.getLogger(__name__)

PARENT_ENV = "SYNBENCH_PARENT_RUN_ID"  # set by the sweep callback; every job of the sweep nests under it
HEARTBEAT = "synbench.heartbeat"  # UTC time of a RUNNING job's last sign of life
SLURM_STATE = "synbench.slurm_state"  # what Slurm said of a job it ended (CANCELLED, TIMEOUT, NODE_FAIL, ...)
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
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {shlex.quote(str(mlflow_bin))} ui --backend-store-uri "
            f"{shlex.quote(uri)} --workers 1 --host 127.0.0.1 --port 5000")  # quoted: paths may hold spaces


def without_credentials(uri: str) -> str:
    """An http(s) ``tracking.uri`` with its ``user:password@`` moved into MLflow's own variables
    (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, inherited by the jobs this process starts), so
    MLflow never prints it; other URIs as given (every message shows them through ``redact``)."""
    parts = urlparse(uri)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username or "")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    global _said_credentials
    if not _said_credentials:
        log.warning("tracking.uri holds a password: it is handed to MLflow as MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD and never logged; set those variables instead (docs/slurm.md)")
        _said_credentials = True
    return urlunparse(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


_said_credentials = False


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, artifact_location: str | None, connect_timeout_s: float,
                 run_name: str | None = None, heartbeat_s: float = 60, stale_after_s: float = 600):
        self.uri = without_credentials(str(uri))
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        if self.heartbeat_s < 0 or not self.stale_after_s > 2 * self.heartbeat_s:
            raise TrackingError(f"tracking.heartbeat_s={heartbeat_s}, tracking.stale_after_s={stale_after_s}: need "
                                f"heartbeat_s >= 0 and stale_after_s > 2 x heartbeat_s (a late beat is not a death)")
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
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        scheme = urlparse(self.uri).scheme
        if scheme not in ("sqlite", "http", "https", "postgresql", "mysql", "databricks", "file"):
            raise TrackingError(f"tracking.uri={redact(self.uri)!r} has an unsupported scheme; use sqlite:///abs/path.db "
                                f"or http(s)://host:port of an MLflow server")
        try:
            with fast_fail(self.connect_timeout_s), self._creation_lock():
                client = MlflowClient(self.uri)
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    location = None
                    if self.artifact_location:
                        Path(self.artifact_location).mkdir(parents=True, exist_ok=True)
                        location = Path(self.artifact_location).resolve().as_uri()
                    try:
                        exp_id = client.create_experiment(
                            self.experiment, artifact_location=location,
                            tags={"mlflow.experimentKind": "custom_model_development"})
                    except MlflowException:  # another sweep created it meanwhile: use theirs
                        exp = client.get_experiment_by_name(self.experiment)
                        if exp is None:
                            raise
                        exp_id = exp.experiment_id
                else:
                    exp_id = exp.experiment_id
        except TrackingError:
            raise
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise TrackingError(f"MLflow store tracking.uri={redact(self.uri)!r} is unreachable or unusable: "
                                f"{redact(first)}") from err
        mlflow.set_tracking_uri(self.uri)
        self.experiment_id = exp_id
        return exp_id

    @property
    def db_path(self) -> Path | None:
        """The SQLite file of a local store; None for a server."""
        return Path("/" + urlparse(self.uri).path.lstrip("/")) if self.is_local else None

    def exists(self) -> bool:
        """Whether there is a store to read: a server always (``connect`` checks it answers); a local store once
        its file exists. A job reads a missing local store as empty and creates it with its run, so a job
        refused before its run leaves no store file behind."""
        if not self.is_local:
            return True
        if self.db_path.exists():
            return True
        self._check_creatable()
        return False

    def _check_creatable(self) -> None:
        """A local store's folder can be made (one line naming tracking.uri when it cannot: below a file, on a
        read-only filesystem), before any heavy work."""
        folder = self.db_path.parent
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            why = "is a file" if not existing.is_dir() else "is not writable"
            raise TrackingError(f"tracking.uri={redact(self.uri)!r}: cannot create the store there ({existing} "
                                f"{why}); point paths.outputs (or tracking.uri) at a writable folder")

    @contextlib.contextmanager
    def _creation_lock(self):
        """Two jobs started at once on a new local store must not both create and migrate it (the second would
        fail "Online migration expected to match one row"): the first to hold an exclusive lock on the store's
        folder creates it, the other then finds it ready. Servers serialise this themselves."""
        if not self.is_local:
            yield
            return
        import fcntl

        self._check_creatable()
        folder = self.db_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking.uri={redact(self.uri)!r}: cannot create its folder ({err.strerror}: "
                                f"{folder}); point paths.outputs (or tracking.uri) at a writable folder") from None
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def job_run(self, run_name: str, params: dict, tags: dict, parent_run_id: str | None = None
                ) -> Iterator["JobRun"]:
        """An MLflow run for one job, nested under ``parent_run_id`` (a comparison's pairs), else under the
        sweep's parent when there is one. While it runs a heartbeat tag says it lives; it ends FINISHED on
        success, KILLED when the scheduler or the user stopped it, FAILED on any other error (the error a tag).
        A run another process has marked KILLED meanwhile (a requeued attempt superseded it) stays KILLED."""
        import mlflow

        if self.experiment_id is None:
            self.connect()
        parent = parent_run_id or os.environ.get(PARENT_ENV) or None
        run = mlflow.start_run(run_name=run_name, experiment_id=self.experiment_id, parent_run_id=parent,
                               nested=parent is not None, tags={**tags, HEARTBEAT: _utc_now()})
        job = JobRun(run.info.run_id, run.info.experiment_id)
        try:
            with Heartbeat(self.uri, job.run_id, self.heartbeat_s):
                job.log_params(params)
                yield job
        except BaseException as err:
            stopped = slurm.scheduler_stop(err)  # Slurm's state when the scheduler stopped the job
            reason = str(err) or ("SIGINT (Ctrl-C)" if isinstance(err, KeyboardInterrupt) else "")
            with contextlib.suppress(Exception):
                mlflow.set_tags({"synbench.error": redact(f"{type(err).__name__}: {reason}")[:5000],
                                 **({SLURM_STATE: stopped} if stopped else {})})
            with contextlib.suppress(Exception):  # the job's own error is what the caller must see
                self._end(job.run_id, "KILLED" if stopped or isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        self._end(job.run_id, "FINISHED")

    def _end(self, run_id: str, status: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        run = MlflowClient(self.uri).get_run(run_id)
        if run.info.status != "RUNNING":  # ended by another process: keep its verdict
            log.warning("run %s was marked %s by another process (%s); it stays so", run_id, run.info.status,
                        run.data.tags.get("synbench.error", ""))
            status = run.info.status
        mlflow.end_run(status)

    def finished_run(self, config_hash: str, kinds: tuple[str, ...] = ("job",), slurm_job: str | None = None):
        """The newest FINISHED run of the job with this ``synbench.config_hash`` (None when there is none),
        after marking KILLED every RUNNING run of it that can no longer be running (``why_stale``): nothing may
        trust a run whose job died without ending it. FAILED and KILLED runs are never reused. ``slurm_job``:
        only a run made by that Slurm job (an earlier attempt of it)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        runs = client.search_runs([self.experiment_id], order_by=["attributes.start_time DESC"],
                                  filter_string=f"tags.`synbench.config_hash` = '{config_hash}'")
        runs = [r for r in runs if r.data.tags.get("synbench.kind") in kinds]
        runs = self._kill_stale(client, runs, "a later run of the same job")
        return next((r for r in runs if r.info.status == "FINISHED"
                     and (slurm_job is None or slurm.job_name(r.data.tags) == slurm_job)), None)

    def kill_stale_sweeps(self) -> None:
        """Mark KILLED the sweep parents left RUNNING by a launcher process that died (killed, or its tracking
        server went away before it could close the parent), so the UI never shows a dead sweep as running."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        runs = client.search_runs([self.experiment_id], filter_string="tags.`synbench.kind` = 'sweep' and "
                                                                       "attributes.status = 'RUNNING'")
        self._kill_stale(client, runs, "the next sweep")

    def kill_runs_of_slurm_job(self, parent_run_id: str, job: str, attempt: int, state: str) -> int:
        """Slurm ended ``attempt`` of ``job`` (array task ``<array>_<task>``) in ``state`` without its process
        ending its run: mark KILLED its runs under the sweep's parent still RUNNING; returns how many."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        runs = client.search_runs([client.get_run(parent_run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                                "attributes.status = 'RUNNING'")
        mine = [r for r in runs if slurm.job_name(r.data.tags) == job
                and int(r.data.tags.get("synbench.slurm_attempt") or 0) == attempt]
        for run in mine:
            self._mark_killed(client, run, f"Slurm ended job {job} (attempt {attempt}) as {state} before its run "
                                           f"ended; found by the launcher", state)
        return len(mine)

    def _kill_stale(self, client, runs, finder: str) -> list:
        """``runs`` as they stand after marking KILLED those that can no longer be running."""
        out = []
        for run in runs:
            stale = why_stale(run.data.tags, self.stale_after_s) if run.info.status == "RUNNING" else None
            if stale:
                self._mark_killed(client, run, f"stale: {stale[0]}; found by {finder}", stale[1])
                run = client.get_run(run.info.run_id)
            out.append(run)
        return out

    @staticmethod
    def _mark_killed(client, run, reason: str, slurm_state: str | None) -> None:
        client.set_tag(run.info.run_id, "synbench.error", reason)
        if slurm_state:
            client.set_tag(run.info.run_id, SLURM_STATE, slurm_state)
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("marked run %s KILLED: %s", run.info.run_id, reason)

    def record_reuse(self, config_hash: str, run_id: str) -> None:
        """In a sweep, the parent run records which earlier run stands for this job."""
        from mlflow.tracking import MlflowClient

        parent = os.environ.get(PARENT_ENV)
        if parent:
            MlflowClient(self.uri).set_tag(parent, f"synbench.reused.{config_hash}", run_id)

    def run_url(self, job: "JobRun") -> str:
        base = redact(self.uri) if not self.is_local else "http://127.0.0.1:5000"
        # the query opens MLflow 3's classic "model training" view instead of its GenAI view
        return f"{base.rstrip('/')}/#/experiments/{job.experiment_id}/runs/{job.run_id}?workflowType=machine_learning"


def tag_sweep_error(uri: str, message: str, timeout_s: float = 10) -> None:
    """The running sweep's parent run (``PARENT_ENV``) keeps why the sweep failed in ``synbench.error``; best
    effort: the caller has printed the line, and its own error is what the user must see."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        from mlflow.tracking import MlflowClient

        try:
            with fast_fail(timeout_s):
                MlflowClient(uri).set_tag(parent, "synbench.error", message[:5000])
        except Exception as err:  # noqa: BLE001
            log.warning("could not tag the sweep's parent run %s: %s", parent, str(err).strip()[:300])


def process_tags() -> dict[str, str]:
    """Who runs a job: what a later run checks to tell a live RUNNING run from one whose process died, and
    under Slurm which job and attempt it is (to ask the scheduler what became of it)."""
    return {"synbench.host": socket.gethostname(), "synbench.pid": str(os.getpid()), **slurm.job_tags()}


def why_stale(tags: dict, stale_after_s: float, now: float | None = None,
              state_of=slurm.attempt_state) -> tuple[str, str | None] | None:
    """Why a RUNNING run can no longer be running, with Slurm's state of its job when known; None when it may
    be running. In order: on the host that started it, whether its process exists (no subprocess, the fast
    path); under Slurm, the state of its job's attempt (sacct, else scontrol), from any host; else its
    heartbeat, older than ``stale_after_s``."""
    host, pid = tags.get("synbench.host"), tags.get("synbench.pid", "")
    job, attempt = slurm.job_name(tags), int(tags.get("synbench.slurm_attempt") or 0)
    if host == socket.gethostname() and pid.isdigit():
        if _process_alive(int(pid)):
            return None
        state = state_of(job, attempt) if job else None
        return (f"its process {pid} on {host} is gone"
                + (f" (Slurm job {job} attempt {attempt}: {state})" if state else ""), state)
    if job:
        state = state_of(job, attempt)
        if state is not None:
            return None if state in slurm.LIVE else (f"Slurm job {job} attempt {attempt} is {state}", state)
    beat = tags.get(HEARTBEAT)
    if beat:
        age = (time.time() if now is None else now) - _parse_utc(beat)
        if age > stale_after_s:
            return (f"no heartbeat from {host} (pid {pid}) for {age:.0f} s, over tracking.stale_after_s="
                    f"{stale_after_s:g}", None)
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_utc(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


class Heartbeat:
    """While a job runs, a daemon thread rewrites its run's heartbeat tag every ``every_s`` seconds: from any
    host, a RUNNING run whose heartbeat is older than ``tracking.stale_after_s`` is known dead. A failed beat
    (the server briefly away) is logged once and retried at the next one."""

    def __init__(self, uri: str, run_id: str, every_s: float):
        self.uri, self.run_id, self.every_s = uri, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="synbench-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _beat(self) -> None:
        from mlflow.tracking import MlflowClient

        client, warned = MlflowClient(self.uri), False
        while not self._stop.wait(self.every_s):
            try:
                client.set_tag(self.run_id, HEARTBEAT, _utc_now())
            except Exception as err:
                if not warned:
                    log.warning("heartbeat of run %s failed (%s); retrying every %g s", self.run_id, err,
                                self.every_s)
                    warned = True


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

    def log_dataset(self, name: str, source: str, splits: dict[str, tuple[str, int]]) -> None:
        """The real data a job read as MLflow dataset inputs, one per split (``{split: (digest, images)}``), so
        the runs table's Dataset column shows what each run was computed on, by content."""
        import mlflow
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        for split, (digest, images) in splits.items():
            mlflow.log_input(MetaDataset(LocalArtifactDatasetSource(str(source)), name=name, digest=digest),
                             context=split, tags={"images": str(images)})

    def log_files(self, files: list[Path], root: Path) -> None:
        import mlflow

        for f in files:
            rel = Path(f).relative_to(root).parent.as_posix()
            mlflow.log_artifact(str(f), artifact_path=None if rel == "." else rel)

    def log_logs(self, folder: Path) -> None:
        """The job's own log file(s) (Hydra writes ``<job name>.log`` into the job folder), as they stand now."""
        self._log_redacted(sorted(Path(folder).glob("*.log")), Path(folder), "logs")

    def log_dir(self, path: Path, artifact_path: str) -> None:
        """A folder of text files (Hydra's config, overrides and settings), each uploaded with the passwords of
        the URLs in it redacted: a ``tracking.uri`` with ``user:password@`` must not reach the server's store."""
        if Path(path).is_dir():
            self._log_redacted(sorted(f for f in Path(path).rglob("*") if f.is_file()), Path(path), artifact_path)

    @staticmethod
    def _log_redacted(files: list[Path], root: Path, artifact_path: str) -> None:
        import tempfile

        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                copy = Path(tmp) / f.relative_to(root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(redact(f.read_text(errors="replace")))
            if files:
                mlflow.log_artifacts(tmp, artifact_path=artifact_path)

    def _batch(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v) if v is not None else float("nan"), now, int(s)) for k, v, s in points]
        client = MlflowClient()
        for i in range(0, len(metrics), MAX_BATCH):
            client.log_batch(self.run_id, metrics=metrics[i:i + MAX_BATCH], synchronous=True)

"""What every Hydra app of synbench shares (the job, the comparison): where the config lives, which errors are the
user's (one line, no traceback), the skip of work a FINISHED run already did, and the guard that says where the
results are when MLflow fails after they were written. Apps import it; it imports none of them."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import threading
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from synbench.config import build, redact_log_records
from synbench.encoders.base import first_line
from synbench.tracking import TrackingError, slurm
from synbench.tracking.mlflow_run import JobRun, tag_sweep_error
from synbench.tracking.sweep import tracker_from

log = logging.getLogger("synbench")

USER_ERRORS = (ValueError, TrackingError)  # bad config, model, checkpoint, data or tracking URI (EncoderError too)

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # conf/ sits at the repository root
# Hydra loads launchers only from the `hydra_plugins` namespace package; synbench's (the Slurm launcher) is there
PLUGINS_ROOT = str(Path(__file__).resolve().parent / "_hydra")
if PLUGINS_ROOT not in sys.path:
    sys.path.append(PLUGINS_ROOT)


class BadInput(CompactHydraException):
    """A job of a sweep refused its input, run by a launcher in another process (joblib, submitit, Slurm):
    Hydra prints a compact error as its message alone, where any other exception gets a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a container stop, a scheduler's pre-emption) as an interruption: the run
    ends KILLED with this reason, as on Ctrl-C, instead of the process dying with its run left RUNNING."""


STOPS = {Terminated: ("SIGTERM (kill, timeout, a container stop or a pre-emption)", 143),
         KeyboardInterrupt: ("SIGINT (Ctrl-C)", 130)}


@contextlib.contextmanager
def sigterm_interrupts():
    """While a job runs, SIGTERM raises ``Terminated``. Only where SIGTERM would otherwise kill outright (the
    default handler, in the main thread): a handler someone else set (submitit's, under Slurm) is kept."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise Terminated(STOPS[Terminated][0])

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_overrides(argv: list[str], prog: str) -> None:
    """An override Hydra's grammar cannot parse is one line that says how to quote it (Hydra's own error points
    a caret at the first space and links its grammar): a path with spaces needs quotes inside the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            key, _, value = arg.partition("=")
            raise SystemExit(f"{prog}: error: cannot parse the override {arg!r}: a value with spaces or special "
                             f"characters needs quotes inside the override, e.g. '{key}=\"{value}\"' (Hydra's "
                             f"grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)") from None


class RedactLogs(Callback):
    """From Hydra's start, in the launcher and every job: no log line shows a password of a URL (a
    ``tracking.uri`` such as ``http://user:password@host``)."""

    def __init__(self) -> None:
        redact_log_records()


class CheckOutputs(Callback):
    """Before Hydra makes the job's folder under ``paths.outputs``: a folder that cannot be written (read-only,
    below a file) is one line naming the key, not Hydra's traceback from deep inside its launcher."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_writable(config, config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_writable(config, config.hydra.sweep.dir)


def _check_writable(config: DictConfig, job_dir: str) -> None:
    outputs = Path(str(config.paths.outputs))
    try:
        outputs.mkdir(parents=True, exist_ok=True)
        Path(str(job_dir)).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"{config.hydra.job.name}: error: paths.outputs={str(outputs)!r} cannot be written "
                         f"({err.strerror}: {err.filename}); point paths.outputs at a writable folder") from None


def run_in_hydra(run_app, cfg: DictConfig, prog: str, what: str) -> None:
    """Every app's Hydra wrapper: its folder from Hydra; bad input is one line without a traceback. One run
    leaves no folder behind (nothing in it is a result). In a multirun the line also goes to the sweep's parent
    run, and a sweep whose jobs run in this process (Hydra's basic launcher) ends there: every later job would
    wait its turn only to meet, most often, the same bad input. Other launchers report the failed job."""
    redact_log_records()  # a job process of joblib or submitit starts without the launcher's callbacks
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    try:
        with sigterm_interrupts():
            run_app(cfg, output_dir, output_dir / hc.output_subdir)
    except KeyboardInterrupt as err:  # its run (if it had one) is KILLED with the reason: one line, no traceback
        why, code = STOPS[type(err)] if type(err) in STOPS else STOPS[KeyboardInterrupt]
        log.error("%s: the %s was stopped by %s; its MLflow run, if it had started, is KILLED (re-run it: "
                  "finished jobs are skipped)", prog, what, why)
        print(f"{prog}: the {what} was stopped by {why}; its run, if it had started, is KILLED; re-run it "
              f"(finished jobs are skipped); the job's log: {output_dir}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None
    except USER_ERRORS as err:
        log.error("%s", err)
        if hc.mode == RunMode.RUN:
            _drop_if_empty(output_dir, hc.output_subdir)
            raise SystemExit(f"{prog}: error: {err}") from None
        line = f"{prog}: error: job #{hc.job.num} ({hc.job.override_dirname or 'no overrides'}): {err}"
        tag_sweep_error(tracker_from(cfg).uri, line, float(cfg.tracking.connect_timeout_s))
        if hc.launcher._target_.endswith(".BasicLauncher"):
            raise SystemExit(f"{line}; the sweep stops here (re-run it once fixed: finished jobs are skipped)") \
                from None
        raise BadInput(line) from None
    except Exception:
        log.exception("%s failed", what)
        raise


def _drop_if_empty(folder: Path, hydra_subdir: str) -> None:
    """Remove a refused job's folder when it holds only Hydra's copy of the config and the log of the line
    already printed, and its date folder when that is left empty."""
    if folder.is_dir() and all(p.name == hydra_subdir or p.suffix == ".log" for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # only when empty


@contextlib.contextmanager
def results_kept(path: Path):
    """MLflow failing after the results were written (a server outage, say) fails the run, and says where the
    results are: the run is left unfinished, so the next run of the same work (resume) computes and logs it."""
    try:
        yield
    except Exception as err:
        log.error("MLflow logging failed (%s); the results are safe in %s; re-run to log them "
                  "(resume re-runs every run that did not finish)", first_line(err), path)
        raise


def dataset_for(cfg: DictConfig, metrics):
    """The job's dataset, read and checked (one line on bad data), when a metric reads it; else None. A metric
    that needs labels without a labelled dataset is a one-line error; a dataset no metric reads is left unread,
    with a warning (a sweep may hold it fixed over parts that do not read it)."""
    needs = [mt.name for mt in metrics if getattr(mt, "needs_labels", False)]
    if needs and cfg.dataset is None:
        raise ValueError(f"metrics {', '.join(needs)} need a labelled dataset: add dataset=idx|npz|image_folder|hf "
                         f"dataset.path=...")
    if cfg.dataset is None:
        return None
    if not any(getattr(mt, "uses_dataset", False) for mt in metrics):
        log.warning("dataset=%s is set but no metric reads it: it is not loaded (add downstream, logme, spectrum or "
                    "rmqm to metrics, e.g. metrics=[synbench,downstream])", cfg.dataset.name)
        return None
    data = build(cfg.dataset)
    if needs and not data.has_labels:
        raise ValueError(f"metrics {', '.join(needs)} need labels, and dataset.path={str(cfg.dataset.path)!r} holds "
                         f"unlabelled images; put them in one subfolder per class, or drop {', '.join(needs)} "
                         f"(spectrum and rmqm score unlabelled images)")
    return data


def data_digest(cfg: DictConfig) -> str | None:
    """The content digest of the real data a job (or a comparison) reads, part of its identity (``job_hash``);
    None when it reads none. For a launcher that decides, before submitting, which jobs a FINISHED run already
    did: the same answer the job gives itself."""
    if "metrics" in cfg:
        data = dataset_for(cfg, [build(node) for node in cfg.metrics.values()])
    else:
        data = build(cfg.dataset) if cfg.get("dataset") is not None else None
    return data.digest if data is not None else None


def finished_before(cfg: DictConfig, tracker, config_hash: str, kinds: tuple[str, ...] = ("job",)):
    """The FINISHED run that already did this work, or None. With ``resume`` any; without, still the one an
    earlier attempt of this same Slurm job made: Slurm requeues a job whose node it lost, and the new attempt
    starts from scratch, though the first may have finished its run before the node went."""
    if cfg.resume:
        return tracker.finished_run(config_hash, kinds)
    tags = slurm.job_tags()
    if int(tags.get("synbench.slurm_attempt", "0")) > 0:
        return tracker.finished_run(config_hash, kinds, slurm_job=slurm.job_name(tags))
    return None


def reuse_finished(done, tracker, config_hash: str, output_dir: Path, what: str = "job") -> dict:
    """A FINISHED run of the same work exists: skip it, point at it (``resume=false`` re-runs); in a sweep the
    parent run records which run stands for this one."""
    run_id = done.info.run_id
    tracker.record_reuse(config_hash, run_id)
    url = tracker.run_url(JobRun(run_id, done.info.experiment_id))
    log.info("skipping the %s: run %s with config hash %s is FINISHED (%s); resume=false re-runs it",
             what, run_id, config_hash, url)
    print(f"\nSynBench {what} skipped: already FINISHED as run {run_id} ({url}); resume=false re-runs it", flush=True)
    return {"config_hash": config_hash, "reused_run_id": run_id, "run_url": url, "output_dir": str(output_dir),
            "scalars": dict(done.data.metrics)}

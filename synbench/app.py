"""The Hydra entry point: wires config -> data -> encoder -> probe -> metrics -> tracking. No logic lives here
beyond the order of the steps; each step's module owns its checks and its errors."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from synbench.config import build, check_config, flat_params, job_hash, resolve_device
from synbench.data import Split
from synbench.encoders import Precision, embed_mixture
from synbench.encoders.base import first_line
from synbench.encoders.cache import EmbeddingCache
from synbench.encoders.embed import mixture_for
from synbench.encoders.tune import configure_threads, tune_encoder
from synbench.metrics import MetricInputs
from synbench.probes import check_epsilons
from synbench.tracking import TrackingError, write_local_results
from synbench.tracking.mlflow_run import JobRun, process_tags, ui_command
from synbench.tracking.sweep import tracker_from

log = logging.getLogger("synbench")

USER_ERRORS = (ValueError, TrackingError)  # bad config, model, checkpoint, data or tracking URI (EncoderError too)


def run(cfg: DictConfig, output_dir: str | Path, hydra_dir: str | Path | None = None) -> dict:
    """Run one job; returns the summary (also in ``output_dir/results.json`` and the MLflow run)."""
    output_dir = Path(output_dir)
    # 1. cheap checks of everything, before any heavy work or any MLflow run exists
    check_config(cfg)
    check_epsilons(cfg.epsilon.grid)
    device = resolve_device(cfg.device)
    precision = Precision.parse(cfg.embed.precision)
    probe = build(cfg.probe)
    metrics = [build(node) for node in cfg.metrics.values()]
    tracker = tracker_from(cfg)
    tracker.connect()
    config_hash = job_hash(cfg)
    if cfg.resume:
        done = tracker.finished_run(config_hash)
        if done is not None:
            return reuse_finished(done, tracker, config_hash, output_dir)
    configure_threads()
    encoder = build(cfg.model).to(device)
    m = cfg.mixture
    mixture = mixture_for(m, encoder)
    scales = [float(s) for s in m.scales]
    for metric in metrics:
        metric.check(scales, mixture)
    plan = tune_encoder(encoder, device, precision, cfg.embed, images=len(scales) * (m.n_train + m.n_test),
                        largest=max(m.n_train, m.n_test), cache_dir=cfg.cache.tuning_dir)

    job = {"config_hash": config_hash, "device": str(device), "encoder": encoder.identity,
           "num_features": encoder.num_features, "value_range": list(encoder.value_range), "mixture_mean": mixture.mean,
           "embed_plan": plan.params(), "tune_seconds": plan.seconds, "output_dir": str(output_dir)}
    tags = {"synbench.kind": "job", "synbench.model": cfg.model.name, "synbench.config_hash": job["config_hash"],
            "synbench.direction": m.direction, "synbench.weights": encoder.identity["weights"], **process_tags()}
    run_name = cfg.tracking.run_name or _default_run_name(cfg)
    with tracker.job_run(run_name, {**flat_params(cfg), **plan.params()}, tags) as mlrun:
        # 2. the one embedding pass, shared by every metric
        cache = EmbeddingCache(cfg.cache.dir) if cfg.cache.enabled else None
        emb = embed_mixture(encoder, mixture, scales, {Split.train: m.n_train, Split.test: m.n_test}, cfg.seed,
                            plan.batch_size, device, precision, plan.channels_last, cache, cfg.progress)
        # 3. metrics
        inputs = MetricInputs(emb, encoder, mixture, probe, cfg.seed, precision, cfg.progress)
        t0 = time.perf_counter()
        results = [metric.compute(inputs) for metric in metrics]
        job.update(embed_seconds=emb.seconds, images_embedded=emb.images_embedded,
                   metric_seconds=time.perf_counter() - t0, run_id=mlrun.run_id)
        # 4. local files first (kept whatever MLflow does next), then MLflow
        files = write_local_results(output_dir, job, results)
        log.info("results written to %s", output_dir / "results.json")
        with results_kept(output_dir / "results.json"):
            for result in results:
                mlrun.log_result(result)
            mlrun.log_metrics({"job/embed_seconds": emb.seconds, "job/images_embedded": emb.images_embedded,
                               "job/metric_seconds": job["metric_seconds"], "job/tune_seconds": plan.seconds,
                               **({"embed/tuned_images_per_s": plan.images_per_s} if plan.images_per_s else {})})
            mlrun.log_files(files, output_dir)
            mlrun.log_logs(output_dir)
            if hydra_dir is not None:
                mlrun.log_dir(Path(hydra_dir), "hydra")
    summary = {**job, "scalars": {f"{r.name}/{k}": v for r in results for k, v in r.scalars.items()},
               "run_url": tracker.run_url(mlrun)}
    _print_summary(summary, tracker, results)
    return summary


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


def _default_run_name(cfg: DictConfig) -> str:
    try:
        overrides = HydraConfig.get().job.override_dirname
    except ValueError:  # composed outside a Hydra app (tests, notebooks)
        overrides = ""
    return f"{cfg.model.name} {overrides}".strip()


def _print_summary(summary: dict, tracker, results) -> None:
    lines = ["", "SynBench job finished"]
    for r in results:
        for key in r.headline:
            lines.append(f"  {r.name}/{key}: {r.scalars[key]:.4f}")
    lines.append(f"  results: {summary['output_dir']}/results.json")
    lines.append(f"  MLflow run: {summary['run_url']}")
    if tracker.is_local:
        lines.append(f"  open the UI: {ui_command(tracker.uri)}")
    print("\n".join(lines), flush=True)


CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # conf/ sits at the repository root


def run_in_hydra(run_app, cfg: DictConfig, prog: str, what: str) -> None:
    """Every app's Hydra wrapper: its folder from Hydra; bad input is one line without a traceback when there is
    one run (in a multirun the error goes on to the launcher, which reports the failed job)."""
    hc = HydraConfig.get()
    try:
        run_app(cfg, hc.runtime.output_dir, Path(hc.runtime.output_dir) / hc.output_subdir)
    except USER_ERRORS as err:
        log.error("%s", err)
        if hc.mode == RunMode.RUN:
            raise SystemExit(f"{prog}: error: {err}") from None
        raise
    except Exception:
        log.exception("%s failed", what)
        raise


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    run_in_hydra(run, cfg, "synbench", "job")

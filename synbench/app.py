"""The Hydra entry point: wires config -> data -> encoder -> probe -> metrics -> tracking. No logic lives here
beyond the order of the steps; each step's module owns its checks and its errors."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from synbench.config import build, check_config, flat_params, job_hash, resolve_device
from synbench.data import InputTransform, Split
from synbench.encoders import Precision, embed_dataset, embed_mixture
from synbench.encoders.cache import EmbeddingCache
from synbench.encoders.embed import mixture_for
from synbench.encoders.tune import configure_host, plan_applied, tune_encoder
from synbench.metrics import MetricInputs
from synbench.probes import check_epsilons
from synbench.runner import CONF_DIR, dataset_for, finished_before, results_kept, reuse_finished, run_in_hydra
from synbench.tracking import write_local_results
from synbench.tracking.mlflow_run import process_tags, ui_command
from synbench.tracking.sweep import tracker_from

log = logging.getLogger("synbench")


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
    on_mixture = [mt for mt in metrics if getattr(mt, "uses_mixture", True)]
    # the data are read and checked (one line on bad data) before the store is touched; their content is part
    # of the job's identity, so changed data at the same path are never skipped as FINISHED
    data = dataset_for(cfg, metrics)
    tracker = tracker_from(cfg)
    config_hash = job_hash(cfg, data.digest if data is not None else None)
    if tracker.exists():  # a new local store is created with the run: a job refused before it leaves none
        tracker.connect()
        done = finished_before(cfg, tracker, config_hash)
        if done is not None:
            return reuse_finished(done, tracker, config_hash, output_dir)
    configure_host(cfg.embed)
    encoder = build(cfg.model).to(device)
    transform = (InputTransform.between(data.shape, encoder.input_shape, encoder.value_range, f"model {encoder.name!r}")
                 if data is not None else None)
    m = cfg.mixture
    mixture = mixture_for(m, encoder) if on_mixture else None
    scales = [float(s) for s in m.scales]
    for metric in on_mixture:
        metric.check(scales, mixture)
    streams = (len(scales) * [m.n_train, m.n_test] if on_mixture else []) + \
        ([data.count(s) for s in Split] if data is not None else [])  # the sizes of the passes to come
    plan = tune_encoder(encoder, device, precision, cfg.embed, images=sum(streams), largest=max(streams),
                        cache_dir=cfg.cache.tuning_dir)

    job = {"config_hash": config_hash, "device": str(device), "encoder": encoder.identity,
           "num_features": encoder.num_features, "value_range": list(encoder.value_range),
           "mixture_mean": mixture.mean if mixture else None, "embed_plan": plan.params(),
           "tune_seconds": plan.seconds, "output_dir": str(output_dir)}
    tags = {"synbench.kind": "job", "synbench.model": cfg.model.name, "synbench.config_hash": job["config_hash"],
            "synbench.direction": m.direction, "synbench.weights": encoder.identity["weights"], **process_tags()}
    params = {**flat_params(cfg), **plan.params()}
    if data is not None:
        job["dataset"] = {**data.describe(), "transform": transform.describe()}
        tags["synbench.dataset"] = data.name
        params.update(data.params(), **{f"dataset.transform.{k}": v for k, v in transform.describe().items()})
    run_name = cfg.tracking.run_name or _default_run_name(cfg)
    with tracker.job_run(run_name, params, tags) as mlrun:
        if data is not None:
            mlrun.log_dataset(data.name, cfg.dataset.path, data.splits())
        # 2. one embedding pass per input, shared by every metric (each from the cache when it holds it)
        cache = EmbeddingCache(cfg.cache.dir) if cfg.cache.enabled else None
        emb = labelled = None
        with plan_applied(encoder, plan):
            if on_mixture:
                emb = embed_mixture(encoder, mixture, scales, {Split.train: m.n_train, Split.test: m.n_test},
                                    cfg.seed, plan.batch_size, device, precision, plan.channels_last, cache,
                                    cfg.progress)
            if data is not None:
                labelled = embed_dataset(encoder, data, transform, plan.batch_size, device, precision,
                                         plan.channels_last, cache, cfg.progress)
        passes = [p for p in (emb, labelled) if p is not None]
        embed_seconds = sum(p.seconds for p in passes)
        embedded = sum(p.images_embedded for p in passes)
        # 3. metrics
        inputs = MetricInputs(emb, encoder, mixture, probe, cfg.seed, precision, cfg.progress, labelled)
        t0 = time.perf_counter()
        results = [metric.compute(inputs) for metric in metrics]
        job.update(embed_seconds=embed_seconds, images_embedded=embedded,
                   metric_seconds=time.perf_counter() - t0, run_id=mlrun.run_id)
        # 4. local files first (kept whatever MLflow does next), then MLflow
        files = write_local_results(output_dir, job, results)
        log.info("results written to %s", output_dir / "results.json")
        with results_kept(output_dir / "results.json"):
            for result in results:
                mlrun.log_result(result)
            mlrun.log_metrics({"job/embed_seconds": embed_seconds, "job/images_embedded": embedded,
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


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    run_in_hydra(run, cfg, "synbench", "job")

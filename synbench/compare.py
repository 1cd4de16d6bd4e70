"""``python -m synbench.compare``: many models, the same inputs, compared by the geometry of their embeddings
(data kernels, per-datum tests, the manifold of models, CKA and mutual k-NN). Config: ``conf/compare.yaml``.
The inputs are the mixture at one scale, or, with ``dataset=...``, a real dataset's test split: the data-kernel
paper's own use (which inputs does model B represent differently from model A?), with the most-changed inputs
shown as images and the share of rejected data per class.

The second Hydra app beside the job: it wires the same pieces (encoder builders, the mixture, the tuned and
cached embedding pass, the MLflow tracker) to ``metrics.model_comparison``; nothing here is a second copy.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from synbench.config import build, flat_params, job_hash, resolve_device
from synbench.data import InputTransform, LabelledDataset, Split
from synbench.encoders import Precision, embed_dataset, embed_mixture
from synbench.encoders.cache import EmbeddingCache
from synbench.encoders.embed import mixture_for
from synbench.encoders.tune import configure_host, plan_applied, tune_encoder
from synbench.metrics.model_comparison import ComparisonSettings, check_embeddings, compare_embeddings
from synbench.runner import CONF_DIR, check_overrides, finished_before, results_kept, reuse_finished, run_in_hydra
from synbench.tracking.comparison import log_comparison, pair_label, write_comparison
from synbench.tracking.mlflow_run import process_tags, ui_command
from synbench.tracking.sweep import tracker_from

log = logging.getLogger("synbench.compare")


def settings_from(cfg: DictConfig) -> ComparisonSettings:
    c = cfg.compare
    return ComparisonSettings(k=c.k, mutual_k=c.mutual_k, reference=c.reference, augment_diagonal=c.augment_diagonal,
                              d=c.d, max_dim=c.max_dim, n_bootstrap=c.n_bootstrap, alpha=c.alpha,
                              top_changed=c.top_changed, hist_bins=c.hist_bins, seed=cfg.seed)


def embed_models(cfg: DictConfig, device, precision: Precision, data: LabelledDataset | None
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """Each model in turn: load, tune, embed the inputs (from the cache when a job or an earlier comparison
    embedded them), free the model. Every model must see the same inputs: the mixture's train + test sets at
    ``compare.scale``, or the test split of ``dataset`` (the cache entry its downstream jobs wrote)."""
    m = cfg.mixture
    n = {Split.train: m.n_train, Split.test: m.n_test}
    cache = EmbeddingCache(cfg.cache.dir) if cfg.cache.enabled else None
    scale = float(cfg.compare.scale)
    out, info, first = {}, {}, None
    for label, node in cfg.models.items():
        encoder = build(node).to(device)
        if data is not None:
            transform = InputTransform.between(data.shape, encoder.input_shape, encoder.value_range, f"models.{label}")
            count = data.count(Split.test)
            plan = tune_encoder(encoder, device, precision, cfg.embed, images=count, largest=count,
                                cache_dir=cfg.cache.tuning_dir)
            with plan_applied(encoder, plan):
                emb = embed_dataset(encoder, data, transform, plan.batch_size, device, precision,
                                    plan.channels_last, cache, cfg.progress, splits=(Split.test,))
            out[label] = emb.z[Split.test]
            where = f"dataset {data.name}"
        else:
            mixture = mixture_for(m, encoder)
            if first is None:
                first = (label, mixture)
            elif mixture != first[1]:
                raise ValueError(f"models.{label} takes inputs of shape {list(mixture.shape)} centred at "
                                 f"{mixture.mean:g}, models.{first[0]} takes {list(first[1].shape)} at "
                                 f"{first[1].mean:g}: every model must see the same inputs (set "
                                 f"models.<label>.input_size, or mixture.mean)")
            plan = tune_encoder(encoder, device, precision, cfg.embed, images=sum(n.values()), largest=max(n.values()),
                                cache_dir=cfg.cache.tuning_dir)
            with plan_applied(encoder, plan):
                emb = embed_mixture(encoder, mixture, [scale], n, cfg.seed, plan.batch_size, device, precision,
                                    plan.channels_last, cache, cfg.progress)
            out[label] = torch.cat([emb.z[Split.train][0], emb.z[Split.test][0]])
            where = f"compare.scale={scale:g}"
        if not torch.isfinite(out[label]).all():
            raise ValueError(f"models.{label} ({encoder.name}) returned non-finite features on the {where} inputs; "
                             f"check its weights (model.checkpoint) or its precision (embed.precision=fp32)")
        info[label] = {"encoder": encoder.identity, "num_features": encoder.num_features,
                       "images_embedded": emb.images_embedded, "embed_seconds": emb.seconds}
        log.info("%s: %d features, %d images embedded (%s) in %.1f s", label, encoder.num_features,
                 emb.images_embedded, "cache" if emb.images_embedded == 0 else "model", emb.seconds)
        del encoder
        gc.collect()
    return out, info


def labelled_views(comp, data: LabelledDataset, alpha: float) -> dict:
    """On a dataset: each test's share of rejected data per class, and the most-changed inputs themselves
    (pixels, captions with their index in the test split, label and p-value) for an image grid."""
    labels = data.y[data.index[Split.test]].numpy()
    views = {}
    for t in comp.tests:
        t.add_classes(labels, list(data.classes), alpha)
        pixels, y = data.take(Split.test, torch.as_tensor(t.most_changed, dtype=torch.long), "cpu")
        views[pair_label(t)] = (pixels.numpy(), [f"#{i} {data.classes[int(c)]} p={t.p[i]:.3f}"
                                                 for i, c in zip(t.most_changed, y)])
    return views


def run(cfg: DictConfig, output_dir: str | Path, hydra_dir: str | Path | None = None) -> dict:
    """Run one comparison; returns its summary (also in ``output_dir/comparison.json`` and MLflow)."""
    output_dir = Path(output_dir)
    settings = settings_from(cfg)
    names = list(cfg.models)
    data = build(cfg.dataset) if cfg.dataset is not None else None  # read and checked: one line on bad data
    n = data.count(Split.test) if data is not None else int(cfg.mixture.n_train) + int(cfg.mixture.n_test)
    check_embeddings(names, [n] * len(names), settings)  # cheap checks before any model loads or run exists
    if not float(cfg.compare.scale) >= 0:
        raise ValueError(f"compare.scale={cfg.compare.scale} must be >= 0")
    device = resolve_device(cfg.device)
    precision = Precision.parse(cfg.embed.precision)
    tracker = tracker_from(cfg)
    config_hash = job_hash(cfg, data.digest if data is not None else None)  # the same path may hold other data
    if tracker.exists():  # a new local store is created with the run (a refused comparison leaves none)
        tracker.connect()
        done = finished_before(cfg, tracker, config_hash, kinds=("comparison",))
        if done is not None:
            return reuse_finished(done, tracker, config_hash, output_dir, "model comparison")
    configure_host(cfg.embed)
    embeddings, models = embed_models(cfg, device, precision, data)

    tags = {"synbench.kind": "comparison", "synbench.config_hash": config_hash,
            "synbench.models": ",".join(names), **process_tags()}
    params = {**flat_params(cfg), "compare.n": n}
    info = {"config_hash": config_hash, "device": str(device), "models": models, "output_dir": str(output_dir),
            **({"dataset": {**data.describe(), "inputs": "the test split"}} if data is not None
               else {"scale": float(cfg.compare.scale)})}
    if data is not None:
        tags["synbench.dataset"] = data.name
        params.update(data.params())
    with tracker.job_run(cfg.tracking.run_name or f"compare {', '.join(names)}", params, tags) as parent:
        if data is not None:  # its inputs are the test split
            parent.log_dataset(data.name, cfg.dataset.path, {"test": data.splits()["test"]})
        comp = compare_embeddings(embeddings, settings, cfg.progress)
        views = labelled_views(comp, data, settings.alpha) if data is not None and data.has_labels else {}
        info["run_id"] = parent.run_id
        files = write_comparison(output_dir, comp, info, views)  # the folder first: kept whatever MLflow does next
        log.info("comparison written to %s", output_dir / "comparison.json")
        with results_kept(output_dir / "comparison.json"):
            log_comparison(tracker, parent, comp, files, output_dir,
                           {"k": comp.k, "d": comp.d, "n": comp.n, "n_bootstrap": settings.n_bootstrap,
                            "alpha": settings.alpha}, {"synbench.config_hash": config_hash})
            parent.log_logs(output_dir)
            if hydra_dir is not None:
                parent.log_dir(Path(hydra_dir), "hydra")
    url = tracker.run_url(parent)
    _print_summary(comp, output_dir, url, tracker)
    return {**info, "k": comp.k, "d": comp.d, "run_url": url, "comparison": comp}


def _print_summary(comp, output_dir: Path, url: str, tracker) -> None:
    width = max(len(x) for x in comp.names) + 2
    lines = ["", f"Model comparison finished (n = {comp.n}, k = {comp.k}, d = {comp.d})"]
    for key, title in (("distance", "data-kernel distance"), ("cka", "linear CKA"),
                       ("mutual_knn", "mutual k-NN alignment")):
        lines.append(f"  {title}:")
        lines.append("  " + " " * width + "".join(f"{x:>{width}}" for x in comp.names))
        for name, row in zip(comp.names, getattr(comp, key)):
            lines.append(f"  {name:<{width}}" + "".join(f"{v:>{width}.3f}" for v in row))
    for t in comp.tests:
        lines.append(f"  {t.other} vs {t.reference}: {100 * t.fraction_rejected:.1f}% of data rejected "
                     f"(p < alpha)")
    lines.append(f"  results: {output_dir}/comparison.json")
    lines.append(f"  MLflow run: {url}")
    if tracker.is_local:
        lines.append(f"  open the UI: {ui_command(tracker.uri)}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="compare")
def main(cfg: DictConfig) -> None:
    run_in_hydra(run, cfg, "synbench.compare", "comparison")


if __name__ == "__main__":
    check_overrides(sys.argv[1:], "synbench.compare")
    main()

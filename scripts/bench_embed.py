#!/usr/bin/env python
"""Throughput of the raw model forward vs PGD steps vs the embedding pass vs the whole job, same batch size.

    python scripts/bench_embed.py                                  # CPU-sized defaults
    python scripts/bench_embed.py --scales 8 --n 4096 --batch-size 512   # on a GPU
    python scripts/bench_embed.py --tuning mobilenetv2_050,test_vit  # the default job: tuned vs fixed
    python scripts/bench_embed.py --protocol mobilenetv2_050        # mixture=paper, n = 256: job vs its floor

Random-init weights (no download needed). Prints a Markdown table; --json writes the rows too.
The job row is the whole ``synbench.app.run`` (model build, data generation, forward, probes, score,
MLflow logging to a throwaway SQLite store, created before the clock starts), so its gap to the raw
forward is everything that is not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from synbench import app, runner  # noqa: E402
from synbench.attacks import PGD  # noqa: E402
from synbench.config import build, resolve_device  # noqa: E402
from synbench.data import Split  # noqa: E402
from synbench.encoders import Precision, autocast, embed_mixture  # noqa: E402
from synbench.encoders.embed import mixture_for  # noqa: E402
from synbench.encoders.tune import apply_layout, configure_threads, device_name, tune_encoder  # noqa: E402
from synbench.metrics.rmqm import RMQM  # noqa: E402
from synbench.tracking.sweep import tracker_from  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_forward(encoder, batch, device, precision, reps, warmup, channels_last=False):
    """Images/s of the model forward alone on one resident batch (no data generation, no copies)."""
    x = torch.randn((batch, *encoder.input_shape), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = precision.autocast_dtype(device)
    with torch.inference_mode(), autocast(device, dtype):
        for _ in range(warmup):
            encoder(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            encoder(x)
        sync(device)
    return batch * reps, time.perf_counter() - t0


def pgd_steps(encoder, batch, device, precision, steps):
    """Images/s of PGD on ||f(x') - f(x)|| (forward + backward through the model, fp32 input gradient)."""
    x = torch.rand((batch, *encoder.input_shape), device=device)
    dtype = precision.autocast_dtype(device)
    encoder.requires_grad_(False)
    with torch.no_grad(), autocast(device, dtype):
        f0 = encoder(x).float()
    attack = PGD(norm="linf", eps=(4 / 255,), steps=steps, restarts=1, step_factor=2.5, batch_size=batch)
    gen = torch.Generator(device=device).manual_seed(0)
    objective = lambda xa: (encoder(xa).float() - f0).norm(dim=1)  # noqa: E731
    attack.maximise(objective, x, 4 / 255, gen, autocast=dtype)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    attack.maximise(objective, x, 4 / 255, gen, autocast=dtype)
    sync(device)
    return batch * (steps + 1), time.perf_counter() - t0  # steps gradient evaluations + the final forward


def rmqm_paths(encoder, batch, device, precision, levels):
    """Images/s of RMQM's noise path (forwards) and PGD path (one run: levels-1 forward+backward steps)."""
    metric = RMQM(scale=1.0, n_points=batch, batch_size=batch, noise_levels=levels, sigma_max=1.0,
                  pgd_levels=levels, pgd_alpha=1 / 255, pgd_radius=0.3, pgd_offset=1e-3)
    x = torch.rand((batch, *encoder.input_shape), device=device)
    dtype = precision.autocast_dtype(device)
    rows = []
    for label, path in (("RMQM noise path (forward)", metric.noise_path),
                        ("RMQM PGD path (forward + backward)", metric.pgd_path)):
        path(encoder, x, dtype, 0)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        path(encoder, x, dtype, 0)
        sync(device)
        rows.append((label, batch * levels, time.perf_counter() - t0))
    return rows


def compose_job(overrides: list[str]):
    with initialize_config_dir(config_dir=runner.CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def tuning_table(models: list[str], fixed_batch: int) -> None:
    """The default job per model with the tuner, first with an empty tuning cache (its search is part of the
    time) and then from the cache, against the fixed settings it replaced (batch ``fixed_batch``,
    contiguous): whole-job images/s and the largest score difference."""
    print(f"\nDefault job (10 scales x 512 + 512 images, random init), tuned vs batch {fixed_batch} contiguous, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}\n")
    print("| model | fixed images/s | tuned, first job (search included) | tuned, cached plan | search s | "
          "choice | max abs score difference |")
    print("|---|---:|---:|---:|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:  # an untimed warm-up: the lazy imports a first job pays
        app.run(compose_job(["model=test_vit", "mixture.scales=[0.5,2.5]", "mixture.n_train=8", "mixture.n_test=8",
                             "embed.batch_size=8", "embed.channels_last=false", "progress=false",
                             f"paths.outputs={tmp}"]), Path(tmp) / "job")
    for model in models:
        rates, scores = {}, {}
        with tempfile.TemporaryDirectory() as tuning:
            for mode in ("fixed", "tuned", "cached"):
                with tempfile.TemporaryDirectory() as tmp:
                    knobs = ([f"embed.batch_size={fixed_batch}", "embed.channels_last=false"] if mode == "fixed"
                             else ["embed.batch_size=auto", "embed.channels_last=auto"])
                    cfg = compose_job([f"model={model}" if (ROOT / "conf/model" / f"{model}.yaml").exists()
                                       else "model=timm", f"model.name={model}", "model.pretrained=false",
                                       "cache.enabled=false", "progress=false", f"paths.outputs={tmp}",
                                       f"cache.tuning_dir={tuning}", *knobs])
                    tracker_from(cfg).connect()
                    t0 = time.perf_counter()
                    summary = app.run(cfg, Path(tmp) / "job")
                    rates[mode] = summary["images_embedded"] / (time.perf_counter() - t0)
                    scores[mode] = summary["scalars"]
                    if mode == "tuned":
                        plan, search = summary["embed_plan"], summary["tune_seconds"]
        diff = max(abs(scores["fixed"][k] - scores[m][k]) for k in scores["fixed"] for m in ("tuned", "cached"))
        choice = f"batch {plan['embed.tuned.batch_size']}, " + \
            ("channels_last" if plan["embed.tuned.channels_last"] else "contiguous")
        print(f"| {model} | {rates['fixed']:.1f} | {rates['tuned']:.1f} ({rates['tuned'] / rates['fixed']:.2f}x) | "
              f"{rates['cached']:.1f} ({rates['cached'] / rates['fixed']:.2f}x) | {search:.1f} | {choice} | "
              f"{diff:.1e} |")


def protocol_table(model: str, n: int, device_arg: str) -> None:
    """The whole job on the paper's protocol (``mixture=paper``, 49 scales) at ``n`` train + ``n`` test per scale
    against its floor: the bare forward of the job's images at the tuned plan, plus generating the job's
    mixture alone, plus the job's own metric time. ``--protocol``; prints a table and the ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_job([f"model={model}" if (ROOT / "conf/model" / f"{model}.yaml").exists() else "model=timm",
                           f"model.name={model}", "model.pretrained=false", "mixture=paper",
                           f"mixture.n_train={n}", f"mixture.n_test={n}", "cache.enabled=false", "progress=false",
                           f"paths.outputs={tmp}", f"device={device_arg}", f"cache.tuning_dir={tmp}/tuning"])
        device, precision = resolve_device(cfg.device), Precision.parse(cfg.embed.precision)
        configure_threads()
        encoder = build(cfg.model).to(device)
        mixture = mixture_for(cfg.mixture, encoder)
        scales = [float(s) for s in cfg.mixture.scales]
        images = 2 * n * len(scales)
        plan = tune_encoder(encoder, device, precision, cfg.embed, images=images, largest=n,
                            cache_dir=cfg.cache.tuning_dir)  # cached here: the job reads it, as a sweep's jobs do
        batch = plan.batch_size
        apply_layout(encoder, plan.channels_last)  # what the job's embedding pass runs in (plan_applied)
        reps = max(1, min(images // batch, 400 // batch + 1))  # about 400 images: the rate, extrapolated
        counted, secs = raw_forward(encoder, batch, device, precision, reps, 2, plan.channels_last)
        forward = images * secs / counted  # the job's images at the bare rate
        t0 = time.perf_counter()
        for scale in scales:
            for split in Split:
                for _ in mixture.stream(scale, split, n, cfg.seed, batch, device):
                    pass
        sync(device)
        generation = time.perf_counter() - t0
        t0 = time.perf_counter()
        embed_mixture(encoder, mixture, scales, {Split.train: n, Split.test: n}, cfg.seed, batch, device,
                      precision, plan.channels_last, progress=False)
        sync(device)
        embed = time.perf_counter() - t0
        tracker_from(cfg).connect()  # the store's creation is not the job's
        t0 = time.perf_counter()
        summary = app.run(cfg, Path(tmp) / "job")
        job = time.perf_counter() - t0
    metrics = summary["metric_seconds"]
    rows = [("bare forward of the job's images (tuned plan, resident batch; extrapolated)", forward),
            ("generating the job's mixture alone", generation),
            ("embedding pass (embed_mixture: generate + forward)", embed),
            ("the job's metrics (its own metric_seconds)", metrics),
            ("whole SynBench job (app.run, plan from the tuning cache)", job)]
    print(f"\nmixture=paper ({len(scales)} scales x {n} + {n} images = {images:,}), {model} (random init) at "
          f"{list(encoder.input_shape)}, {device_name(device)}, batch {batch} "
          f"{'channels_last' if plan.channels_last else 'contiguous'}, torch {torch.__version__}\n")
    print("| step | seconds | images/s |\n|---|---:|---:|")
    for label, secs in rows:
        print(f"| {label} | {secs:.1f} | {images / secs if 'metrics' not in label else float('nan'):.1f} |")
    floor = forward + generation + metrics
    print(f"\nfloor (forward + generation + metrics) {floor:.1f} s; embedding pass at "
          f"{(forward + generation) / embed:.0%} of its floor; whole job at {floor / job:.0%} of its floor")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 16 on CPU")
    p.add_argument("--scales", type=int, default=None, help="scales in the job (default: 8 on CUDA, 2 on CPU)")
    p.add_argument("--n", type=int, default=None, help="train = test samples per scale (default 2048 / 32)")
    p.add_argument("--reps", type=int, default=None, help="raw-forward batches timed (default 20 / 6)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--tuning", default=None, help="comma-separated models: the default job, tuned vs fixed")
    p.add_argument("--fixed-batch", type=int, default=256, help="the fixed batch size --tuning compares against")
    p.add_argument("--protocol", default=None, help="a model: the whole job on mixture=paper against its floor")
    p.add_argument("--protocol-n", type=int, default=256, help="--protocol: train = test images per scale")
    args = p.parse_args()
    if args.tuning:
        return tuning_table(args.tuning.split(","), args.fixed_batch)
    if args.protocol:
        return protocol_table(args.protocol, args.protocol_n, args.device)

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch_size or (256 if gpu else 16)
    n_scales = args.scales or (8 if gpu else 2)
    n = args.n or (2048 if gpu else 32)
    reps = args.reps or (20 if gpu else 6)
    precision = Precision.parse(args.precision)
    scales = [round(0.6 * (i + 1), 3) for i in range(n_scales)]  # reaches past Phi^-1(0.99) for >= 4 scales
    thresholds = "[0.6,0.7]" if max(scales) < 2.5 else "[0.6,0.7,0.99]"

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"model={args.model}" if (ROOT / "conf/model" / f"{args.model}.yaml").exists()
                     else "model=timm", f"model.name={args.model}", "model.pretrained=false",
                     f"mixture.scales=[{','.join(map(str, scales))}]", f"mixture.n_train={n}", f"mixture.n_test={n}",
                     f"embed.batch_size={batch}", "embed.channels_last=false", f"embed.precision={args.precision}", f"embed.compile={args.compile}",
                     f"device={device}", "cache.enabled=false", "progress=false", f"paths.outputs={tmp}",
                     "epsilon.grid=[0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]",
                     f"metrics.synbench.thresholds={thresholds}"]
        cfg = compose_job(overrides)

        encoder = build(cfg.model).to(device)
        if args.compile:
            encoder.backbone.compile()
        images, secs = raw_forward(encoder, batch, device, precision, reps, warmup=3 if gpu else 2)
        rows = [("raw forward", images, secs)]
        rows.append(("PGD step (forward + backward)", *pgd_steps(encoder, batch, device, precision,
                                                                 steps=10 if gpu else 2)))
        rows += rmqm_paths(encoder, batch, device, precision, levels=10 if gpu else 3)

        mixture = mixture_for(cfg.mixture, encoder)
        emb = embed_mixture(encoder, mixture, scales, {Split.train: n, Split.test: n}, 0, batch, device, precision,
                            progress=False)
        sync(device)
        rows.append(("embedding pass (generate + forward)", emb.images_embedded, emb.seconds))

        tracker_from(cfg).connect()  # create + migrate the throwaway store first: a user's store already exists
        t0 = time.perf_counter()
        summary = app.run(cfg, Path(tmp) / "job")
        sync(device)
        rows.append(("whole SynBench job (app.run)", summary["images_embedded"], time.perf_counter() - t0))

    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({os.cpu_count()} cores)"
    dtype = precision.autocast_dtype(device)
    print(f"\n{args.model} (random init), {name}, batch {batch}, "
          f"{'bf16 autocast' if dtype else 'fp32'}{', compiled' if args.compile else ''}, "
          f"{n_scales} scales x {2 * n} images, torch {torch.__version__}\n")
    print("| stage | images | seconds | images/s | % of raw forward |")
    print("|---|---:|---:|---:|---:|")
    base = rows[0][1] / rows[0][2]
    out = []
    for stage, count, secs in rows:
        rate = count / secs
        print(f"| {stage} | {count} | {secs:.2f} | {rate:.1f} | {100 * rate / base:.0f}% |")
        out.append({"stage": stage, "images": count, "seconds": secs, "images_per_s": rate})
    if args.json:
        args.json.write_text(json.dumps({"device": name, "model": args.model, "batch": batch, "rows": out}, indent=2))


if __name__ == "__main__":
    main()

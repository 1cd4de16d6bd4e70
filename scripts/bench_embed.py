#!/usr/bin/env python
"""Throughput of the raw model forward vs PGD steps vs the embedding pass vs the whole job, same batch size.

    python scripts/bench_embed.py                                  # CPU-sized defaults
    python scripts/bench_embed.py --scales 8 --n 4096 --batch-size 512   # on a GPU
    python scripts/bench_embed.py --tuning mobilenetv2_050,test_vit  # the default job: tuned vs fixed
    python scripts/bench_embed.py --protocol mobilenetv2_050        # mixture=paper, n = 256: job vs its floor
    python scripts/bench_embed.py --protocol mobilenetv2_050 --vs embed.keep_freed_memory=false  # A/B, whole process
    python scripts/bench_embed.py --overlap mobilenetv2_050         # generation drawn ahead in a thread, or not
    python scripts/bench_embed.py --allocator mobilenetv2_050       # the bare forward: freed memory given back or kept

Random-init weights (no download needed). Prints a Markdown table; --json writes the rows too.
The job row is the whole ``synbench.app.run`` (model build, data generation, forward, probes, score,
MLflow logging to a throwaway SQLite store, created before the clock starts), so its gap to the raw
forward is everything that is not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
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
from synbench.encoders.embed import embed_batches, mixture_for  # noqa: E402
from synbench.encoders.tune import (EmbedPlan, apply_layout, configure_allocator, configure_host,  # noqa: E402
                                   configure_threads, device_name, plan_applied, tune_encoder)
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


def model_overrides(model: str) -> list[str]:
    """``model`` at random init: its own config group entry where conf/model has one, else timm's by name."""
    return [f"model={model}" if (ROOT / "conf/model" / f"{model}.yaml").exists() else "model=timm",
            f"model.name={model}", "model.pretrained=false"]


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
                    cfg = compose_job([*model_overrides(model), "cache.enabled=false", "progress=false",
                                       f"paths.outputs={tmp}", f"cache.tuning_dir={tuning}", *knobs])
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


def job_overrides(model: str, n: int, device_arg: str, outputs: str) -> list[str]:
    """The paper's protocol (``mixture=paper``, 49 scales) at ``n`` train + ``n`` test images per scale."""
    return [*model_overrides(model), "mixture=paper", f"mixture.n_train={n}", f"mixture.n_test={n}",
            "cache.enabled=false", "progress=false", f"paths.outputs={outputs}", f"device={device_arg}",
            f"cache.tuning_dir={outputs}/tuning"]


def protocol_table(model: str, n: int, device_arg: str, overrides: list[str]) -> None:
    """The whole job on the paper's protocol against its floor, ``--protocol``. Scale by scale, back to back (so a
    machine whose speed drifts moves all three alike): the scale's images generated alone, the bare forward over
    those same images (the embedding loop fed from memory), and the embedding pass (generate + forward); then
    the whole job, which reads the same tuned plan from the tuning cache as a sweep's jobs do."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{tmp}/inductor"  # a compile trial compiles cold, as on a new node
        cfg = compose_job([*job_overrides(model, n, device_arg, tmp), *overrides])
        device, precision = resolve_device(cfg.device), Precision.parse(cfg.embed.precision)
        configure_host(cfg.embed)
        encoder = build(cfg.model).to(device)
        mixture = mixture_for(cfg.mixture, encoder)
        scales = [float(s) for s in cfg.mixture.scales]
        images = 2 * n * len(scales)
        plan = tune_encoder(encoder, device, precision, cfg.embed, images=images, largest=n,
                            cache_dir=cfg.cache.tuning_dir)
        counts = {Split.train: n, Split.test: n}
        generation = forward = embed = 0.0
        with plan_applied(encoder, plan):
            first = next(mixture.stream(scales[0], Split.train, plan.batch_size, cfg.seed, plan.batch_size, device))
            t0 = time.perf_counter()
            embed_batches(encoder, [first], plan.batch_size, device, precision, plan.channels_last)  # warm-up
            warm_up = time.perf_counter() - t0  # (the first call of a compiled plan compiles, where the tuner did not)
            for scale in scales:
                sync(device)
                t0 = time.perf_counter()
                held = {split: list(mixture.stream(scale, split, count, cfg.seed, plan.batch_size, device))
                        for split, count in counts.items()}
                sync(device)
                t1 = time.perf_counter()
                for split, count in counts.items():
                    embed_batches(encoder, held[split], count, device, precision, plan.channels_last)
                sync(device)
                t2 = time.perf_counter()
                del held
                embed_mixture(encoder, mixture, [scale], counts, cfg.seed, plan.batch_size, device, precision,
                              plan.channels_last, progress=False)
                sync(device)
                generation, forward, embed = (generation + t1 - t0, forward + t2 - t1,
                                              embed + time.perf_counter() - t2)
        tracker_from(cfg).connect()  # the store's creation is not the job's
        t0 = time.perf_counter()
        summary = app.run(cfg, Path(tmp) / "job")
        job = time.perf_counter() - t0
    metrics = summary["metric_seconds"]
    rows = [("generating the job's mixture alone", generation),
            ("bare forward over the same images (the embedding loop fed from memory)", forward),
            ("embedding pass (`embed_mixture`: generate + forward)", embed),
            ("the job's metrics (its `metric_seconds`)", metrics),
            ("whole SynBench job (`app.run`, plan from the tuning cache)", job)]
    layout = "channels_last" if plan.channels_last else "contiguous"
    compiled = ", compiled" if plan.compile else ", eager"
    if plan.compile_trial:
        compiled += f" (compile trial: {plan.compile_trial[0]:.1f} s to compile, {plan.compile_trial[1]:.1f} images/s)"
    print(f"\nmixture=paper ({len(scales)} scales x {n} + {n} images = {images:,}), {model} (random init) at "
          f"{list(encoder.input_shape)}, {device_name(device)}, plan: batch {plan.batch_size} {layout}{compiled} "
          f"({plan.source}; eager {plan.images_per_s or float('nan'):.1f} images/s), torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}{', ' + ' '.join(overrides) if overrides else ''}\n")
    print("| step | seconds | images/s |\n|---|---:|---:|")
    for label, secs in rows:
        print(f"| {label} | {secs:.1f} | {images / secs if 'metrics' not in label else float('nan'):.1f} |")
    floor = forward + generation
    print(f"\nembedding pass at {floor / embed:.0%} of its floor (generation + forward, {floor:.1f} s); whole job at "
          f"{(floor + metrics) / job:.0%} of its floor ({floor + metrics:.1f} s, with the metrics); first batch "
          f"(warm-up, untimed above) {warm_up:.1f} s")


def prefetched(batches, threads: int | None):
    """The ``batches`` iterator drawn one batch ahead in a background thread (with ``threads`` intra-op threads
    of its own where given), so generation can overlap the forward pass."""
    ahead, done = queue.Queue(maxsize=1), object()

    def draw():
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for item in batches:
                ahead.put(item)
        ahead.put(done)

    worker = threading.Thread(target=draw, daemon=True)
    worker.start()
    while (item := ahead.get()) is not done:
        yield item
    worker.join()


def overlap_table(model: str, n: int, device_arg: str, overrides: list[str], scales: int) -> None:
    """``--overlap``: the embedding loop as the job runs it (generate, then forward, in turn) against generation
    drawn one batch ahead in a thread, with the process's threads or with one of its own; scale by scale, the
    three back to back, on the first ``scales`` scales of the paper's protocol at the tuned plan."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_job([*job_overrides(model, n, device_arg, tmp), *overrides])
        device, precision = resolve_device(cfg.device), Precision.parse(cfg.embed.precision)
        threads = configure_host(cfg.embed)
        encoder = build(cfg.model).to(device)
        mixture = mixture_for(cfg.mixture, encoder)
        plan = tune_encoder(encoder, device, precision, cfg.embed, images=2 * n * 49, largest=n, cache_dir=None)
        variants = {"in turn (the job's loop)": lambda it: it, "one batch ahead, in a thread": lambda it:
                    prefetched(it, None), "one batch ahead, in a thread of 1 intra-op thread": lambda it:
                    prefetched(it, 1)}
        seconds = dict.fromkeys(variants, 0.0)
        with plan_applied(encoder, plan):
            for scale in [float(s) for s in cfg.mixture.scales][:scales]:
                for label, wrap in variants.items():
                    t0 = time.perf_counter()
                    for split in Split:
                        embed_batches(encoder, wrap(mixture.stream(scale, split, n, cfg.seed, plan.batch_size,
                                                                   device)), n, device, precision, plan.channels_last)
                    sync(device)
                    seconds[label] += time.perf_counter() - t0
                    torch.set_num_threads(threads)
    images = 2 * n * scales
    print(f"\nmixture=paper, first {scales} scales x {n} + {n} images = {images:,}, {model} (random init), "
          f"{device_name(device)}, plan: batch {plan.batch_size} "
          f"{'channels_last' if plan.channels_last else 'contiguous'}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| generation and forward | seconds | images/s | against in turn |\n|---|---:|---:|---:|")
    first = next(iter(seconds.values()))
    for label, secs in seconds.items():
        print(f"| {label} | {secs:.1f} | {images / secs:.1f} | {first / secs:.2f}x |")


def allocator_child(model: str, mode: str, images: int, batch: int) -> None:
    """``--allocator`` in one process: the bare forward of ``images`` images (one resident batch, channels_last)
    with freed memory given back or kept; prints its wall, user and system seconds and minor page faults."""
    configure_allocator(mode == "kept")
    configure_threads()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = build(compose_job(job_overrides(model, 1, "cpu", tmp)).model)
    apply_layout(encoder, True)
    x = torch.rand((batch, *encoder.input_shape)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(6):  # the heap settles at the passes' size
            encoder(x)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(images // batch):
            encoder(x)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                      "faults": r1.ru_minflt - r0.ru_minflt}))


def allocator_table(model: str, images: int, batch: int, rounds: int) -> None:
    """``--allocator``: the bare forward on the CPU with glibc giving freed memory back to the kernel (its
    default) and with it kept (``embed.keep_freed_memory``), each in a fresh process, in turn for ``rounds``."""
    runs = {"given back": [], "kept": []}
    for _ in range(rounds):
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "--allocator", model, "--allocator-child", mode,
                                  "--allocator-images", str(images), "--batch-size", str(batch)],
                                 check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{model} (random init), bare forward of {images:,} images (batch {batch}, channels_last, one resident "
          f"batch), {device_name(torch.device('cpu'))}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; "
          f"median of {rounds} processes each, in turn\n")
    print("| freed memory | wall seconds | user seconds | system seconds | minor page faults per image | "
          "images/s |\n|---|---:|---:|---:|---:|---:|")
    for mode, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"| {mode} | {med['wall']:.2f} | {med['user']:.2f} | {med['sys']:.2f} | {med['faults'] / images:,.0f} "
              f"| {images / med['wall']:.1f} |")


def ab_table(model: str, n: int, device_arg: str, a: list[str], b: list[str], rounds: int) -> None:
    """``--vs``: the protocol job as a whole process (``python -m synbench``), A and B in turn for ``rounds``
    rounds, each run in a fresh output folder. Both read one tuning cache, tuned before the first round, so
    neither pays the plan's search; compiling (where A or B compiles) is paid by every run, from an empty
    inductor cache in the first round only (later rounds find its graphs on disk, as a sweep's later jobs do)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = job_overrides(model, n, device_arg, tmp)
        cfg = compose_job([*base, *a])
        device = resolve_device(cfg.device)
        configure_host(cfg.embed)
        tune_encoder(build(cfg.model).to(device), device, Precision.parse(cfg.embed.precision), cfg.embed,
                     images=2 * n * len(cfg.mixture.scales), largest=n, cache_dir=cfg.cache.tuning_dir)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor"}  # cold at first
        times = {"A": [], "B": []}
        for r in range(rounds):
            for label, variant in (("A", a), ("B", b)):
                out = f"{tmp}/{label}{r}"
                cmd = [sys.executable, "-m", "synbench", *base, f"paths.outputs={out}", *variant]
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                times[label].append(time.perf_counter() - t0)
    print(f"\nmixture=paper ({len(cfg.mixture.scales)} scales x {n} + {n} images), {model} (random init), "
          f"whole process (`python -m synbench`), {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}; A: {' '.join(a) or 'the defaults'}; B: {' '.join(b) or 'the defaults'}\n")
    print("| round | A seconds | B seconds | A / B |\n|---:|---:|---:|---:|")
    for r, (ta, tb) in enumerate(zip(times["A"], times["B"])):
        print(f"| {r + 1} | {ta:.1f} | {tb:.1f} | {ta / tb:.2f} |")
    ratios = sorted(ta / tb for ta, tb in zip(times["A"], times["B"]))
    print(f"| median | {statistics.median(times['A']):.1f} | {statistics.median(times['B']):.1f} | "
          f"{statistics.median(ratios):.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 16 on CPU")
    p.add_argument("--scales", type=int, default=None, help="scales in the job (default: 8 on CUDA, 2 on CPU)")
    p.add_argument("--n", type=int, default=None, help="train = test samples per scale (default 2048 / 32)")
    p.add_argument("--reps", type=int, default=None, help="raw-forward batches timed (default 20 / 6)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    p.add_argument("--compile", action="store_true", help="the raw forward and the embedding pass compiled")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--tuning", default=None, help="comma-separated models: the default job, tuned vs fixed")
    p.add_argument("--fixed-batch", type=int, default=256, help="the fixed batch size --tuning compares against")
    p.add_argument("--protocol", default=None, help="a model: the whole job on mixture=paper against its floor")
    p.add_argument("--protocol-n", type=int, default=256, help="--protocol: train = test images per scale")
    p.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                   help="--protocol: a config override for the job (repeatable), e.g. embed.compile=true")
    p.add_argument("--vs", action="append", default=None, metavar="OVERRIDE",
                   help="--protocol: time the job as a whole process against itself with these overrides (B)")
    p.add_argument("--rounds", type=int, default=3, help="--vs: A/B rounds")
    p.add_argument("--overlap", default=None, metavar="MODEL",
                   help="generation in turn with the forward against drawn ahead in a thread (paper protocol)")
    p.add_argument("--overlap-scales", type=int, default=10, help="--overlap: the protocol's first scales timed")
    p.add_argument("--allocator", default=None, metavar="MODEL",
                   help="the bare CPU forward with freed memory given back to the kernel and kept, in turn")
    p.add_argument("--allocator-images", type=int, default=1024, help="--allocator: images per process")
    p.add_argument("--allocator-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.tuning:
        return tuning_table(args.tuning.split(","), args.fixed_batch)
    if args.allocator and args.allocator_child:
        return allocator_child(args.allocator, args.allocator_child, args.allocator_images, args.batch_size or 8)
    if args.allocator:
        return allocator_table(args.allocator, args.allocator_images, args.batch_size or 8, args.rounds)
    if args.overlap:
        return overlap_table(args.overlap, args.protocol_n, args.device, args.set, args.overlap_scales)
    if args.protocol and args.vs:
        return ab_table(args.protocol, args.protocol_n, args.device, args.set, args.vs, args.rounds)
    if args.protocol:
        return protocol_table(args.protocol, args.protocol_n, args.device, args.set)

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
        overrides = [*model_overrides(args.model), f"mixture.scales=[{','.join(map(str, scales))}]",
                     f"mixture.n_train={n}", f"mixture.n_test={n}",
                     f"embed.batch_size={batch}", "embed.channels_last=false", f"embed.precision={args.precision}",
                     f"embed.compile={str(args.compile).lower()}",
                     f"device={device}", "cache.enabled=false", "progress=false", f"paths.outputs={tmp}",
                     "epsilon.grid=[0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]",
                     f"metrics.synbench.thresholds={thresholds}"]
        cfg = compose_job(overrides)

        configure_host(cfg.embed)
        encoder = build(cfg.model).to(device)
        mixture = mixture_for(cfg.mixture, encoder)
        with plan_applied(encoder, EmbedPlan(batch, False, compile=args.compile)):  # as the job's embedding pass
            images, secs = raw_forward(encoder, batch, device, precision, reps, warmup=3 if gpu else 2)
            emb = embed_mixture(encoder, mixture, scales, {Split.train: n, Split.test: n}, 0, batch, device,
                                precision, progress=False)
            sync(device)
        rows = [("raw forward", images, secs)]
        rows.append(("PGD step (forward + backward)", *pgd_steps(encoder, batch, device, precision,
                                                                 steps=10 if gpu else 2)))
        rows += rmqm_paths(encoder, batch, device, precision, levels=10 if gpu else 3)  # eager, as the metrics
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

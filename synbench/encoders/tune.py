"""The embedding pass picks its own batch size and memory layout, by timing the job's model on its device.

No fixed default is right everywhere: a CPU is fastest at small batches whose activations stay in cache,
and channels_last lets oneDNN run convnets up to twice as fast; a GPU wants the largest batch that fits.
So before the first scale, short forward passes of the real model (same autocast, random inputs of the real
shape) are timed over the candidate batch sizes, in increasing order, for both layouts side by side, and the
fastest pair is used. A layout drops out once a batch is clearly slower than its best or when one pass
outlasts ``max_pass_seconds`` (bigger batches no longer pay on that machine); the search ends at the first
CUDA out-of-memory (the largest batch that fits) or once it has cost ``budget`` of the job's projected
embedding time, so a short job pays little for it. The result is cached per (architecture, device, threads, dtype, input shape,
versions): a sweep tunes once. Explicit settings skip all of it.

The plan changes the features in their last bits (a layout or batch size picks other kernels), so it is part of
what a run computed: it keys the embedding cache (a cache entry of another plan is never served), every run logs it
(``embed.tuned.*``, and ``embed.tuned.replay``, the overrides that replay it), and re-running the logged config with
those overrides gives the same bytes on the same kind of machine. It applies to the embedding pass alone
(``plan_applied``): the metrics' own passes through the model (attacks, noise paths) run in the default layout at
their own configured batch sizes, whatever the plan.

``torch.compile`` is a candidate too (``embed.compile: auto``): where the eager plan projects at least
``tune_compile_min_seconds`` of embedding, the model is compiled at the chosen batch and layout and kept only if
its compile time plus the job's images at the compiled rate beat the eager rate. Compiled kernels compute other
last bits, so the choice is part of the plan like the rest: keyed, logged, replayed, and the embedding pass alone
runs compiled.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from synbench.encoders.base import Encoder, Precision, autocast, first_line
from synbench.encoders.cache import key_digest
from synbench.files import write_json_atomic

log = logging.getLogger(__name__)

SLOWER = 0.9  # a batch below this fraction of the layout's best rate ends that layout's search


@dataclass(frozen=True)
class EmbedPlan:
    batch_size: int
    channels_last: bool
    images_per_s: float | None = None  # measured rate of the choice; None when both were set by hand
    source: str = "config"  # config | tuned | cache
    trials: tuple = ()  # (batch, channels_last, images/s) of every candidate timed
    seconds: float = 0.0  # what the search cost this job (0 from the config or the cache)
    compile: bool = False  # the embedding pass runs the torch.compile'd model
    compile_trial: tuple = ()  # (compile seconds, compiled images/s) where compiling was timed

    def params(self) -> dict:
        return {"embed.tuned.batch_size": self.batch_size, "embed.tuned.channels_last": self.channels_last,
                "embed.tuned.compile": self.compile, "embed.tuned.source": self.source,
                "embed.tuned.replay": self.replay, "embed.threads": torch.get_num_threads()}

    @property
    def replay(self) -> str:
        """The overrides that make a re-run use this plan, whatever a new search would pick."""
        return (f"embed.batch_size={self.batch_size} embed.channels_last={str(self.channels_last).lower()} "
                f"embed.compile={str(self.compile).lower()}")


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs of /proc/cpuinfo; the logical count where that is unreadable."""
    try:
        pairs, phys = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                phys = value.strip()
            elif key.strip() == "core id":
                pairs.add((phys, value.strip()))
        return len(pairs) or os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1


def configure_threads() -> int:
    """Intra-op threads: the user's ``OMP_NUM_THREADS`` (torch reads it) when set, else the physical cores this
    process may use (hyperthreads only contend for the same units in dense kernels): no more than its CPU
    affinity and, under Slurm, its job's ``cpus_per_task``. Slurm need not pin a job's CPUs, and threads beyond
    the allocation fight the node's other jobs for the same cores."""
    if "OMP_NUM_THREADS" not in os.environ:
        allowed = [physical_cores(), len(os.sched_getaffinity(0))]
        if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            allowed.append(int(os.environ["SLURM_CPUS_PER_TASK"]))
        torch.set_num_threads(max(1, min(allowed)))
    return torch.get_num_threads()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit; bigger blocks are always mapped
KEEP_BYTES = 1 << 30  # free memory kept at the top of the heap before any is given back


def configure_allocator(keep_freed_memory: bool) -> bool:
    """Keep freed memory for reuse (glibc): True where applied.

    By default glibc maps every block above a threshold that starts at 128 KiB and gives freed memory back to
    the kernel, so each CPU forward pass faults its activations in again, page by page: on 2 cores that was half
    the wall time of mobilenetv2_050's forward (docs/benchmarks.md). Blocks up to 32 MiB then come from the heap,
    which keeps up to 1 GiB of freed memory. Only where memory sits changes (torch aligns every block the same
    way), never a computed bit; the setting lasts for the process."""
    if not keep_freed_memory or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the process's own C library, glibc here
    return libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1


def configure_host(embed) -> int:
    """The process-wide settings of the ``embed`` config group: intra-op threads and the allocator; the threads."""
    configure_allocator(embed.keep_freed_memory)
    return configure_threads()


def device_name(device: torch.device) -> str:
    """What the timings depend on: the GPU's name, or the CPU's model and the threads it runs with."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu} x{torch.get_num_threads()} threads"


def plan_embedding(encoder: Encoder, device: torch.device, precision: Precision, batch_size, channels_last,
                   candidates: list[int], max_pass_seconds: float, min_seconds: float, budget: float,
                   images: int, largest: int, cache_dir: str | Path | None, compile,
                   compile_min_seconds: float) -> EmbedPlan:
    """Explicit ``batch_size`` / ``channels_last`` / ``compile`` win; ``"auto"`` ones are measured (or read from
    the cache).

    ``images``: what the job will embed; the search stops once it has cost ``budget`` times the embedding
    time projected at the best rate so far. ``largest``: the most samples one stream yields (the larger
    split), above which a batch is never used. ``compile="auto"`` is decided only by a timed plan, and tried
    only where the eager plan projects ``compile_min_seconds`` of embedding or more."""
    image = len(encoder.input_shape) == 3  # channels_last exists for 4-D batches only
    if batch_size != "auto" and channels_last != "auto":
        return EmbedPlan(int(batch_size), bool(channels_last) and image, compile=compile is True)
    batches = sorted({min(int(b), largest) for b in candidates}) if batch_size == "auto" else [int(batch_size)]
    layouts = ([False, True] if image else [False]) if channels_last == "auto" else [bool(channels_last) and image]
    dtype = precision.autocast_dtype(device)
    arch = {k: v for k, v in encoder.identity.items() if k != "weights"}  # speed does not depend on weights
    key = {"architecture": arch, "device": device_name(device), "autocast": str(dtype), "batches": batches,
           "layouts": layouts, "max_pass_seconds": max_pass_seconds, "torch": torch.__version__}
    path = Path(cache_dir) / f"{key_digest(key)}.json" if cache_dir is not None else None
    plan = _cached(path)
    store = plan is None  # a new search, or a new compile trial, is written back for the sweep's next jobs
    if plan is None:
        t0 = time.perf_counter()
        trials = _search(encoder, device, dtype, batches, layouts, max_pass_seconds, min_seconds,
                         lambda best: time.perf_counter() - t0 > budget * images / best)
        encoder.to(memory_format=torch.contiguous_format)
        if not trials:
            raise RuntimeError(f"no candidate batch size in {batches} fits model {encoder.name!r} on {device}")
        best = max(trials, key=lambda t: t[2])
        plan = EmbedPlan(best[0], best[1], best[2], "tuned", tuple(trials), time.perf_counter() - t0)
    long_enough = images / plan.images_per_s >= compile_min_seconds  # a short job never compiles under auto
    if compile == "auto" and long_enough and not plan.compile_trial:
        t0 = time.perf_counter()  # timed once per cache entry, then decided per job from the stored trial
        plan = replace(plan, compile_trial=_time_compiled(encoder, plan, device, dtype, min_seconds),
                       seconds=plan.seconds + time.perf_counter() - t0)
        store = True
    if store and path is not None:
        write_json_atomic(path, {"key": key, **asdict(replace(plan, compile=False, seconds=0.0))})
    wins = compile == "auto" and long_enough and _compile_wins(plan, images)
    plan = replace(plan, compile=compile is True or wins)
    _report(plan, encoder)
    return plan


def _cached(path: Path | None) -> EmbedPlan | None:
    """The plan stored at ``path`` (source ``cache``, nothing timed), or None: absent or unreadable is a miss."""
    if path is None or not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return EmbedPlan(saved["batch_size"], saved["channels_last"], saved["images_per_s"], "cache",
                         tuple(tuple(t) for t in saved["trials"]),
                         compile_trial=tuple(saved.get("compile_trial", ())))  # absent in entries made before
    except (ValueError, KeyError, TypeError) as err:  # an unreadable entry is a miss, never a crash
        log.warning("ignoring unreadable tuning cache entry %s (%s)", path, err)
        return None


def _compile_wins(plan: EmbedPlan, images: int) -> bool:
    """Compiling pays for this job: its compile time plus the images at the compiled rate beat the eager rate."""
    if not plan.compile_trial:
        return False
    compile_seconds, rate = plan.compile_trial
    return rate > 0 and compile_seconds + images / rate < images / plan.images_per_s


def _time_compiled(encoder: Encoder, plan: EmbedPlan, device: torch.device, dtype, min_seconds: float) -> tuple:
    """(compile seconds, images/s) of the compiled model at the plan's batch and layout; (inf, 0) where
    compiling fails (no C++ compiler, an op inductor cannot lower): then the plan stays eager."""
    x = torch.rand((plan.batch_size, *encoder.input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with plan_applied(encoder, replace(plan, compile=True)), torch.inference_mode(), autocast(x.device, dtype):
            t0 = time.perf_counter()
            encoder(x)  # the first call compiles
            compile_seconds = time.perf_counter() - t0
            rate, _ = _time(encoder, x, dtype, min_seconds)
    except Exception as err:  # noqa: BLE001 - any compiler failure means: stay eager
        log.warning("torch.compile of %s failed, the plan stays eager: %s", encoder.name, first_line(err))
        return (math.inf, 0.0)
    return (compile_seconds, rate)


def compiled(module: nn.Module) -> nn.Module:
    """``torch.compile(module)``, made once per module and kept beside it (the tuner's trial and the embedding
    pass share its graphs). Static shapes: a batch of another size compiles its own graph."""
    held = module.__dict__.get("_synbench_compiled")  # a plain attribute: never a submodule of its own wrapper
    if held is None:
        held = module.__dict__["_synbench_compiled"] = torch.compile(module, dynamic=False)
    return held


@contextlib.contextmanager
def plan_applied(encoder: Encoder, plan: EmbedPlan):
    """The plan's memory layout and compilation for the embedding pass only; the eager model in the default
    layout again after it, so passes that follow (the metrics' own) compute the same bits whatever the plan."""
    apply_layout(encoder, plan.channels_last)
    eager = encoder.backbone
    if plan.compile:
        encoder.backbone = compiled(eager)
    try:
        yield encoder
    finally:
        encoder.backbone = eager
        apply_layout(encoder, False)


def apply_layout(encoder: Encoder, channels_last: bool) -> Encoder:
    return encoder.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def tune_encoder(encoder: Encoder, device: torch.device, precision: Precision, embed, images: int, largest: int,
                 cache_dir: str | Path | None) -> EmbedPlan:
    """The ``embed`` config group applied to one loaded encoder: its plan (explicit, cached or timed; applied
    with ``plan_applied``). Every app that embeds goes through here."""
    return plan_embedding(encoder, device, precision, embed.batch_size, embed.channels_last, list(embed.tune_batches),
                          embed.tune_max_pass_seconds, embed.tune_min_seconds, embed.tune_budget,
                          images=images, largest=largest, cache_dir=cache_dir, compile=embed.compile,
                          compile_min_seconds=embed.tune_compile_min_seconds)


def _report(plan: EmbedPlan, encoder: Encoder) -> None:
    layout = "channels_last" if plan.channels_last else "contiguous"
    log.info("embedding plan for %s (%s in %.1f s): batch %d, %s%s, %.1f images/s eager, %d threads",
             encoder.name, plan.source, plan.seconds, plan.batch_size, layout, ", compiled" if plan.compile else "",
             plan.images_per_s or float("nan"), torch.get_num_threads())


def _search(encoder, device, dtype, batches, layouts, max_pass_seconds, min_seconds, over_budget) -> list[tuple]:
    """Time every layout at each batch size in increasing order; a layout drops out once a batch is clearly
    slower than its best or one pass outlasts ``max_pass_seconds``; all stop at the first CUDA out-of-memory
    (the previous batch was the largest that fits) or when ``over_budget(best rate)``."""
    gen = torch.Generator(device=device).manual_seed(0)
    trials, best, active = [], {layout: 0.0 for layout in layouts}, list(layouts)
    for batch in batches:
        for layout in list(active):
            fmt = torch.channels_last if layout else torch.contiguous_format
            encoder.to(memory_format=fmt)
            try:
                x = torch.rand((batch, *encoder.input_shape), generator=gen, device=device)
                rate, one_pass = _time(encoder, x.contiguous(memory_format=fmt) if x.dim() == 4 else x, dtype,
                                       min_seconds)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                return trials
            trials.append((batch, layout, rate))
            best[layout] = max(best[layout], rate)
            if rate < SLOWER * best[layout] or one_pass > max_pass_seconds:
                active.remove(layout)
        if not active or over_budget(max(best.values())):
            break
    return trials


def _time(encoder, x, dtype, min_seconds) -> tuple[float, float]:
    """(images/s, seconds of one pass): one warm-up pass, then passes until ``min_seconds`` have run."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), autocast(x.device, dtype):
        encoder(x)
        sync()
        passes, t0 = 0, time.perf_counter()
        while True:
            encoder(x)
            sync()
            passes += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return passes * len(x) / elapsed, elapsed / passes

"""The one embedding pass every metric shares: mixture samples per scale (or a labelled dataset's splits) ->
features, on the device.

Pixels are generated on the device batch by batch and fed straight to the model (bf16 autocast on CUDA);
features land in a preallocated device tensor, so nothing goes back to the host inside the loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import torch

from synbench.data import GaussianMixture, InputTransform, LabelledDataset, Split
from synbench.encoders.base import Encoder, Precision, autocast
from synbench.encoders.cache import EmbeddingCache
from synbench.progress import bar

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Features of the train and test sets at every scale: ``z[split]`` is [S, n, D], ``y[split]`` is [S, n]."""

    scales: list[float]
    z: dict[Split, torch.Tensor]
    y: dict[Split, torch.Tensor]
    images_embedded: int  # forward passes actually run (0 when everything came from the cache)
    seconds: float


def embed_stream(encoder: Encoder, mixture: GaussianMixture, scale: float, split: Split, n: int, seed: int,
                 batch_size: int, device: torch.device, precision: Precision, channels_last: bool):
    """Embed ``n`` samples of one (scale, split); returns (features [n, D] float32, labels [n])."""
    return embed_batches(encoder, mixture.stream(scale, split, n, seed, batch_size, device), n, device, precision,
                         channels_last)


def embed_batches(encoder: Encoder, batches, n: int, device: torch.device, precision: Precision,
                  channels_last: bool, prepare=None):
    """The forward loop of every embedding pass: ``n`` inputs from ``batches`` of (inputs, labels), each
    through ``prepare`` (a dataset's transform) and the encoder; (features [n, D] float32, labels [n])."""
    z = torch.empty((n, encoder.num_features), dtype=torch.float32, device=device)
    y = torch.empty(n, dtype=torch.long, device=device)
    start = 0
    with torch.inference_mode(), autocast(device, precision.autocast_dtype(device)):
        for x, labels in batches:
            if prepare is not None:
                x = prepare(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            stop = start + len(labels)
            z[start:stop] = encoder(x).float()
            y[start:stop] = labels
            start = stop
    return z, y


def with_backoff(embed, batch_size: int):
    """``embed(batch_size)``, halving the batch on CUDA out-of-memory until it fits (or is 1); returns
    (result, the batch size that worked)."""
    while True:
        try:
            return embed(batch_size), batch_size
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory: retrying with batch size %d", batch_size)


def embed_mixture(encoder: Encoder, mixture: GaussianMixture, scales: list[float], n: dict[Split, int],
                  seed: int, batch_size: int, device: torch.device, precision: Precision,
                  channels_last: bool = False, cache: EmbeddingCache | None = None,
                  progress: bool = True) -> Embeddings:
    """Embed train and test sets at every scale, reusing cached scales; halves the batch on CUDA OOM."""
    t0 = time.perf_counter()
    z = {split: [] for split in n}
    y = {split: [] for split in n}
    embedded = 0
    scale_bar = bar(scales, "embed", "scale", progress, leave=True)
    for scale in scale_bar:
        key = cache_key(encoder, mixture, scale, n, seed, device, precision, batch_size, channels_last)
        hit = cache.get(key, device) if cache is not None else None
        if hit is None:
            hit = {}
            for split, count in n.items():
                (hit[f"z_{split.value}"], hit[f"y_{split.value}"]), batch_size = with_backoff(
                    lambda b: embed_stream(encoder, mixture, scale, split, count, seed, b, device, precision,
                                           channels_last), batch_size)
                embedded += count
            if cache is not None:
                cache.put(key, hit)
        for split in n:
            z[split].append(hit[f"z_{split.value}"])
            y[split].append(hit[f"y_{split.value}"])
        scale_bar.set_postfix(scale=f"{scale:g}")
    return Embeddings(scales=list(scales), z={s: torch.stack(v) for s, v in z.items()},
                      y={s: torch.stack(v) for s, v in y.items()}, images_embedded=embedded,
                      seconds=time.perf_counter() - t0)


@dataclass
class LabelledFeatures:
    """A real dataset's features, beside the data and the transform that made them (metrics that attack go back
    through both): ``z[split]`` is [n, D], ``y[split]`` is [n]."""

    data: LabelledDataset
    transform: InputTransform
    z: dict[Split, torch.Tensor]
    y: dict[Split, torch.Tensor]
    images_embedded: int
    seconds: float


def embed_dataset(encoder: Encoder, data: LabelledDataset, transform: InputTransform, batch_size: int,
                  device: torch.device, precision: Precision, channels_last: bool = False,
                  cache: EmbeddingCache | None = None, progress: bool = True,
                  splits: tuple[Split, ...] = (Split.train, Split.test)) -> LabelledFeatures:
    """Features of a labelled dataset's ``splits`` through ``transform`` and the encoder, one cache entry per split
    (keyed by that split's content hash), so a comparison on a job's test images reuses the job's pass."""
    t0 = time.perf_counter()
    z, y, embedded = {}, {}, 0
    for split in bar(splits, f"embed {data.name}", "split", progress, leave=True):
        key = {"encoder": encoder.identity, "data": data.split_digest[split], "n": data.count(split),
               "transform": transform.describe(),
               **runtime_key(encoder, device, precision, batch_size, channels_last)}
        hit = cache.get(key, device) if cache is not None else None
        if hit is None:
            (hz, hy), batch_size = with_backoff(
                lambda b: embed_batches(encoder, data.stream(split, b, device), data.count(split), device, precision,
                                        channels_last, transform), batch_size)
            hit = {"z": hz, "y": hy}
            embedded += data.count(split)
            if cache is not None:
                cache.put(key, hit)
        z[split], y[split] = hit["z"], hit["y"]
    return LabelledFeatures(data, transform, z, y, embedded, time.perf_counter() - t0)


def mixture_for(m, encoder: Encoder) -> GaussianMixture:
    """The ``mixture`` config in the encoder's input space; ``mixture.mean: null`` is the middle of the
    encoder's declared value range. The direction is built here, so a bad one fails before any run."""
    mixture = GaussianMixture(shape=encoder.input_shape, prior=m.prior, noise_std=m.noise_std,
                              mean=encoder.centre if m.mean is None else m.mean, direction=m.direction,
                              direction_seed=m.direction_seed, lowfreq_res=m.lowfreq_res, chunk_size=m.chunk_size)
    mixture.mu("cpu")
    return mixture


def cache_key(encoder: Encoder, mixture: GaussianMixture, scale: float, n: dict[Split, int], seed: int,
              device: torch.device, precision: Precision, batch_size: int, channels_last: bool) -> dict:
    """Everything that determines one scale's features (the data never depend on the batch size: chunks are
    seeded; the features do, in their last bits, through the plan in ``runtime_key``)."""
    return {
        "encoder": encoder.identity,
        "mixture": asdict(mixture),
        "scale": float(scale),
        "n": {split.value: int(count) for split, count in n.items()},
        "seed": int(seed),
        **runtime_key(encoder, device, precision, batch_size, channels_last),
    }


def runtime_key(encoder: Encoder, device: torch.device, precision: Precision, batch_size: int,
                channels_last: bool) -> dict:
    """What, besides model and data, changes features in their last bits: device kind, autocast, torch, and the
    embedding plan (another batch size, layout or compilation runs other kernels), so a cache entry never serves
    another's."""
    dtype = precision.autocast_dtype(device)
    return {"device": device.type, "autocast": str(dtype) if dtype else "fp32",
            "torch": torch.__version__.split("+")[0],
            "plan": {"batch_size": int(batch_size), "channels_last": bool(channels_last), "compiled": encoder.compiled}}

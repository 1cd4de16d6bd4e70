"""The symmetric binary Gaussian mixture of SynBench (spec section 1), streamed on the device.

``x = mean + y_sign * s * mu + noise_std * N(0, I)`` in input units, shaped like the encoder's input. Sigma is never
materialised. Samples come in fixed-size chunks, each drawn by its own generator whose seed is derived from
(seed, scale, split, chunk index): the bytes of sample i do not depend on the batch size, the device's batch
back-off or the other scales of the grid, so the embedding cache can be keyed per scale.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import Enum
from typing import Iterator

import torch
import torch.nn.functional as F

DIRECTIONS = ("ones", "random", "lowfreq")


class Split(str, Enum):
    train = "train"
    test = "test"


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of values: stable across processes, platforms and Python versions."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def mean_direction(kind: str, shape: tuple[int, ...], seed: int, lowfreq_res: int) -> torch.Tensor:
    """Unit-norm mean direction ``mu`` of ``shape`` (C x spatial...), built on the CPU so every device sees the
    same one.

    ``ones``: the paper's ``1_d / sqrt(d)``, a global brightness (or DC) shift. ``random``: a seeded Gaussian
    vector. ``lowfreq``: a seeded C x r (x r) pattern, linearly upsampled to the spatial size (images: H x W,
    audio: L).
    """
    gen = torch.Generator().manual_seed(seed)
    if kind == "ones":
        mu = torch.ones(shape, dtype=torch.float64)
    elif kind == "random":
        mu = torch.randn(shape, generator=gen, dtype=torch.float64)
    elif kind == "lowfreq":
        spatial = tuple(shape[1:])
        if not 1 <= len(spatial) <= 3:
            raise ValueError(f"mixture.direction='lowfreq' needs 1 to 3 spatial axes; the input shape is {list(shape)}")
        coarse = torch.randn((1, shape[0], *[lowfreq_res] * len(spatial)), generator=gen, dtype=torch.float64)
        mode = ("linear", "bilinear", "trilinear")[len(spatial) - 1]
        mu = F.interpolate(coarse, size=spatial, mode=mode, align_corners=False)[0]
    else:
        raise ValueError(f"mixture.direction={kind!r} is not supported; valid: {', '.join(DIRECTIONS)}")
    return (mu / mu.norm()).to(torch.float32)


@dataclass(frozen=True)
class GaussianMixture:
    """One mixture setting in input space; ``scale`` multiplies the unit mean direction. ``shape`` is the
    encoder's input shape (C x H x W images, C x L audio) and ``mean`` the centre of its value range."""

    shape: tuple[int, ...]
    prior: float
    noise_std: float
    mean: float
    direction: str
    direction_seed: int
    lowfreq_res: int
    chunk_size: int

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def mu(self, device: torch.device | str) -> torch.Tensor:
        return mean_direction(self.direction, self.shape, self.direction_seed, self.lowfreq_res).to(device)

    def chunk(self, scale: float, split: Split, index: int, size: int, seed: int, mu: torch.Tensor):
        """Chunk ``index`` of ``size`` samples: (inputs [size, *shape] float32, labels [size] int64)."""
        gen = torch.Generator(device=mu.device).manual_seed(
            derive_seed("mixture-chunk", seed, float(scale), Split(split).value, index))
        labels = (torch.rand(size, generator=gen, device=mu.device) < self.prior).long()
        x = torch.randn((size, *self.shape), generator=gen, device=mu.device)
        x.mul_(self.noise_std).add_(self.mean)
        sign = (2 * labels - 1).to(x.dtype).view(-1, *[1] * len(self.shape))
        x.add_(sign * (scale * mu))
        return x, labels

    def stream(self, scale: float, split: Split, n: int, seed: int, batch_size: int,
               device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``n`` samples in batches of ``batch_size`` (the last may be short), built from fixed chunks.

        At most a batch's and a chunk's pixels live at a time: the raw synthetic images are never all held in
        memory. A batch inside one chunk is a view of it (no copy); only a batch spanning chunks is joined."""
        mu = self.mu(device)
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []  # drawn, not yet yielded, in order
        held = 0
        for index, start in enumerate(range(0, n, self.chunk_size)):
            pieces.append(self.chunk(scale, split, index, min(self.chunk_size, n - start), seed, mu))
            held += len(pieces[-1][1])
            last = start + self.chunk_size >= n
            while held >= batch_size or (last and held):
                take = min(batch_size, held)
                parts = []
                while take:
                    x, y = pieces[0]
                    if len(y) <= take:
                        parts.append(pieces.pop(0))
                    else:
                        parts.append((x[:take], y[:take]))
                        pieces[0] = (x[take:], y[take:])
                    take -= len(parts[-1][1])
                held -= sum(len(y) for _, y in parts)
                yield parts[0] if len(parts) == 1 else (torch.cat([x for x, _ in parts]),
                                                        torch.cat([y for _, y in parts]))

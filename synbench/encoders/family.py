"""A family of small MNIST encoders of graded quality, for checking whether label-free scores predict downstream
performance on real trained models (``experiment=validity_mnist``).

Each member is an architecture plus a training recipe; ``scripts/train_family.py`` trains them (seeded, minutes
on 2 CPU cores) into ``outputs/family/<member>.safetensors``, and ``model=mnist_family model.name=<member>``
loads one through ``model=custom`` (``build`` is its ``module._target_``). Inputs: 1 x 28 x 28 in [0, 1],
normalised ``(x - 0.5) / 0.5`` by the encoder; every member returns 64 features (the penultimate layer).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

FEATURES = 64


class Linear(nn.Module):
    """One linear map of the pixels: the family's floor among trained encoders."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, FEATURES))

    def forward(self, x):
        return self.net(x)


class MLP(nn.Module):
    def __init__(self, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, FEATURES),
                                 nn.ReLU())

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Two conv + pool stages (``width`` and ``2 width`` channels) and a 64-wide fully connected layer."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, FEATURES), nn.ReLU())

    def forward(self, x):
        return self.net(x)


@dataclass(frozen=True)
class Member:
    arch: str  # linear | mlp | cnn
    width: int = 0  # cnn channels
    recipe: str = "none"  # none (the seeded init) | supervised | simclr
    steps: int = 0  # optimiser steps of the recipe
    seed: int = 0

    def build(self) -> nn.Module:
        return {"linear": Linear, "mlp": MLP}[self.arch]() if self.arch != "cnn" else CNN(self.width)


# From no training to the best supervised CNN; one self-supervised member that never saw a label.
MEMBERS = {
    "random_cnn_a": Member("cnn", 32, seed=0),
    "random_cnn_b": Member("cnn", 32, seed=1),
    "linear": Member("linear", recipe="supervised", steps=900),
    "mlp_short": Member("mlp", recipe="supervised", steps=60),
    "mlp": Member("mlp", recipe="supervised", steps=900),
    "cnn_w4_short": Member("cnn", 4, "supervised", steps=60),
    "cnn_w8": Member("cnn", 8, "supervised", steps=450),
    "cnn_w32": Member("cnn", 32, "supervised", steps=900),
    "simclr_cnn": Member("cnn", 32, "simclr", steps=300),
}


def build(member: str) -> nn.Module:
    """``module._target_`` of ``model=mnist_family``: the member's architecture (weights: its checkpoint)."""
    if member not in MEMBERS:
        raise ValueError(f"model.name={member!r} is not a member of the MNIST family; valid: {', '.join(MEMBERS)}")
    return MEMBERS[member].build()

"""Two families of small encoders of graded quality, one trained on MNIST and one on Fashion-MNIST, for checking
whether label-free scores predict downstream performance on real trained models (``experiment=validity_mnist``
and ``experiment=validity_fashion_mnist``).

A member is a recipe (an architecture and how it is trained) and a training seed, named ``<recipe>_s<seed>``;
the seeds of a recipe differ in init and data order only, so their spread is the recipe's own noise, which the
study's statistics resample as a unit. ``scripts/train_family.py`` trains them (seeded, on 2 CPU cores) into
``outputs/family/<domain>/<member>.safetensors``, and ``model=family model.name=<member> model.module.domain=<domain>``
loads one through ``model=custom`` (``build`` is its ``module._target_``). Inputs: 1 x 28 x 28 in [0, 1],
normalised ``(x - 0.5) / 0.5`` by the encoder; every member returns 64 features (the penultimate layer).

The recipes span quality and kind, fixed before any study was run (issue 32): an untrained CNN, a linear map, an
MLP, CNNs of width 4 and 16, an early and a late checkpoint of one training run, two that reach high accuracy
through an unusual representation (half the labels replaced by random ones; an 8-wide bottleneck under the 64
features) and two that never see a label (SimCLR; an autoencoder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

FEATURES = 64
DOMAINS = ("mnist", "fashion_mnist")  # the data a family trains on; the other is its transfer task
SEEDS = (0, 1, 2)


def cnn_trunk(width: int) -> list[nn.Module]:
    """Two conv + pool stages (``width`` and ``2 width`` channels), flattened: 2 width x 7 x 7 values."""
    return [nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]


def build_arch(arch: str, width: int) -> nn.Module:
    """``linear``: one linear map of the pixels; ``mlp``: 784-256-64; ``cnn``: the trunk and a 64-wide layer;
    ``bottleneck``: the trunk, an 8-wide linear layer, then the 64 features (ReLU of a rank-8 map)."""
    if arch == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, FEATURES))
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU(), nn.Linear(256, FEATURES), nn.ReLU())
    if arch == "cnn":
        return nn.Sequential(*cnn_trunk(width), nn.Linear(2 * width * 49, FEATURES), nn.ReLU())
    if arch == "bottleneck":
        # no ReLU on the 8 units: 8 ReLUs can all die, and the member would be constant, not narrow
        return nn.Sequential(*cnn_trunk(width), nn.Linear(2 * width * 49, 8), nn.Linear(8, FEATURES), nn.ReLU())
    raise ValueError(f"unknown architecture {arch!r}; valid: linear, mlp, cnn, bottleneck")


@dataclass(frozen=True)
class Recipe:
    arch: str  # linear | mlp | cnn | bottleneck
    width: int = 0  # cnn / bottleneck channels
    objective: str = "none"  # none (the seeded init) | supervised | simclr | autoencoder
    steps: int = 0  # optimiser steps
    label_noise: float = 0.0  # fraction of training labels replaced by seeded uniform random labels
    run: str = ""  # recipes with the same run share one training run (its snapshot at ``steps``); "": its own

    def build(self) -> nn.Module:
        return build_arch(self.arch, self.width)


RECIPES = {
    "random_cnn": Recipe("cnn", 8),
    "linear": Recipe("linear", objective="supervised", steps=400),
    "mlp": Recipe("mlp", objective="supervised", steps=400),
    "cnn_w4": Recipe("cnn", 4, "supervised", steps=300),
    "cnn_w8_early": Recipe("cnn", 8, "supervised", steps=20, run="cnn_w8"),
    "cnn_w8": Recipe("cnn", 8, "supervised", steps=400, run="cnn_w8"),
    "cnn_w8_noisy": Recipe("cnn", 8, "supervised", steps=400, label_noise=0.5),
    "bottleneck": Recipe("bottleneck", 8, "supervised", steps=400),
    "simclr": Recipe("cnn", 8, "simclr", steps=150),
    "autoencoder": Recipe("cnn", 8, "autoencoder", steps=300),
}
UNTRAINED = "random_.*"  # the recipes that never trained (the report's --untrained)
MEMBERS = [f"{recipe}_s{seed}" for recipe in RECIPES for seed in SEEDS]


def parse(name: str) -> tuple[str, Recipe, int]:
    """``<recipe>_s<seed>`` -> (recipe name, recipe, seed); anything else is a one-line error naming the valid."""
    m = re.fullmatch(r"(.+)_s(\d+)", name)
    if not m or m.group(1) not in RECIPES:
        raise ValueError(f"model.name={name!r} is not a member of the family: <recipe>_s<seed> with recipe one of "
                         f"{', '.join(RECIPES)} (e.g. cnn_w8_s0)")
    return m.group(1), RECIPES[m.group(1)], int(m.group(2))


def build(member: str, domain: str) -> nn.Module:
    """``module._target_`` of ``model=family``: the member's architecture (weights: its checkpoint, which
    ``domain`` locates)."""
    if domain not in DOMAINS:
        raise ValueError(f"model.module.domain={domain!r} is not a family's domain; valid: {', '.join(DOMAINS)}")
    return parse(member)[1].build()

"""Two families of small encoders of graded quality, one trained on MNIST and one on Fashion-MNIST, for checking
whether label-free scores predict downstream performance on real trained models (``experiment=validity_mnist``
and ``experiment=validity_fashion_mnist``).

A member is a recipe (an architecture and how it is trained) and a training seed, named ``<recipe>_s<seed>``;
the seeds of a recipe differ in init and data order only, so their spread is the recipe's own noise, which the
study's statistics resample as a unit. ``scripts/train_family.py`` trains them (seeded, on 2 CPU cores) into
``outputs/family/<domain>/<member>.safetensors``, and ``model=family model.name=<member> model.module.domain=<domain>``
loads one through ``model=custom``'s keys (``load`` is its ``_target_``, ``build`` its ``module._target_``).
Inputs: 1 x 28 x 28 in [0, 1], normalised ``(x - 0.5) / 0.5`` by the encoder; every member returns 64 features
(the penultimate layer).

The recipes span quality and kind, fixed before any study was run (issue 32): an untrained CNN, a linear map, an
MLP, CNNs of width 4 and 16, an early and a late checkpoint of one training run, two that reach high accuracy
through an unusual representation (half the labels replaced by random ones; an 8-wide bottleneck under the 64
features) and two that never see a label (SimCLR; an autoencoder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from synbench.encoders.base import Encoder, EncoderError
from synbench.encoders.custom import wrap_module

FEATURES = 64
DOMAINS = ("mnist", "fashion_mnist")  # the data a family trains on; the other is its transfer task
SEEDS = (0, 1, 2)
INPUT_SHAPE = (1, 28, 28)  # grey 28 x 28 images, as conf/model/family.yaml declares
ROOT = Path(__file__).resolve().parents[2]  # the repository, whose scripts/ train the family
TRAIN_OUT = ROOT / "outputs" / "family"  # scripts/train_family.py's default --out
# scripts/train_family.py's default --data per domain, and the command that puts it there
DATA = {"mnist": ROOT / "outputs" / "data" / "mnist.npz", "fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
GET_DATA = {"mnist": "python scripts/prepare_mnist.py", "fashion_mnist": "apt-get install dataset-fashion-mnist"}


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


def check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"model.module.domain={domain!r} is not a family's domain; valid: {', '.join(DOMAINS)}")


def build(member: str, domain: str) -> nn.Module:
    """``module._target_`` of ``model=family``: the member's architecture (weights: its checkpoint, which
    ``domain`` locates)."""
    check_domain(domain)
    return parse(member)[1].build()


def not_trained(member: str, domain: str, checkpoint: Path) -> str:
    """The line for a valid member whose checkpoint is missing: the commands that write it."""
    out = checkpoint.parent.parent
    if checkpoint.parent.name != domain or checkpoint.name != f"{member}.safetensors":  # a path of the user's own
        return (f"model.checkpoint={str(checkpoint)!r} does not exist; python scripts/train_family.py --domain "
                f"{domain} --members {member} --out OUT writes OUT/{domain}/{member}.safetensors")
    prepare = "" if DATA[domain].exists() else f"{GET_DATA[domain]}, then "
    to = "" if out.resolve() == TRAIN_OUT.resolve() else f" --out {out}"
    return (f"model.name={member!r} of the {domain} family is not trained yet (model.checkpoint="
            f"{str(checkpoint)!r} does not exist): run {prepare}python scripts/train_family.py --domain {domain}{to} "
            f"(every member; add --members {member} for this one only)")


def load(name: str, module, checkpoint: str | None, **spec) -> Encoder:
    """``_target_`` of ``model=family``: the family's own checks (domain, member, trained yet), each one line
    naming what is valid, before ``wrap_module`` builds anything; its generic "checkpoint does not exist"
    would otherwise hide them (the checkpoint path holds the member and the domain)."""
    member, domain = str(module["member"]), str(module["domain"])
    check_domain(domain)
    parse(member)
    if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
        raise EncoderError(not_trained(member, domain, Path(checkpoint).expanduser().absolute()))
    return wrap_module(name, module, checkpoint=checkpoint, **spec)

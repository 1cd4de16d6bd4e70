"""The validity study's families of small encoders, one trained on MNIST and one on Fashion-MNIST, for checking
whether label-free scores predict downstream performance on real trained models (``experiment=validity_mnist``
and ``experiment=validity_fashion_mnist``).

The recipes are not chosen here: they are drawn by ``synbench/preregistration.py`` from the space and seed of
``conf/validity/preregistration.yaml`` (``python -m synbench.report.design`` lists them): 36 trained recipes
``space<k>_<arch>``, 4 untrained inits ``random_<arch>`` and 24 SimCLR configurations ``simclr_sweep<k>``. A
member is a recipe and a training seed, ``<recipe>_s<seed>``; the seeds of a recipe differ in init and data order
only, so their spread is the recipe's own noise, which the study's statistics resample as a unit.
``scripts/train_family.py`` trains them (seeded, on CPU) into ``outputs/family/<domain>/<member>.safetensors``,
and ``model=family model.name=<member> model.module.domain=<domain>`` loads one through ``model=custom``'s keys
(``load`` is its ``_target_``, ``build`` its ``module._target_``). Inputs: 1 x 28 x 28 in [0, 1], normalised
``(x - 0.5) / 0.5`` by the encoder.

What the file leaves to the code, fixed here before the study's first job (so the recipes stay cheap enough
for the study's 2-hour budget on 2 CPU cores, whatever width the sampler draws):
- every architecture is a fixed trunk and a feature layer: ``[Linear(T, b)] -> Linear(., width) -> ReLU``,
  where ``width`` is the recipe's feature width and ``b`` its linear bottleneck (none when 0); the trunks:
  ``mlp`` 784-256 (ReLU), ``cnn`` two conv + pool stages (16, 32 channels; 1,568 values), ``resnet`` a strided
  stem and two basic residual blocks (16 channels at 14 x 14, 32 at 7 x 7) average-pooled to 2 x 2 (128
  values), ``vit`` 7 x 7 patches, 2 pre-norm transformer blocks of width 32 (4 heads, no dropout), mean-pooled
  (32 values);
- augmentation ``none | light | strong`` is a view strength 0 | 0.5 | 1 (``views`` in scripts/train_family.py);
  the sweep draws its strength directly;
- SimCLR outside the sweep: temperature 0.5, projector width 64.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from synbench.encoders.base import Encoder, EncoderError
from synbench.encoders.custom import wrap_module
from synbench.preregistration import load as load_preregistration

DOMAINS = ("mnist", "fashion_mnist")  # the data a family trains on; the other is its transfer task
INPUT_SHAPE = (1, 28, 28)  # grey 28 x 28 images, as conf/model/family.yaml declares
ROOT = Path(__file__).resolve().parents[2]  # the repository, whose scripts/ train the family
TRAIN_OUT = ROOT / "outputs" / "family"  # scripts/train_family.py's default --out
# scripts/train_family.py's default --data per domain, and the command that puts it there
DATA = {"mnist": ROOT / "outputs" / "data" / "mnist.npz", "fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
GET_DATA = {"mnist": "python scripts/prepare_mnist.py", "fashion_mnist": "apt-get install dataset-fashion-mnist"}
STRENGTH = {"none": 0.0, "light": 0.5, "strong": 1.0}  # augmentation -> view strength
SIMCLR_TEMPERATURE, SIMCLR_PROJECTOR = 0.5, 64  # SimCLR outside the sweep
VIT_WIDTH, VIT_PATCH = 32, 7


class ResidualBlock(nn.Module):
    """Two 3 x 3 convolutions and a skip (a strided 1 x 1 convolution where the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class TinyViT(nn.Module):
    """7 x 7 patches of a 28 x 28 image (16 tokens), learned positions, pre-norm transformer blocks, mean pool."""

    def __init__(self, width: int = VIT_WIDTH, depth: int = 2, heads: int = 4):
        super().__init__()
        self.patch = nn.Conv2d(1, width, VIT_PATCH, VIT_PATCH)
        self.position = nn.Parameter(torch.randn(1, (28 // VIT_PATCH) ** 2, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.position
        return self.norm(self.blocks(tokens)).mean(1)


def trunk(arch: str) -> tuple[nn.Module, int]:
    """The architecture's trunk and the number of values it hands the feature layer."""
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU()), 256
    if arch == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()), 32 * 49
    if arch == "resnet":
        return nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), ResidualBlock(16, 16, 1), ResidualBlock(16, 32, 2),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten()), 32 * 4
    if arch == "vit":
        return TinyViT(), VIT_WIDTH
    raise ValueError(f"unknown architecture {arch!r}; valid: mlp, cnn, resnet, vit")


@dataclass(frozen=True)
class Recipe:
    """One drawn recipe, as the code trains it (``from_design`` maps the pre-registration's entry)."""
    architecture: str  # mlp | cnn | resnet | vit
    feature_width: int  # the encoder's output width
    objective: str = "none"  # none (the seeded init) | supervised | simclr | autoencoder
    steps: int = 0  # optimiser steps
    learning_rate: float = 1e-3  # Adam's
    label_noise: float = 0.0  # fraction of training labels replaced by seeded uniform random labels
    bottleneck: int = 0  # width of a linear layer under the features; 0: none
    view_strength: float = 0.0  # scales the random views' ranges (augmentation; SimCLR's two views)
    temperature: float = SIMCLR_TEMPERATURE  # SimCLR's NT-Xent
    projector_width: int = SIMCLR_PROJECTOR  # SimCLR's projection head (hidden and output width)

    @classmethod
    def from_design(cls, r: dict) -> "Recipe":
        strength = r.get("augmentation_strength", STRENGTH[r.get("augmentation", "none")])
        return cls(r["architecture"], int(r["feature_width"]), r["objective"], int(r.get("steps", 0)),
                   float(r.get("learning_rate", 1e-3)), float(r.get("label_noise", 0.0)), int(r.get("bottleneck", 0)),
                   float(strength), float(r.get("temperature", SIMCLR_TEMPERATURE)),
                   int(r.get("projector_width", SIMCLR_PROJECTOR)))

    def build(self) -> nn.Module:
        body, values = trunk(self.architecture)
        under = [nn.Linear(values, self.bottleneck)] if self.bottleneck else []
        # no ReLU on the bottleneck: its few units could all die, and the member would be constant, not narrow
        return nn.Sequential(body, *under, nn.Linear(self.bottleneck or values, self.feature_width), nn.ReLU())


_PRE = load_preregistration()
RECIPES = {r["name"]: Recipe.from_design(r) for r in _PRE["recipes"]}
SEEDS = tuple(_PRE["design"]["seeds"])
_KINDS = {kind: [r["name"] for r in _PRE["recipes"] if r["kind"] == kind] for kind in ("space", "untrained", "sweep")}
VALID = (f"{_KINDS['space'][0]} to {_KINDS['space'][-1]}, {', '.join(_KINDS['untrained'])}, "
         f"{_KINDS['sweep'][0]} to {_KINDS['sweep'][-1]}")  # the recipe names, said in one line
UNTRAINED = "random_.*"  # the recipes that never trained (the report's --untrained)
MEMBERS = [f"{recipe}_s{seed}" for recipe in RECIPES for seed in SEEDS]


def parse(name: str) -> tuple[str, Recipe, int]:
    """``<recipe>_s<seed>`` -> (recipe name, recipe, seed); anything else is a one-line error naming the valid."""
    m = re.fullmatch(r"(.+)_s(\d+)", name)
    if not m or m.group(1) not in RECIPES:
        raise ValueError(f"model.name={name!r} is not a member of the family: <recipe>_s<seed> with seed "
                         f"{' or '.join(map(str, SEEDS))} and a pre-registered recipe ({VALID}; python -m "
                         f"synbench.report.design lists them)")
    return m.group(1), RECIPES[m.group(1)], int(m.group(2))


def check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"model.module.domain={domain!r} is not a family's domain; valid: {', '.join(DOMAINS)}")


def build(member: str, domain: str) -> nn.Module:
    """``module._target_`` of ``model=family``: the member's architecture (weights: its checkpoint, which
    ``domain`` locates)."""
    check_domain(domain)
    return parse(member)[1].build()


def train_command(member: str, domain: str, out: Path) -> str:
    to = "" if out.resolve() == TRAIN_OUT.resolve() else f" --out {out}"
    prepare = "" if DATA[domain].exists() else f"{GET_DATA[domain]}, then "
    return f"{prepare}python scripts/train_family.py --domain {domain}{to}"


def not_trained(member: str, domain: str, checkpoint: Path) -> str:
    """The line for a valid member whose checkpoint is missing: the commands that write it."""
    if checkpoint.parent.name != domain or checkpoint.name != f"{member}.safetensors":  # a path of the user's own
        return (f"model.checkpoint={str(checkpoint)!r} does not exist; python scripts/train_family.py --domain "
                f"{domain} --members {member} --out OUT writes OUT/{domain}/{member}.safetensors")
    return (f"model.name={member!r} of the {domain} family is not trained yet (model.checkpoint="
            f"{str(checkpoint)!r} does not exist): run {train_command(member, domain, checkpoint.parent.parent)} "
            f"(every member; add --members {member} for this one only)")


def checkpoint_recipe(path: Path) -> dict:
    """The recipe a checkpoint was trained from (its metadata, written by scripts/train_family.py); {} if none, or
    if the file is missing, torn or not a safetensors file (such a checkpoint is retrained, never trusted)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get("recipe", "{}"))
    except Exception:  # safetensors raises its own errors, OSError and JSON errors alike
        return {}


def load(name: str, module, checkpoint: str | None, **spec) -> Encoder:
    """``_target_`` of ``model=family``: the family's own checks (domain, member, trained yet, trained from this
    recipe), each one line naming what is valid, before ``wrap_module`` builds anything; its generic errors
    ("checkpoint does not exist", a shape mismatch) would otherwise hide them."""
    member, domain = str(module["member"]), str(module["domain"])
    check_domain(domain)
    _, recipe, _ = parse(member)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser().absolute()
        if not path.is_file():
            raise EncoderError(not_trained(member, domain, path))
        trained = checkpoint_recipe(path)
        if {k: trained.get(k) for k in asdict(recipe)} != asdict(recipe):  # steps_run: --steps-scale's
            raise EncoderError(f"model.checkpoint={str(path)!r} was not trained from the registered recipe "
                               f"{member.rsplit('_s', 1)[0]} (an older family's, or another file): run "
                               f"{train_command(member, domain, path.parent.parent)} --members {member}, which "
                               f"retrains it")
    return wrap_module(name, module, checkpoint=checkpoint, **spec)

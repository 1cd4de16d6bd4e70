#!/usr/bin/env python
"""Train a family (``synbench/encoders/family.py``: the pre-registered recipes) into
``outputs/family/<domain>/<member>.safetensors``.

    python scripts/prepare_mnist.py && python scripts/train_family.py                  # the MNIST family
    python scripts/train_family.py --domain fashion_mnist                             # the Fashion-MNIST family
    python scripts/train_family.py --members random_cnn_s0,space29_mlp_s0 --steps-scale 0.3   # a CI subset

Seeded: the same member, seed and data give the same bytes on the same machine. A checkpoint records the recipe
and step scale it was trained with; one that matches the member's is kept (``--force`` retrains), any other (an
older family's, a quick run's shorter training) is retrained. Every recipe trains on the domain's train split
only, with Adam at the recipe's learning rate on mini-batches of 64 (SimCLR: 64 pairs of views), each image a
random view of the recipe's strength when it has one (``views``):
- supervised: a softmax head (not saved); ``label_noise`` replaces that fraction of the labels by seeded
  uniform random ones, once, before training;
- simclr: SimCLR's NT-Xent loss (Chen et al. 2020) at the recipe's temperature on two random views of each
  image, through a 2-layer projection head of the recipe's width (not saved); never a label;
- autoencoder: mean squared reconstruction of the (normalised, viewed) pixels through a width-256-784 decoder
  (not saved); never a label.
Untrained members save their seeded init (the same in both domains). Prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from synbench.data import Split  # noqa: E402
from synbench.data.mixture import derive_seed  # noqa: E402
from synbench.data.readers import read_idx, read_npz  # noqa: E402
from synbench.encoders.family import (DATA, DOMAINS, GET_DATA, INPUT_SHAPE, MEMBERS, TRAIN_OUT, Recipe,  # noqa: E402
                                       checkpoint_recipe, parse)
from synbench.encoders.weights import seeded  # noqa: E402
from synbench.files import replace_atomically  # noqa: E402

BATCH = 64  # images per step; SimCLR: pairs of views per step


def batches(n: int, size: int, steps: int, gen: torch.Generator):
    """``steps`` seeded mini-batches of row indices, epoch after epoch without replacement."""
    # A split smaller than a batch is one batch, the whole split in a fresh order each step (else no chunk is
    # ever full and this never yields). Not sampling with replacement: repeats would weight some images twice,
    # and in SimCLR a repeat is a negative that is the positive's own image.
    size, done = min(size, n), 0
    while done < steps:
        for idx in torch.randperm(n, generator=gen).split(size):
            if len(idx) < size or done == steps:
                break
            yield idx
            done += 1


def views(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """A random view of each image: rotation up to 30 deg, scale 1 +- 0.3, shift up to 6 px and pixel noise of
    sd 0.2, each range times ``strength`` (0.5, ``light``: +-15 deg, 0.85..1.15, +-3 px, sd 0.1)."""
    n = len(x)
    u = torch.rand((n, 4), generator=gen) - 0.5
    angle = u[:, 0] * math.radians(60) * strength
    scale = 1 + 0.6 * strength * u[:, 1]
    shift = u[:, 2:] * (2 * 6 / 14) * strength  # +-6 px x strength, in grid units of a 28-px image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return out + 0.2 * strength * torch.randn(x.shape, generator=gen)


class Objective:
    """What one recipe minimises: a head that is trained beside the encoder and thrown away, and the loss of
    one mini-batch of row indices."""

    def __init__(self, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        self.recipe, self.x, self.gen = recipe, x, gen
        width, kind = recipe.feature_width, recipe.objective
        if kind == "supervised":
            self.y = y.clone()
            noisy = torch.rand(len(y), generator=gen) < recipe.label_noise
            self.y[noisy] = torch.randint(0, int(y.max()) + 1, (int(noisy.sum()),), generator=gen)
            self.head = nn.Linear(width, int(y.max()) + 1)
        elif kind == "simclr":
            if recipe.view_strength <= 0:
                raise ValueError("SimCLR needs views: a view strength > 0")
            p = recipe.projector_width
            self.head = nn.Sequential(nn.Linear(width, p), nn.ReLU(), nn.Linear(p, p))
        elif kind == "autoencoder":
            self.head = nn.Sequential(nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 28 * 28))
        else:
            raise ValueError(f"unknown objective {kind!r}")

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return views(x, self.recipe.view_strength, self.gen) if self.recipe.view_strength > 0 else x

    def loss(self, net: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        x, kind = self.x[idx], self.recipe.objective
        if kind == "supervised":
            return F.cross_entropy(self.head(net(self.view(x))), self.y[idx])
        if kind == "autoencoder":
            x = self.view(x)
            return F.mse_loss(self.head(net(x)), x.flatten(1))
        z = F.normalize(self.head(net(torch.cat([self.view(x), self.view(x)]))), dim=1)
        sim = z @ z.T / self.recipe.temperature
        sim.fill_diagonal_(-math.inf)  # a view is not its own positive
        n = len(idx)
        return F.cross_entropy(sim, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


def train(recipe_name: str, seed: int, recipe: Recipe, steps: int, x, y, domain: str) -> tuple[nn.Module, list]:
    """One seeded training run of ``recipe`` for ``steps`` steps: the encoder and its mini-batch losses."""
    with seeded(derive_seed("family-init", recipe_name, seed)):  # not the domain: untrained inits are shared
        net = recipe.build()
    losses = []
    if recipe.objective == "none":
        return net, losses
    gen = torch.Generator().manual_seed(derive_seed("train-family", domain, recipe_name, seed))
    with seeded(derive_seed("family-head", recipe_name, seed)):  # the thrown-away head too, or no two runs match
        objective = Objective(recipe, x, y, gen)
    opt = torch.optim.Adam([*net.parameters(), *objective.head.parameters()], lr=recipe.learning_rate)
    for idx in batches(len(x), BATCH, steps, gen):
        batch_loss = objective.loss(net, idx)
        opt.zero_grad()
        batch_loss.backward()
        opt.step()
        losses.append(batch_loss.item())
    return net, losses


def trained_as(recipe: Recipe, steps: int) -> str:
    """The checkpoint's record of how it was trained: the recipe and the steps it actually ran."""
    return json.dumps({**asdict(recipe), "steps_run": steps}, sort_keys=True)


def read_domain(domain: str, path: Path | None):
    """The domain's data, or one line (``SystemExit``) saying what is wrong with ``--data`` and what is valid."""
    what = "an .npz with x (images) and y (labels), or a folder of IDX files"
    if path is None and not DATA[domain].exists():
        raise SystemExit(f"train_family: error: --data {DATA[domain]} is missing; run {GET_DATA[domain]}")
    path = path or DATA[domain]
    if not path.exists():
        raise SystemExit(f"train_family: error: --data {path} does not exist; give {what}")
    if path.is_file() and not zipfile.is_zipfile(path):  # said before the reader, with what --data may be
        raise SystemExit(f"train_family: error: --data {path} is not an .npz file (not a zip archive); give {what}")
    reader = read_idx if path.is_dir() else read_npz
    try:
        # the split of conf/dataset/{mnist,fashion_mnist}.yaml: the data's own train split, else 80% seeded
        data = reader(domain, str(path), test_fraction=0.2, split_seed=0)
    except ValueError as err:  # the reader's one line names the job's key; here it is --data
        raise SystemExit(f"train_family: error: {str(err).replace(f'dataset.path={str(path)!r}', f'--data {path}')}"
                         ) from None
    if data.shape != INPUT_SHAPE:  # never resized or recoloured: the checkpoints are labelled with this domain
        c, h, w = data.shape
        raise SystemExit(f"train_family: error: --data {path} holds {c}x{h}x{w} images; the family's members take "
                         f"{'x'.join(map(str, INPUT_SHAPE))} grey images ({' or '.join(DOMAINS)})")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domain", default="mnist", choices=DOMAINS, help="the data the family trains on")
    p.add_argument("--data", type=Path, help="its file or folder (default: outputs/data/mnist.npz for mnist, "
                                             "Debian's /usr/share/datasets/fashion-mnist for fashion_mnist)")
    p.add_argument("--out", type=Path, default=TRAIN_OUT, help="checkpoints go to OUT/<domain>/")
    p.add_argument("--members", default=",".join(MEMBERS), help="comma-separated <recipe>_s<seed> (default: all)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every recipe's steps (CI: fewer)")
    p.add_argument("--force", action="store_true", help="retrain members whose checkpoint exists")
    args = p.parse_args(argv)
    names = [m.strip() for m in args.members.split(",") if m.strip()]
    try:
        parsed = {name: parse(name) for name in names}
    except ValueError as err:
        raise SystemExit(f"train_family: error: --members: {err}") from None
    if not names:
        raise SystemExit("train_family: error: --members is empty")
    if not (math.isfinite(args.steps_scale) and args.steps_scale > 0):
        raise SystemExit(f"train_family: error: --steps-scale {args.steps_scale} must be a finite number > 0 "
                         f"(1 = the recipes' own steps; 0.3 for a quick run)")
    out = args.out / args.domain
    plan = {}  # member -> (recipe name, recipe, seed, steps, record)
    for name in names:
        recipe_name, recipe, seed = parsed[name]
        steps = max(1, round(recipe.steps * args.steps_scale)) if recipe.objective != "none" else 0
        plan[name] = (recipe_name, recipe, seed, steps, trained_as(recipe, steps))
    kept = [n for n in names
            if not args.force and checkpoint_recipe(out / f"{n}.safetensors") == json.loads(plan[n][4])]
    todo = [n for n in names if n not in kept]
    print("| member | steps | last loss | seconds | checkpoint |\n|---|---:|---:|---:|---|")
    for name in kept:
        print(f"| {name} | {plan[name][3]} | | | {out / name}.safetensors (kept) |", flush=True)
    if not todo:
        return 0
    data = read_domain(args.domain, args.data)
    x, y = data.take(Split.train, slice(None), "cpu")
    x = (x - 0.5) / 0.5  # the encoder's own normalisation (conf/model/family.yaml: mean 0.5, std 0.5)
    for name in todo:
        recipe_name, recipe, seed, steps, record = plan[name]
        t0 = time.perf_counter()
        net, losses = train(recipe_name, seed, recipe, steps, x, y, args.domain)
        loss = losses[-1] if losses else math.nan
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        replace_atomically(out / f"{name}.safetensors", lambda tmp: save_file(
            state, tmp, metadata={"member": name, "domain": args.domain, "steps": str(steps), "recipe": record}))
        print(f"| {name} | {steps} | {loss:.4f} | {time.perf_counter() - t0:.1f} | {out / name}.safetensors |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

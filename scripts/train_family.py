#!/usr/bin/env python
"""Train a family (``synbench/encoders/family.py``) into ``outputs/family/<domain>/<member>.safetensors``.

    python scripts/prepare_mnist.py && python scripts/train_family.py                  # the MNIST family
    python scripts/train_family.py --domain fashion_mnist                             # the Fashion-MNIST family
    python scripts/train_family.py --members random_cnn_s0,linear_s0,cnn_w8_s0 --steps-scale 0.3   # a CI subset

Seeded: the same member, seed and data give the same bytes on the same machine. A member whose checkpoint
exists is skipped (``--force`` retrains). Members of one training run (``Recipe.run``: an early and a late
checkpoint) are snapshots of one run, trained once. Every recipe trains on the domain's train split only, with
Adam (lr 1e-3) on mini-batches of 64 (SimCLR: 128 pairs):
- supervised: a softmax head (not saved); ``label_noise`` replaces that fraction of the labels by seeded
  uniform random ones, once, before training;
- simclr: SimCLR's NT-Xent loss (Chen et al. 2020, temperature 0.5) on two random affine views of each image
  (rotation, scale, shift) plus pixel noise, through a 2-layer projection head (not saved); never a label;
- autoencoder: mean squared reconstruction of the (normalised) pixels through a 64-256-784 decoder (not
  saved); never a label.
Untrained members save their seeded init. Prints a table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zipfile
from collections import defaultdict
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
from synbench.encoders.family import (DATA, DOMAINS, FEATURES, GET_DATA, INPUT_SHAPE, MEMBERS, TRAIN_OUT,  # noqa: E402
                                       Recipe, parse)
from synbench.encoders.weights import seeded  # noqa: E402
from synbench.files import replace_atomically  # noqa: E402

BATCH, SIMCLR_BATCH, LR, TEMPERATURE = 64, 128, 1e-3, 0.5


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


def views(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random affine view of each image (rotation +-15 deg, scale 0.85..1.15, shift +-3 px) plus pixel noise."""
    n = len(x)
    u = torch.rand((n, 4), generator=gen)
    angle = (u[:, 0] - 0.5) * math.radians(30)
    scale = 0.85 + 0.3 * u[:, 1]
    shift = (u[:, 2:] - 0.5) * (2 * 3 / 14)  # +-3 px in grid units of a 28-px image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return out + 0.1 * torch.randn(x.shape, generator=gen)


class Objective:
    """What one recipe minimises: a head that is trained beside the encoder and thrown away, and the loss of
    one mini-batch of row indices."""

    def __init__(self, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        self.kind, self.x, self.gen = recipe.objective, x, gen
        self.batch = SIMCLR_BATCH if self.kind == "simclr" else BATCH
        if self.kind == "supervised":
            self.y = y.clone()
            noisy = torch.rand(len(y), generator=gen) < recipe.label_noise
            self.y[noisy] = torch.randint(0, int(y.max()) + 1, (int(noisy.sum()),), generator=gen)
            self.head = nn.Linear(FEATURES, int(y.max()) + 1)
        elif self.kind == "simclr":
            self.head = nn.Sequential(nn.Linear(FEATURES, FEATURES), nn.ReLU(), nn.Linear(FEATURES, 32))
        elif self.kind == "autoencoder":
            self.head = nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 28 * 28))
        else:
            raise ValueError(f"unknown objective {self.kind!r}")

    def loss(self, net: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        x = self.x[idx]
        if self.kind == "supervised":
            return F.cross_entropy(self.head(net(x)), self.y[idx])
        if self.kind == "autoencoder":
            return F.mse_loss(self.head(net(x)), x.flatten(1))
        z = F.normalize(self.head(net(torch.cat([views(x, self.gen), views(x, self.gen)]))), dim=1)
        sim = z @ z.T / TEMPERATURE
        sim.fill_diagonal_(-math.inf)  # a view is not its own positive
        n = len(idx)
        return F.cross_entropy(sim, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


def train_run(run: str, seed: int, recipe: Recipe, snapshots: dict[int, list[str]], x, y, domain: str,
              save) -> list[tuple[str, int, float]]:
    """One seeded training run of ``recipe``, saved at every step count in ``snapshots`` (-> member names)."""
    with seeded(derive_seed("family-init", run, seed)):
        net = recipe.build()
    gen = torch.Generator().manual_seed(derive_seed("train-family", domain, run, seed))
    out, loss = [], math.nan
    if recipe.objective != "none":
        with seeded(derive_seed("family-head", run, seed)):  # the thrown-away head too, or no two runs match
            objective = Objective(recipe, x, y, gen)
        opt = torch.optim.Adam([*net.parameters(), *objective.head.parameters()], lr=LR)
        for step, idx in enumerate(batches(len(x), objective.batch, max(snapshots), gen), start=1):
            batch_loss = objective.loss(net, idx)
            opt.zero_grad()
            batch_loss.backward()
            opt.step()
            loss = batch_loss.item()
            for name in snapshots.get(step, []):
                save(name, net, step)
                out.append((name, step, loss))
    for name in snapshots.get(0, []):
        save(name, net, 0)
        out.append((name, 0, loss))
    return out


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
    todo = [n for n in names if args.force or not (out / f"{n}.safetensors").is_file()]
    print("| member | steps | last loss | seconds | checkpoint |\n|---|---:|---:|---:|---|")
    for name in sorted(set(names) - set(todo), key=names.index):
        print(f"| {name} | | | | {out / name}.safetensors (kept) |", flush=True)
    if not todo:
        return 0
    data = read_domain(args.domain, args.data)
    x, y = data.take(Split.train, slice(None), "cpu")
    x = (x - 0.5) / 0.5  # the encoder's own normalisation (conf/model/family.yaml: mean 0.5, std 0.5)
    runs: dict[tuple[str, int], dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    recipe_of = {}
    for name in todo:
        recipe_name, recipe, seed = parsed[name]
        run = recipe.run or recipe_name
        steps = max(1, round(recipe.steps * args.steps_scale)) if recipe.objective != "none" else 0
        runs[run, seed][steps].append(name)
        recipe_of[run, seed] = max(recipe_of.get((run, seed), recipe), recipe, key=lambda r: r.steps)

    def save(name: str, net: nn.Module, steps: int) -> None:
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        replace_atomically(out / f"{name}.safetensors", lambda tmp: save_file(
            state, tmp, metadata={"member": name, "domain": args.domain, "steps": str(steps)}))

    for (run, seed), snapshots in runs.items():
        t0 = time.perf_counter()
        for name, steps, loss in train_run(run, seed, recipe_of[run, seed], snapshots, x, y, args.domain, save):
            print(f"| {name} | {steps} | {loss:.4f} | {time.perf_counter() - t0:.1f} | {out / name}.safetensors |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

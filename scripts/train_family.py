#!/usr/bin/env python
"""Train the MNIST family (``synbench/encoders/family.py``) into ``outputs/family/<member>.safetensors``.

    python scripts/prepare_mnist.py && python scripts/train_family.py      # every member, minutes on 2 cores
    python scripts/train_family.py --members random_cnn_a,linear,cnn_w8 --steps-scale 0.3   # the CI subset

Seeded: the same member, seed and data give the same bytes on the same machine. A member whose checkpoint
exists is skipped (``--force`` retrains). Supervised members train with a softmax head on MNIST's train split
(Adam, batch 128; the head is not saved); ``simclr`` members never see a label: SimCLR's NT-Xent loss (Chen et
al. 2020, temperature 0.5) on two random affine views of each image (rotation, scale, shift) and pixel noise,
through a 2-layer projection head (not saved). Untrained members save their seeded init. Prints a table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from synbench.data import Split  # noqa: E402
from synbench.data.mixture import derive_seed  # noqa: E402
from synbench.data.readers import read_npz  # noqa: E402
from synbench.encoders.family import FEATURES, MEMBERS, Member  # noqa: E402
from synbench.encoders.weights import seeded  # noqa: E402
from synbench.files import replace_atomically  # noqa: E402

BATCH, SIMCLR_BATCH, LR, TEMPERATURE = 128, 256, 1e-3, 0.5


def batches(n: int, size: int, steps: int, gen: torch.Generator):
    """``steps`` seeded mini-batches of row indices, epoch after epoch without replacement."""
    done = 0
    while done < steps:
        for idx in torch.randperm(n, generator=gen).split(size):
            if len(idx) < size or done == steps:
                break
            yield idx
            done += 1


def supervised(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, gen: torch.Generator) -> float:
    head = nn.Linear(FEATURES, 10)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=LR)
    loss = torch.zeros(())
    for idx in batches(len(x), BATCH, steps, gen):
        loss = F.cross_entropy(head(net(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


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


def simclr(net: nn.Module, x: torch.Tensor, steps: int, gen: torch.Generator) -> float:
    proj = nn.Sequential(nn.Linear(FEATURES, FEATURES), nn.ReLU(), nn.Linear(FEATURES, 32))
    opt = torch.optim.Adam([*net.parameters(), *proj.parameters()], lr=LR)
    loss = torch.zeros(())
    for idx in batches(len(x), SIMCLR_BATCH, steps, gen):
        z = F.normalize(proj(net(torch.cat([views(x[idx], gen), views(x[idx], gen)]))), dim=1)
        sim = z @ z.T / TEMPERATURE
        sim.fill_diagonal_(-math.inf)  # a view is not its own positive
        n = len(idx)
        positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        loss = F.cross_entropy(sim, positive)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def train(name: str, member: Member, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[nn.Module, float]:
    with seeded(member.seed):
        net = member.build()
    gen = torch.Generator().manual_seed(derive_seed("train-family", name, member.seed))
    if member.recipe == "supervised":
        return net, supervised(net, x, y, steps, gen)
    if member.recipe == "simclr":
        return net, simclr(net, x, steps, gen)
    return net, math.nan


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "outputs" / "data" / "mnist.npz")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "family")
    p.add_argument("--members", default=",".join(MEMBERS), help=f"comma-separated, of: {', '.join(MEMBERS)}")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every recipe's steps (CI: fewer)")
    p.add_argument("--force", action="store_true", help="retrain members whose checkpoint exists")
    args = p.parse_args(argv)
    names = [m.strip() for m in args.members.split(",") if m.strip()]
    unknown = [m for m in names if m not in MEMBERS]
    if unknown or not names:
        raise SystemExit(f"train_family: error: --members {args.members!r}: unknown {', '.join(unknown) or 'none given'};"
                         f" valid: {', '.join(MEMBERS)}")
    if not args.steps_scale > 0:
        raise SystemExit(f"train_family: error: --steps-scale {args.steps_scale} must be > 0")
    if not args.data.is_file():
        raise SystemExit(f"train_family: error: {args.data} is missing; run python scripts/prepare_mnist.py")
    data = read_npz("mnist", str(args.data), test_fraction=0.2, split_seed=0)
    x, y = data.take(Split.train, slice(None), "cpu")
    x = (x - 0.5) / 0.5  # the encoder's own normalisation (conf/model/mnist_family.yaml: mean 0.5, std 0.5)
    print(f"| member | recipe | steps | last loss | seconds | checkpoint |\n|---|---|---:|---:|---:|---|")
    for name in names:
        member, path = MEMBERS[name], args.out / f"{name}.safetensors"
        if path.is_file() and not args.force:
            print(f"| {name} | {member.recipe} | | | | {path} (kept) |", flush=True)
            continue
        steps = max(1, round(member.steps * args.steps_scale)) if member.recipe != "none" else 0
        t0 = time.perf_counter()
        net, loss = train(name, member, x, y, steps)
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        replace_atomically(path, lambda tmp: save_file(state, tmp, metadata={"member": name, "steps": str(steps)}))
        print(f"| {name} | {member.recipe} | {steps} | {loss:.4f} | {time.perf_counter() - t0:.1f} | {path} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

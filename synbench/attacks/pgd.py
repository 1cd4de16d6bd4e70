"""Projected gradient ascent on any per-sample objective of pixel-space inputs.

One small module for every attack the metrics need: the representation shift ``||f(x') - f(x)||`` (robustness
bound, RMQM's PGD path), a head's loss through the model (end-to-end), ... ``ascend`` is the one ascent loop;
``PGD`` keeps the best iterate over random restarts, RMQM records the whole path. The forward runs under bf16 autocast on CUDA
(the caller's ``precision``); the input and its gradient stay fp32. Random starts come from a generator
seeded by the caller, so an attack is deterministic under a seed on a given device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from synbench.encoders import autocast as autocast_to
from synbench.probes import check_norm


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
            pixel_range: tuple[float, float] | None) -> torch.Tensor:
    """Back into the ``norm`` ball of radius ``eps`` around ``x``, then into the valid pixel box (if any)."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    out = x + delta
    return out if pixel_range is None else out.clamp(*pixel_range)


def ascend(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, start: torch.Tensor, eps: float,
           alpha: float, norm: str, steps: int, pixel_range: tuple[float, float] | None = None,
           autocast: torch.dtype | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Gradient ascent on ``objective`` from ``start``, each step (``alpha`` times the sign of the gradient for
    linf, the unit gradient for l2) projected into the ``eps`` ball around ``x`` and the pixel box. Yields
    every iterate 0..steps with its objective values (detached), so a caller can keep the best (PGD) or the
    whole path (RMQM) from one run: ``steps`` forward+backward passes and one last forward."""
    x_adv = start
    for k in range(steps + 1):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad(), autocast_to(x.device, autocast):
            values = objective(x_adv).float()
        yield x_adv.detach(), values.detach()
        if k == steps:
            return
        (grad,) = torch.autograd.grad(values.sum(), x_adv)
        step = grad.sign() if norm == "linf" else grad / _per_sample_norm(grad).clamp_min(1e-12)
        x_adv = project(x_adv.detach() + alpha * step, x, eps, norm, pixel_range)


@dataclass(frozen=True)
class PGD:
    """``steps`` ascent steps of size ``step_factor * eps / steps`` from ``restarts`` random starts; the best
    iterate of all (per sample) is kept. ``eps`` is the grid of radii a metric evaluates the attack at."""

    norm: str
    eps: tuple[float, ...]
    steps: int
    restarts: int
    step_factor: float
    batch_size: int

    def __post_init__(self):
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        if not self.eps or any(not e >= 0 for e in self.eps):
            raise ValueError(f"attack.eps={list(self.eps)} must be a non-empty list of radii >= 0 (pixel units)")
        check_norm(self.norm, "attack.norm")
        for key in ("steps", "restarts", "batch_size"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"attack.{key}={getattr(self, key)!r} must be a positive integer")
        if not self.step_factor > 0:
            raise ValueError(f"attack.step_factor={self.step_factor!r} must be > 0")

    def maximise(self, objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float,
                 generator: torch.Generator, pixel_range: tuple[float, float] | None = None,
                 autocast: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Maximise ``objective`` (a batch [n, ...] -> per-sample values [n]) over the ball around one batch
        ``x``; returns (best inputs, best values). ``eps = 0`` evaluates ``x`` itself."""
        if not eps >= 0:
            raise ValueError(f"attack epsilon {eps!r} must be >= 0")
        best_x, best_v = x.detach().clone(), torch.full((len(x),), -torch.inf, device=x.device)
        if eps == 0:
            with torch.no_grad(), autocast_to(x.device, autocast):
                return best_x, objective(best_x).float()
        alpha = self.step_factor * eps / self.steps
        for _ in range(self.restarts):
            start = project(x + self._random_start(x, eps, generator), x, eps, self.norm, pixel_range)
            for x_adv, values in ascend(objective, x, start, eps, alpha, self.norm, self.steps, pixel_range,
                                        autocast):
                better = values > best_v
                best_v = torch.where(better, values, best_v)
                best_x[better] = x_adv[better]
        return best_x, best_v

    def _random_start(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            return (2 * torch.rand(x.shape, generator=generator, device=x.device) - 1) * eps
        g = torch.randn(x.shape, generator=generator, device=x.device)
        radius = eps * torch.rand((len(x),), generator=generator, device=x.device) ** (1.0 / x[0].numel())
        return g / _per_sample_norm(g).clamp_min(1e-12) * radius.view(-1, *([1] * (x.dim() - 1)))

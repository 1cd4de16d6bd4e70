"""What every fitted linear probe gives the metrics: margins, their scale and the radius each was built for."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NORMS = ("l2", "linf")
DUAL = {"l2": 2.0, "linf": 1.0}  # ||.||_* of the perturbation norm: l2 -> l2, l-inf -> l1


def check_norm(norm: str, where: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"{where}={norm!r} is not a supported norm; valid: {', '.join(NORMS)}")
    return norm


def dual_norm(w: torch.Tensor, norm: str) -> torch.Tensor:
    """Dual norm over the last axis: the worst-case change of ``w . z`` per unit ``norm``-ball radius."""
    return torch.linalg.vector_norm(w, ord=DUAL[check_norm(norm, "norm")], dim=-1)


@dataclass
class LinearProbe:
    """``E`` binary linear classifiers on D-dim features: class 1 iff ``margin = (z - center) @ weight[e] > 0``.

    ``unit`` is each classifier's margin at the class-1 mean (``|u . w|``), so ``|margin| / unit`` is the
    normalised margin (1 at the class mean); 0 marks a degenerate probe. ``radius`` is the perturbation
    radius in representation space (in ``norm``) each variant was built to withstand.
    """

    weight: torch.Tensor  # [E, D]
    center: torch.Tensor  # [D]
    unit: torch.Tensor  # [E]
    radius: torch.Tensor  # [E]
    norm: str
    labels: list[str]  # one per variant, used in metric names: "eps_0.10", "r_0.50"
    half_gap: torch.Tensor  # scalar: ||(m1 - m0) / 2||, the unit of SynBench's relative eps

    def margins(self, z: torch.Tensor) -> torch.Tensor:
        """[E, n] margins of features ``z`` [n, D], computed in the probe's dtype (float64)."""
        return self.weight @ (z.to(self.weight.dtype) - self.center).T

    @property
    def bias(self) -> torch.Tensor:
        """[E]: ``margin = weight . z + bias``."""
        return -(self.weight @ self.center)

    def accuracy(self, z: torch.Tensor, y: torch.Tensor, radius: torch.Tensor | None = None) -> torch.Tensor:
        """[E] fraction of points (robustly, within ``radius``; default each variant's own) classified right."""
        return accuracy_of(self.robust_margins(z, y, radius))

    def robust_margins(self, z: torch.Tensor, y: torch.Tensor, radius: torch.Tensor | None = None) -> torch.Tensor:
        """[E, n] signed margins after the worst perturbation of ``z`` within ``radius`` (exact for a linear
        head): ``y_pm * margin - radius * ||w||_*``; a point is robustly correct iff this is > 0."""
        r = self.radius if radius is None else radius
        signed = self.margins(z) * (2 * y.to(self.weight.dtype) - 1)[None, :]
        return signed - (r * dual_norm(self.weight, self.norm))[:, None]


def accuracy_of(signed: torch.Tensor) -> torch.Tensor:
    """[E] accuracy from signed margins [E, n]. A signed margin of exactly 0 is a coin flip and counts as half
    right (so a constant feature scores 0.5)."""
    return ((signed > 0).to(signed.dtype) + 0.5 * (signed == 0).to(signed.dtype)).mean(1)


def label(name: str, value: float) -> str:
    """The variant label used in metric keys: ``eps_0.10``, ``r_0.50``."""
    return f"{name}_{value:.2f}"

"""What every fitted linear probe gives the metrics: margins and a margin scale, batched over variants."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LinearProbe:
    """``E`` linear classifiers on D-dim features: class 1 iff ``margin = (z - center) @ weight[e] > 0``.

    ``unit`` is the margin of the class-1 mean under each classifier, so ``|margin| / unit`` is the
    normalised margin (1 at the class mean); it is 0 for a degenerate probe (no usable direction).
    """

    weight: torch.Tensor  # [E, D]
    center: torch.Tensor  # [D]
    unit: torch.Tensor  # [E]

    def margins(self, z: torch.Tensor) -> torch.Tensor:
        """[E, n] margins of features ``z`` [n, D], computed in the probe's dtype (float64)."""
        return self.weight @ (z.to(self.weight.dtype) - self.center).T

"""Adversarially trained binary logistic probe on representations.

For a linear head the inner maximisation is exact: within an l-p ball of radius r around ``z`` the signed
margin ``y (w . z + b)`` drops by exactly ``r ||w||_*`` (the dual norm), so the robust loss
``softplus(-(y (w . z + b) - r ||w||_*))`` is trained directly, full-batch, with L-BFGS in float64 on the
features' device. ``weight_decay`` adds ``wd/2 ||w||^2``. For l-inf balls the dual norm is ||w||_1, whose kinks
stall L-BFGS where the robust optimum is sparse; training replaces each |w_i| by its Huber smoothing of width
``SMOOTH`` (the objective moves by at most ``radius * D * SMOOTH / 2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synbench.probes.base import LinearProbe, check_norm, dual_norm, label


SMOOTH = 1e-6


def robust_logistic_loss(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor, y: torch.Tensor, radius: float,
                         norm: str, smooth: float = 0.0) -> torch.Tensor:
    """Mean over points of the worst-case logistic loss within the ``norm`` ball of ``radius`` (labels 0/1).
    ``smooth`` > 0 Huber-smooths the l1 dual norm of l-inf balls (for the optimiser only)."""
    signed = (z @ w + b) * (2 * y.to(z.dtype) - 1)
    if norm == "linf" and smooth > 0:
        a = w.abs()
        dual = torch.where(a < smooth, w * w / (2 * smooth), a - smooth / 2).sum()
    else:
        dual = dual_norm(w, norm)
    return F.softplus(-(signed - radius * dual)).mean()


class RobustLogisticProbe:
    def __init__(self, radius: float, norm: str, weight_decay: float, max_iter: int):
        if not radius >= 0:
            raise ValueError(f"probe.radius={radius!r} must be >= 0 (representation-space units)")
        if not weight_decay >= 0:
            raise ValueError(f"probe.weight_decay={weight_decay!r} must be >= 0")
        if int(max_iter) <= 0:
            raise ValueError(f"probe.max_iter={max_iter!r} must be a positive integer")
        self.radius, self.norm = float(radius), check_norm(norm, "probe.norm")
        self.weight_decay, self.max_iter = float(weight_decay), int(max_iter)

    def fit(self, z: torch.Tensor, y: torch.Tensor) -> LinearProbe:
        z = z.to(torch.float64)
        m1, m0 = z[y == 1].mean(0), z[y == 0].mean(0)
        half = (m1 - m0) / 2
        # start on the mean-difference direction: deterministic, and away from the kink of ||w|| at 0
        w = (1e-3 * half).clone().requires_grad_()
        b = torch.zeros((), dtype=z.dtype, device=z.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=self.max_iter, history_size=20,
                                tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = robust_logistic_loss(w, b, z, y, self.radius, self.norm, SMOOTH) + 0.5 * self.weight_decay * w.dot(w)
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        w, b = w.detach(), b.detach()
        w2 = w.dot(w)
        center = -b * w / w2 if bool(w2 > 0) else (m1 + m0) / 2
        one = torch.ones(1, dtype=z.dtype, device=z.device)
        return LinearProbe(weight=w[None, :], center=center, unit=(w @ half).abs()[None], radius=self.radius * one,
                           norm=self.norm, labels=[label("r", self.radius)], half_gap=torch.linalg.vector_norm(half))

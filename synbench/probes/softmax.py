"""The downstream linear probe: multi-class softmax regression on frozen features, as linear-probe papers fit it.

``fit_softmax`` minimises ``mean_i CE(W s_i + b, y_i) + penalty/2 ||W||_F^2`` in float64, full batch, with
L-BFGS, on ``s = (z - mu) / sd``: the train features standardised (population std; a constant feature stays 0).
Standardising makes one penalty grid mean the same for every encoder, whatever the scale of its features; it is
scikit-learn's ``LogisticRegression(C = 1 / (penalty n))`` on ``s``. The returned head acts on *raw* features
(the standardisation folded into ``weight`` and ``bias``), so attacks and the robustness bound see the map that
is really applied to ``f(x)``.

``SoftmaxProbe`` picks the penalty on a seeded held-out part of the train split (best validation accuracy; ties
go to the larger penalty, the simpler head), then refits on the whole train split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class SoftmaxHead:
    weight: torch.Tensor  # [K, D] float64, raw-feature units
    bias: torch.Tensor  # [K]
    penalty: float
    val_accuracy: dict[float, float] = field(default_factory=dict)  # penalty -> held-out accuracy (SoftmaxProbe)
    standardised: tuple | None = field(default=None, repr=False)  # (W, b) where it was fitted: a warm start

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.weight.dtype) @ self.weight.T + self.bias

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(z).argmax(1)

    def accuracy(self, z: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(z) == y.to(self.weight.device)).double().mean())


def fit_softmax(z: torch.Tensor, y: torch.Tensor, num_classes: int, penalty: float, max_iter: int,
                init: tuple[torch.Tensor, torch.Tensor] | None = None, tol: float = 1e-9) -> SoftmaxHead:
    """Softmax regression on standardised ``z`` (see the module docstring). ``init``: a standardised-space
    ``(W, b)`` to start from (a warm start along a penalty path); zeros otherwise. ``tol``: L-BFGS stops once
    every gradient entry is below it (the objective is strictly convex for penalty > 0: one answer).

    The closure computes the loss and its gradient in closed form (``(softmax - onehot)^T s / n + penalty W``):
    two matrix products per evaluation and no autograd graph, which was most of the cost on wide features."""
    z = z.to(torch.float64)
    y = y.to(z.device)
    mu, sd = z.mean(0), z.std(0, correction=0)
    live = sd > 0
    s = (z - mu) / torch.where(live, sd, torch.ones_like(sd))
    W = torch.zeros((num_classes, z.shape[1]), dtype=z.dtype, device=z.device) if init is None else init[0].clone()
    b = torch.zeros(num_classes, dtype=z.dtype, device=z.device) if init is None else init[1].clone()
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=int(max_iter), history_size=20, tolerance_grad=float(tol),
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")
    rows, n = torch.arange(len(y), device=z.device), len(y)

    def closure():
        logp = torch.log_softmax(s @ W.T + b, 1)
        loss = -logp[rows, y].mean() + 0.5 * penalty * (W * W).sum()
        g = logp.exp_()
        g[rows, y] -= 1.0
        g /= n
        W.grad, b.grad = torch.addmm(W, g.T, s, beta=penalty), g.sum(0)
        return loss

    opt.step(closure)
    weight = torch.where(live, W / torch.where(live, sd, torch.ones_like(sd)), torch.zeros_like(W))
    return SoftmaxHead(weight=weight, bias=b - weight @ mu, penalty=float(penalty), standardised=(W, b))


class SoftmaxProbe:
    """``penalties``: the L2 grid searched; ``val_fraction``: the share of the train split held out to choose;
    ``tol``: each fit's gradient tolerance."""

    def __init__(self, penalties: list[float], val_fraction: float, max_iter: int, tol: float = 1e-9):
        penalties = [float(p) for p in penalties]
        if not penalties or any(not p >= 0 for p in penalties):
            raise ValueError(f"metrics.downstream.probe.penalties={penalties} must be a non-empty list of L2 "
                             f"penalties >= 0, e.g. [1e-4, 1e-3, 1e-2]")
        if not 0 < float(val_fraction) < 1:
            raise ValueError(f"metrics.downstream.probe.val_fraction={val_fraction!r} must be in (0, 1)")
        if int(max_iter) <= 0:
            raise ValueError(f"metrics.downstream.probe.max_iter={max_iter!r} must be a positive integer")
        self.penalties = sorted(set(penalties), reverse=True)  # strongest first: each warm-starts the next
        if not 0 < float(tol) < 1:
            raise ValueError(f"metrics.downstream.probe.tol={tol!r} must be in (0, 1), e.g. 1e-6")
        self.val_fraction, self.max_iter, self.tol = float(val_fraction), int(max_iter), float(tol)

    def fit(self, z: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int) -> SoftmaxHead:
        n = len(y)
        n_val = max(1, round(self.val_fraction * n))
        if n - n_val < 2:
            raise ValueError(f"the train split holds {n} samples: too few to hold out "
                             f"val_fraction={self.val_fraction} and fit on the rest")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).to(z.device)
        val, fit = order[:n_val], order[n_val:]
        y = y.to(z.device)
        scores, init = {}, None
        for p in self.penalties:
            head = fit_softmax(z[fit], y[fit], num_classes, p, self.max_iter, init, self.tol)
            scores[p], init = head.accuracy(z[val], y[val]), head.standardised
        best = max(scores.values())
        chosen = max(p for p, acc in scores.items() if acc == best)
        head = fit_softmax(z, y, num_classes, chosen, self.max_iter, tol=self.tol)
        head.val_accuracy = dict(sorted(scores.items()))
        return head

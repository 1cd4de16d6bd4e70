"""The downstream linear probe: multi-class softmax regression on frozen features, as linear-probe papers fit it.

``fit_softmax`` minimises ``mean_i CE(W s_i + b, y_i) + penalty/2 ||W||_F^2``, full batch, with L-BFGS (float32,
then float64 to certify the gradient tolerance), on ``s = (z - mu) / sd``: the train features standardised
(population std; a constant feature stays 0).
Standardising makes one penalty grid mean the same for every encoder, whatever the scale of its features; it is
scikit-learn's ``LogisticRegression(C = 1 / (penalty n))`` on ``s``. The returned head acts on *raw* features
(the standardisation folded into ``weight`` and ``bias``), so attacks and the robustness bound see the map that
is really applied to ``f(x)``.

``SoftmaxProbe`` picks the penalty on a seeded held-out part of the train split (best validation accuracy; ties
go to the larger penalty, the simpler head), each penalty warm-started from the last, then refits on the whole
train split from the chosen penalty's answer. The search's fits run as long as the refit's unless
``search_max_iter`` / ``search_tol`` shorten them (faster, but a near-tie between penalties can flip:
docs/benchmarks.md); the refit, whose head is the result, runs to ``max_iter`` / ``tol``. ``at_max_iter`` says
whether it got there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch


STAGES = (torch.float32, torch.float64)  # the fit's precisions in turn: float32 does the bulk, float64 certifies


@dataclass
class Stage:
    """One precision's share of a fit: where its time went (scripts/bench_downstream.py prints these; the
    downstream metric logs them as its ``probe_fits`` table)."""
    penalty: float
    dtype: str
    iterations: int
    evaluations: int
    seconds: float
    grad: float = math.nan  # the largest gradient entry where the stage stopped
    reached_tol: bool = False  # grad <= tol: the fit is done (else the next stage, if any, goes on)
    at_max_iter: bool = False  # stopped short of tol because the fit's max_iter ran out (else: done, or float32
    # could make no more progress and float64 goes on, or float64's own rounding stopped it)
    max_iter: int = 0  # the fit's iteration budget, all its stages together
    fit: str = ""  # which fit it belongs to: "search" (a penalty of the search) or "refit"


@dataclass
class SoftmaxHead:
    weight: torch.Tensor  # [K, D] float64, raw-feature units
    bias: torch.Tensor  # [K]
    penalty: float
    val_accuracy: dict[float, float] = field(default_factory=dict)  # penalty -> held-out accuracy (SoftmaxProbe)
    stages: list[Stage] = field(default_factory=list, repr=False)  # every fit behind this head, in order

    @property
    def at_max_iter(self) -> bool:
        """Whether the last fit (the refit, for ``SoftmaxProbe``) stopped short of its gradient tolerance because
        its ``max_iter`` ran out."""
        return bool(self.stages) and self.stages[-1].at_max_iter

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.weight.dtype) @ self.weight.T + self.bias

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(z).argmax(1)

    def accuracy(self, z: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(z) == y.to(self.weight.device)).double().mean())


HISTORY = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag")  # torch L-BFGS's curvature pairs and last step


def minimise(s: torch.Tensor, y: torch.Tensor, penalty: float, W: torch.Tensor, b: torch.Tensor, max_iter: int,
             tol: float, history: dict | None = None) -> tuple[int, int, float, dict | None]:
    """L-BFGS on standardised ``s`` from ``(W, b)`` (updated in place, ``s``'s dtype); returns (iterations,
    evaluations, the largest gradient entry where it stopped, its curvature history). The closure computes the
    loss and its gradient in closed form (``(softmax - onehot)^T s / n + penalty W``): two matrix products per
    evaluation and no autograd graph.

    ``history``: a previous stage's curvature pairs (float32's, for the float64 stage), cast to this dtype, so
    that the next precision goes on from the curvature already learnt instead of rebuilding it from a gradient
    step: the start's gradient is computed here first, so the first update adds no pair spanning two
    precisions."""
    change = 1e-14 if s.dtype == torch.float64 else 1e-9  # below that, the precision's rounding, not progress
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=int(max_iter), history_size=20, tolerance_grad=float(tol),
                            tolerance_change=change, line_search_fn="strong_wolfe")
    rows, n = torch.arange(len(y), device=s.device), len(y)

    def closure():
        logp = torch.log_softmax(torch.addmm(b, s, W.T), 1)
        loss = -logp[rows, y].mean() + 0.5 * penalty * (W * W).sum()
        g = logp.exp_()
        g[rows, y] -= 1.0
        g /= n
        W.grad, b.grad = torch.addmm(W, g.T, s, beta=penalty), g.sum(0)
        return loss

    state, start, extra = opt.state[W], 0, 0
    if history is not None:
        loss = closure()
        cast = {k: ([v.to(s.dtype) for v in history[k]] if isinstance(history[k], list) else
                    history[k].to(s.dtype) if torch.is_tensor(history[k]) else history[k]) for k in HISTORY}
        state.update(cast, n_iter=1, func_evals=0, prev_loss=float(loss),
                     prev_flat_grad=torch.cat([W.grad.reshape(-1), b.grad.reshape(-1)]))
        start, extra = 1, 1
    opt.step(closure)
    closure()  # the gradient where it stopped (L-BFGS keeps none it reports): did the fit reach tol?
    grad = max(float(W.grad.abs().max()), float(b.grad.abs().max()))
    kept = {k: state[k] for k in HISTORY} if all(k in state for k in HISTORY) else None
    return int(state.get("n_iter", 0)) - start, int(state.get("func_evals", 0)) + extra, grad, kept


def fit_softmax(z: torch.Tensor, y: torch.Tensor, num_classes: int, penalty: float, max_iter: int,
                init: SoftmaxHead | None = None, tol: float = 1e-9, stages=None, fit: str = "refit") -> SoftmaxHead:
    """Softmax regression on standardised ``z`` (see the module docstring). ``init``: a head (raw-feature units,
    e.g. the previous penalty's, or one fitted on a subset) to start from; zeros otherwise. ``tol``: L-BFGS stops
    once every gradient entry is below it (the objective is strictly convex for penalty > 0: one answer).

    ``stages``: the precisions run in turn (default ``STAGES``), each from where the last stopped and with its
    curvature history, ``max_iter`` iterations in all.
    Float32 halves the bytes each matrix product streams (the cost: memory-bound at K = 10 classes) and runs
    until the gradient is below ``tol`` or float32 can make no more progress; float64 then certifies the
    answer (two evaluations when float32 got there) or finishes it."""
    z = z.to(torch.float64)
    y = y.to(z.device)
    mu, sd = z.mean(0), z.std(0, correction=0)
    live = sd > 0
    sd = torch.where(live, sd, torch.ones_like(sd))
    s64 = (z - mu) / sd
    if init is None:
        W = torch.zeros((num_classes, z.shape[1]), dtype=z.dtype, device=z.device)
        b = torch.zeros(num_classes, dtype=z.dtype, device=z.device)
    else:  # the same map written in this standardisation: W s + b = weight z + bias
        W = init.weight.to(z) * sd
        b = init.bias.to(z) + init.weight.to(z) @ mu
    used, trace, history = 0, [], None
    for dtype in STAGES if stages is None else stages:
        if used >= max_iter:
            break
        t0 = time.perf_counter()
        s = s64.to(dtype)
        Wd, bd = W.to(dtype).clone(), b.to(dtype).clone()
        left = max_iter - used
        iterations, evaluations, grad, history = minimise(s, y, penalty, Wd, bd, left, tol, history)
        used += iterations
        W, b = Wd.to(torch.float64), bd.to(torch.float64)
        spent = iterations >= left or evaluations >= left * 5 // 4  # L-BFGS's own limits for this stage
        trace.append(Stage(float(penalty), str(dtype).removeprefix("torch."), iterations, evaluations,
                           time.perf_counter() - t0, grad, grad <= tol, spent and grad > tol, int(max_iter), fit))
    weight = torch.where(live, W / sd, torch.zeros_like(W))
    return SoftmaxHead(weight=weight, bias=b - weight @ mu, penalty=float(penalty), stages=trace)


class SoftmaxProbe:
    """``penalties``: the L2 grid searched; ``val_fraction``: the share of the train split held out to choose;
    ``max_iter``, ``tol``: the refit's iterations and gradient tolerance; ``search_max_iter``, ``search_tol``: the
    search's (None: the refit's)."""

    def __init__(self, penalties: list[float], val_fraction: float, max_iter: int, tol: float = 1e-9,
                 stages=None, search_max_iter: int | None = None, search_tol: float | None = None):
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
        self.search_max_iter = self.max_iter if search_max_iter is None else int(search_max_iter)
        self.search_tol = self.tol if search_tol is None else float(search_tol)
        if self.search_max_iter <= 0 or not 0 < self.search_tol < 1:
            raise ValueError(f"metrics.downstream.probe.search_max_iter={search_max_iter!r} must be a positive "
                             f"integer and search_tol={search_tol!r} in (0, 1) (null: max_iter and tol)")
        self.stages = stages  # fit_softmax's precisions (None: STAGES); the benchmark's float64-only row sets it

    def fit(self, z: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int) -> SoftmaxHead:
        n = len(y)
        n_val = max(1, round(self.val_fraction * n))
        if n - n_val < 2:
            raise ValueError(f"the train split holds {n} samples: too few to hold out "
                             f"val_fraction={self.val_fraction} and fit on the rest")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).to(z.device)
        val, fit = order[:n_val], order[n_val:]
        y = y.to(z.device)
        scores, heads, init = {}, {}, None
        for p in self.penalties:  # strongest first, each from the last one's answer
            heads[p] = init = fit_softmax(z[fit], y[fit], num_classes, p, self.search_max_iter, init,
                                          self.search_tol, self.stages, "search")
            scores[p] = init.accuracy(z[val], y[val])
        best = max(scores.values())
        chosen = max(p for p, acc in scores.items() if acc == best)
        # the refit on every train row starts from the chosen penalty's answer on most of them
        head = fit_softmax(z, y, num_classes, chosen, self.max_iter, heads[chosen], self.tol, self.stages)
        head.val_accuracy = dict(sorted(scores.items()))
        head.stages = [stage for p in self.penalties for stage in heads[p].stages] + head.stages
        return head

"""The SynBench score (Ko et al. 2022; spec sections 2 and 4).

Per scale: fit the probe on train features for every eps, score the test features (accuracy, normalised
margin bound). Over the scale grid, the expected bound at threshold accuracy ``x`` is
``E(x) = mean_s B(s) 1[a(s) > x]``; the score at ``a_t`` is the ratio of the sums of ``E`` over grid points
``x_k >= a_t`` for the representation and for the raw-data Bayes classifier (closed form).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

from synbench.data import GaussianMixture, Split
from synbench.metrics.base import Curve, MetricInputs, MetricResult, Plot, Series
from synbench.probes import LinearProbe, RobustBayesProbe, accuracy_of

TIE = 1e-12  # grid points within this of a threshold count as >= it (linspace rounding)


def raw_accuracy(scales, noise_std: float) -> np.ndarray:
    """Accuracy of the input-space Bayes (midpoint) classifier: ``Phi(s / noise_std)``."""
    return norm.cdf(np.asarray(scales, dtype=np.float64) / noise_std)


def raw_bound(acc: np.ndarray) -> np.ndarray:
    """``B_raw(a) = 1 + phi(Phi^-1(a)) / (a Phi^-1(a))``; undefined (NaN) at chance, a <= 0.5."""
    acc = np.asarray(acc, dtype=np.float64)
    q = norm.ppf(acc)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = 1.0 + norm.pdf(q) / (acc * q)
    return np.where(acc > 0.5, b, np.nan)


def expected_bound(acc: np.ndarray, bound: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``E(x_k) = (1/S) sum_s B(s) 1[a(s) > x_k]`` for acc, bound [..., S]; returns [..., K]."""
    above = acc[..., None, :] > grid[:, None]  # [..., K, S]
    return np.where(above, bound[..., None, :], 0.0).sum(-1) / acc.shape[-1]


def score_ratio(e_rep: np.ndarray, e_raw: np.ndarray, grid: np.ndarray, threshold: float) -> np.ndarray:
    sel = grid >= threshold - TIE
    return e_rep[..., sel].sum(-1) / e_raw[sel].sum()


def probe_scores(probe: LinearProbe, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy [E], bound [E]) of a fitted probe on test features; a tie (margin 0) counts as half right."""
    signed = probe.robust_margins(z, y, torch.zeros_like(probe.radius))  # [E, n], y_pm * margin
    correct = signed > 0
    acc = accuracy_of(signed)
    ratio = signed.abs() / torch.where(probe.unit > 0, probe.unit, torch.ones_like(probe.unit))[:, None]
    hits = correct.double().sum(1)
    bound = torch.where((hits > 0) & (probe.unit > 0), (ratio * correct).sum(1) / hits.clamp_min(1), 0.0)
    return acc, bound


def _fmt(v: float) -> str:
    return f"{v:.2f}"


class SynBenchScore:
    """SynBench(a_t, eps) for every threshold and eps of the job, and the eps that maximises it.

    The score is defined with the eps-robust Bayes probe, so it owns one (``probe``, built from its config
    with the job's eps grid) whatever downstream probe the job evaluates.
    """

    name = "synbench"

    def __init__(self, probe: RobustBayesProbe, thresholds, headline: float, grid_start: float, grid_stop: float,
                 grid_num: int):
        if not isinstance(probe, RobustBayesProbe):
            raise ValueError(f"metrics.synbench.probe must be a RobustBayesProbe, got {type(probe).__name__}")
        self.probe = probe
        self.thresholds = [float(t) for t in thresholds]
        self.headline = float(headline)
        if grid_num < 2 or not 0.5 <= grid_start < grid_stop <= 1.0:
            raise ValueError(f"metrics.synbench grid [{grid_start}, {grid_stop}] x {grid_num} is invalid; "
                             f"need 0.5 <= grid_start < grid_stop <= 1 and grid_num >= 2")
        self.grid = np.linspace(grid_start, grid_stop, int(grid_num))
        if not self.thresholds:
            raise ValueError("metrics.synbench.thresholds is empty; the paper reports 0.6 ... 0.99")
        for t in self.thresholds:
            if not grid_start <= t <= grid_stop:
                raise ValueError(f"metrics.synbench threshold {t!r} is outside the grid [{grid_start}, {grid_stop}]")
        if self.headline not in self.thresholds:
            raise ValueError(f"metrics.synbench.headline={headline!r} must be one of thresholds {self.thresholds}")

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        acc_raw = raw_accuracy(scales, mixture.noise_std)
        e_raw = expected_bound(acc_raw, raw_bound(acc_raw), self.grid)
        for t in self.thresholds:
            if not e_raw[self.grid >= t - TIE].sum() > 0:
                need = mixture.noise_std * norm.ppf(self.grid[self.grid >= t - TIE][0])
                raise ValueError(
                    f"mixture.scales (max {max(scales):g}) never give the raw classifier accuracy above the "
                    f"threshold a_t={t:g}, so SynBench there is 0/0: extend the grid past scale {need:.3f} "
                    f"or drop that threshold")

    def compute(self, inputs: MetricInputs) -> MetricResult:
        emb, eps = inputs.embeddings, self.probe.eps
        accs, bounds, gaps = [], [], []
        for i in range(len(emb.scales)):
            probe = self.probe.fit(emb.z[Split.train][i], emb.y[Split.train][i])
            acc, bound = probe_scores(probe, emb.z[Split.test][i], emb.y[Split.test][i])
            accs.append(acc)
            bounds.append(bound)
            gaps.append(probe.half_gap)
        acc_rep = torch.stack(accs, 1).cpu().numpy()  # [E, S]; the one host transfer
        bound_rep = torch.stack(bounds, 1).cpu().numpy()
        half_gap = torch.stack(gaps).cpu().numpy()  # [S]
        acc_raw = raw_accuracy(emb.scales, inputs.mixture.noise_std)
        bound_raw = raw_bound(acc_raw)
        e_raw = expected_bound(acc_raw, bound_raw, self.grid)
        e_rep = expected_bound(acc_rep, bound_rep, self.grid)
        res = self._result(emb.scales, eps, acc_rep, bound_rep, acc_raw, bound_raw, e_rep, e_raw)
        # SynBench's eps is relative to ||u||: in representation units its best eps is this l2 radius per scale
        res.curves["recommended_radius"] = Curve("scale", [float(v) for v in emb.scales],
                                                 (res.scalars["best_eps"] * half_gap).tolist())
        return res

    def _result(self, scales, eps, acc_rep, bound_rep, acc_raw, bound_raw, e_rep, e_raw) -> MetricResult:
        res = MetricResult(self.name, headline=("score", "best_eps"))
        scores = {t: score_ratio(e_rep, e_raw, self.grid, t) for t in self.thresholds}  # [E] each
        for t, per_eps in scores.items():
            for e, value in zip(eps, per_eps):
                res.scalars[f"score/at_{_fmt(t)}/eps_{_fmt(e)}"] = float(value)
            best = int(np.argmax(per_eps))  # first (smallest) eps on ties
            res.scalars[f"best/at_{_fmt(t)}"] = float(per_eps[best])
            res.scalars[f"best_eps/at_{_fmt(t)}"] = float(eps[best])
        head = scores[self.headline]
        res.scalars["score"] = float(head.max())
        res.scalars["best_eps"] = float(eps[int(np.argmax(head))])

        s, grid = [float(v) for v in scales], [float(v) for v in self.grid]
        res.curves["accuracy/raw"] = Curve("scale", s, [float(v) for v in acc_raw])
        res.curves["expected_bound/raw"] = Curve("threshold", grid, [float(v) for v in e_raw])
        for j, e in enumerate(eps):
            res.curves[f"accuracy/eps_{_fmt(e)}"] = Curve("scale", s, acc_rep[j].tolist())
            res.curves[f"bound/eps_{_fmt(e)}"] = Curve("scale", s, bound_rep[j].tolist())
            res.curves[f"expected_bound/eps_{_fmt(e)}"] = Curve("threshold", grid, e_rep[j].tolist())

        res.tables["scores"] = {"threshold": self.thresholds, "eps": list(eps),
                                "score": [scores[t].tolist() for t in self.thresholds]}
        res.tables["per_scale"] = {"scale": s, "raw_accuracy": acc_raw.tolist(),
                                   "raw_bound": [None if math.isnan(v) else float(v) for v in bound_raw],
                                   **{f"accuracy_eps_{_fmt(e)}": acc_rep[j].tolist() for j, e in enumerate(eps)},
                                   **{f"bound_eps_{_fmt(e)}": bound_rep[j].tolist() for j, e in enumerate(eps)}}
        rep_label = [f"representation, eps={e:g}" for e in eps]
        res.plots.append(Plot(
            "synbench_accuracy_vs_scale", "Probe accuracy vs mixture scale", "mean-shift scale s", "test accuracy",
            [Series("raw input (Bayes, Phi(s))", s, acc_raw.tolist(), "k--")]
            + [Series(rep_label[j], s, acc_rep[j].tolist()) for j in range(len(eps))]))
        res.plots.append(Plot(
            "synbench_expected_bound_vs_threshold", "Expected bound vs threshold accuracy",
            "threshold accuracy x", "E(x)",
            [Series("raw input (closed form)", grid, e_raw.tolist(), "k--")]
            + [Series(rep_label[j], grid, e_rep[j].tolist()) for j in range(len(eps))]))
        return res

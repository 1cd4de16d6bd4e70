"""The SynBench score (Ko et al. 2022; spec sections 2 and 4).

Per scale: fit the probe on train features for every eps, score the test features (accuracy, normalised
margin bound). Over the scale grid, the expected bound at threshold accuracy ``x`` is
``E(x) = mean_s B(s) 1[a(s) > x]``; the score at ``a_t`` is the ratio of the sums of ``E`` over grid points
``x_k >= a_t`` for the representation and for the raw-data Bayes classifier (closed form).

A finite scale grid can decide the score on its own (docs/scoring.md, "When the grid decides the score"): a
curve that never passes a_t scores 0 ("floored": not reached on this grid), and a grid whose every scale that
counts for the raw classifier is saturated for both curves scores ~1 ("pinned"). Both are flagged as scalars
and named in one warning line with the fix.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from scipy.stats import norm

from synbench.data import GaussianMixture, Split
from synbench.metrics.base import Curve, MetricInputs, MetricResult, Plot, Series
from synbench.probes import LinearProbe, RobustBayesProbe, accuracy_of

TIE = 1e-12  # grid points within this of a threshold count as >= it (linspace rounding)
WIDE_MAX = 16.0  # the largest scale of conf/mixture/wide.yaml, named in the floored warning

log = logging.getLogger(__name__)


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


def first_counted(grid: np.ndarray, threshold: float) -> float:
    """The first threshold-grid point the score at ``threshold`` sums over: a curve adds to that score exactly
    where its accuracy is strictly above this point (0.7010 for a_t = 0.7 on the default 100-point grid)."""
    return float(grid[grid >= threshold - TIE][0])


def saturation_point(grid: np.ndarray) -> float:
    """The largest grid point an accuracy (<= 1) can exceed: above it a scale adds the same count of grid
    points to E as any other saturated scale, for the raw classifier and the representation alike."""
    return float(grid[grid < 1.0].max())


def per_scale_mass(acc: np.ndarray, bound: np.ndarray, grid: np.ndarray, threshold: float) -> np.ndarray:
    """What each scale adds to ``sum_{x_k >= threshold} E(x_k)``: ``B(s) #{k: threshold <= x_k < a(s)} / S``
    (the sums of ``score_ratio`` regrouped by scale)."""
    sel = grid[grid >= threshold - TIE]
    count = (acc[..., None] > sel).sum(-1)
    return np.where(count > 0, np.nan_to_num(bound) * count, 0.0) / acc.shape[-1]


def crossing_estimate(scales, acc: np.ndarray, target: float, n_test: int) -> float | None:
    """Scale at which a curve would pass ``target``, from a least-squares line through s = 0 in probit space
    (``Phi^-1(a(s)) ~ b s``: exact for a linear encoder's Bayes probe, whose accuracy is ``Phi(rho s)``).
    An estimate for the warning, not a measurement; None when the curve does not rise (b <= 0)."""
    s = np.asarray(scales, dtype=np.float64)
    q = norm.ppf(np.clip(acc, 0.5 / n_test, 1 - 0.5 / n_test))
    slope = float((s * q).sum() / (s * s).sum())
    return float(norm.ppf(target) / slope) if slope > 0 else None


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
        self._grid_ends(res, emb.scales, eps, acc_rep, acc_raw, bound_raw, int(emb.y[Split.test].shape[-1]),
                        inputs.mixture.noise_std)
        # SynBench's eps is relative to ||u||: in representation units its best eps is this l2 radius per scale
        res.curves["recommended_radius"] = Curve("scale", [float(v) for v in emb.scales],
                                                 (res.scalars["best_eps"] * half_gap).tolist())
        return res

    def _grid_ends(self, res: MetricResult, scales, eps, acc_rep, acc_raw, bound_raw, n_test: int,
                   noise_std: float) -> None:
        """Flag scores that the scale grid's ends decide rather than the encoder (docs/scoring.md, "When the
        grid decides the score"); one warning line for the headline's.

        - ``crossed/at_t``: some eps's accuracy curve passes ``first_counted(a_t)`` at some scale; exactly
          then ``best/at_t`` > 0. ``floored`` is 1 when the headline's is not (score 0: "not reached").
        - ``saturated_share``: the share of the headline's raw denominator from scales where the raw curve and
          the best eps's curve are both above ``saturation_point``; those scales add ~the same to numerator
          and denominator (B ~ 1 times the same count), so they pull the score toward 1 whatever the encoder.
          ``pinned`` is 1 when that share is all of it: the score is ~1 by construction.
        """
        res.scalars["max_accuracy"] = float(acc_rep.max())
        best_acc = acc_rep.max(axis=1)  # [E]
        for t in self.thresholds:
            res.scalars[f"crossed/at_{_fmt(t)}"] = float(best_acc.max() > first_counted(self.grid, t))
        head, top = _fmt(self.headline), saturation_point(self.grid)
        floored = res.scalars[f"crossed/at_{head}"] == 0.0
        j = int(np.argmax([res.scalars[f"score/at_{head}/eps_{_fmt(e)}"] for e in eps]))  # the headline's eps
        raw_mass = per_scale_mass(acc_raw, bound_raw, self.grid, self.headline)
        both = (acc_raw > top) & (acc_rep[j] > top)
        counts = raw_mass > 0
        res.scalars["saturated_share"] = float(raw_mass[both].sum() / raw_mass.sum()) if counts.any() else 0.0
        pinned = bool(counts.any() and np.all(both[counts]))
        res.scalars["floored"] = float(floored)
        res.scalars["pinned"] = float(pinned)
        if floored:
            k = int(np.argmax(best_acc))
            counted = first_counted(self.grid, self.headline)
            need = crossing_estimate(scales, acc_rep[k], counted, n_test)
            if need is None:
                hint = ("the curve does not rise (probit slope <= 0), so larger scales are unlikely to help: "
                        "try another mixture.direction")
            elif need <= max(scales):
                hint = f"its end is close: add scales past s={max(scales):g} (mixture=wide goes to {WIDE_MAX:g})"
            else:
                where = "within mixture=wide" if need <= WIDE_MAX else f"beyond mixture=wide (max {WIDE_MAX:g})"
                hint = (f"add larger scales (mixture=wide goes to {WIDE_MAX:g}); a probit line through s=0 puts "
                        f"the crossing near s={need:.1f}, {where} (an estimate)")
            log.warning("synbench: the representation's accuracy never passed a_t=%.2f on mixture.scales (max "
                        "s=%g): best %.4f (eps=%g), where the score counts from %.4f; the score 0 means 'not "
                        "reached on this grid', not a measurement; %s", self.headline, max(scales),
                        float(best_acc[k]), float(eps[k]), counted, hint)
        elif pinned:
            lo = noise_std * norm.ppf(first_counted(self.grid, self.headline))
            hi = noise_std * norm.ppf(top)
            log.warning("synbench: at a_t=%.2f the raw classifier and the representation (eps=%g) are both "
                        "saturated (accuracy > %.4f) at every scale of mixture.scales where the raw classifier passes "
                        "a_t, so the score %.4f is ~1 by construction, not a measurement; add scales between %.2f "
                        "and %.2f, where the raw accuracy is between a_t and saturation", self.headline,
                        float(eps[j]), top, res.scalars["score"], lo, hi)
        if floored or pinned:  # the job's closing summary prints it beside the score
            res.headline = (*res.headline, "floored" if floored else "pinned")

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

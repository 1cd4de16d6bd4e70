"""The statistics behind the report's numbers, in numpy so that thousands of resamples cost milliseconds.

Seeds of one recipe are not independent models: the bootstrap resamples whole groups (every member of a drawn
group enters together), so an interval carries the recipe's seed-to-seed variance, and the p-value of Kendall's
tau permutes the truth across groups (its unit is the recipe, not the seed). A table of many pairs tests many
hypotheses: Holm's step-down adjustment keeps its family-wise error rate.

A resample is a weight per member (how many times it was drawn): Kendall's tau-b and Pearson's r of the data
with member i repeated w_i times are quadratic and linear forms in the weights, so every resample is one row of
a matrix product. The point estimates stay scipy's, over members.

The validity study's pre-registered test (``kendall_test``) is one-sided and exact: without ties, Kendall's
tau of n recipe means is a function of the number of discordant pairs, whose null distribution (every
permutation equally likely) is the Mahonian distribution of inversions, computed here by convolution; with
ties it falls back to the permutation count above, one-sided.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
from scipy import stats

from synbench.report.names import span

EXACT_UP_TO = 8  # groups: every permutation (8! = 40,320) is enumerated up to this many
PERMUTATIONS = 9999  # random permutations above it
_CHUNK = 1 << 22  # pair signs per block of permutations (memory stays ~ 32 MB)
ALTERNATIVES = ("two-sided", "greater", "less")  # scipy's names: greater tests a positive association


def interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t-interval of the mean; the interval is NaN with fewer than two values."""
    a = np.asarray(values, dtype=np.float64)
    mean = float(a.mean())
    if len(a) < 2:
        return mean, math.nan, math.nan
    if a.std() == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return mean, mean - half, mean + half


def bounded_interval(values: list[float], bounds: tuple[float, float],
                     level: float = 0.95) -> tuple[float, float, float, str]:
    """``interval`` kept inside the metric's own range (the t-interval of an accuracy near 1 passes 1), with a
    note saying that it was clipped, or why there is none."""
    mean, lo, hi = interval(values, level)
    if len(values) < 2:
        return mean, lo, hi, "one seed: no interval"
    clipped = lo < bounds[0] or hi > bounds[1]
    return mean, max(lo, bounds[0]), min(hi, bounds[1]), f"clipped to {span(bounds)}" if clipped else ""


def signs(v: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) for every pair: the (n, n) matrix behind Kendall's tau."""
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v[:, None] - v[None, :])


def _pairs(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """sum over i < j of w_i w_j M_ij per row of weights (M symmetric, zero diagonal): a count of pairs, exact
    in float64 for integer weights."""
    return ((weights @ matrix) * weights).sum(axis=1) / 2


def kendall_tau_b(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (ties corrected as scipy does) of the data with member i repeated ``weights[b, i]`` times,
    for every row b; NaN where the drawn x or y are all equal. Two copies of one member tie in x and in y, so
    they count in neither the numerator nor the denominators."""
    sx, sy = signs(x), signs(y)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    score, untied_x, untied_y = _pairs(w, sx * sy), _pairs(w, np.abs(sx)), _pairs(w, np.abs(sy))
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = score / np.sqrt(untied_x) / np.sqrt(untied_y)  # scipy's order of operations, so equal to its bits
    return np.where((untied_x > 0) & (untied_y > 0), np.clip(tau, -1.0, 1.0), np.nan)


def pearson_r(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson's r of the data with member i repeated ``weights[b, i]`` times, for every row b; NaN where the
    drawn x or y have no spread."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n = w.sum(axis=1, keepdims=True)
    dx, dy = x - (w @ x)[:, None] / n, y - (w @ y)[:, None] / n
    sxy, sxx, syy = (w * dx * dy).sum(1), (w * dx * dx).sum(1), (w * dy * dy).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    return np.where(_spread(x, w) & _spread(y, w), np.clip(r, -1.0, 1.0), np.nan)


def _spread(v: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Whether the members drawn in each row differ in v (decided on the values, not on a rounded variance)."""
    drawn = weights > 0
    return np.where(drawn, v, -np.inf).max(axis=1) > np.where(drawn, v, np.inf).min(axis=1)


def resample_groups(n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_groups) group indices, each row drawn with replacement. With every model its own group these are
    the draws the report made one resample at a time before, so the intervals are unchanged."""
    return rng.integers(0, n_groups, (n_boot, n_groups))


def member_weights(groups: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """How often each member enters each resample: the number of times its group was drawn."""
    n_boot, n_groups = draws.shape
    offsets = (draws + n_groups * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(offsets, minlength=n_boot * n_groups).reshape(n_boot, n_groups)
    return counts[:, np.asarray(groups)]


def group_means(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    groups = np.asarray(groups)
    return np.bincount(groups, weights=values) / np.bincount(groups)


@lru_cache(maxsize=EXACT_UP_TO + 1)
def _all_permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp).reshape(-1, n)


def permutation_test(x: np.ndarray, y: np.ndarray, seed: int, exact_up_to: int = EXACT_UP_TO,
                     n_perm: int = PERMUTATIONS, alternative: str = "two-sided") -> tuple[float, float]:
    """Kendall's tau-b of x with y and its permutation p-value: the share of permutations of y whose tau is at
    least as extreme as the observed one (``two-sided``: |tau|; ``greater``: tau >= observed; ``less``: tau <=
    observed). Every permutation up to ``exact_up_to`` points (the exact p, equal to scipy's exact test when
    nothing ties); else ``n_perm`` seeded random ones, p = (1 + hits) / (1 + n_perm). NaN when x or y is
    constant (or fewer than 2 points)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r}; valid: {', '.join(ALTERNATIVES)}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    i, j = np.triu_indices(n, 1)
    sx = np.sign(x[i] - x[j])
    observed = float(stats.kendalltau(x, y)[0])
    # permuting y leaves its ties, hence both denominators, as they are: compare the numerators (integers)
    score = float(sx @ np.sign(y[i] - y[j]))
    extreme = {"two-sided": lambda s: np.abs(s) >= abs(score), "greater": lambda s: s >= score,
               "less": lambda s: s <= score}[alternative]
    if n <= exact_up_to:
        perms, random = _all_permutations(n), False
    else:
        perms, random = np.random.default_rng(seed).permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1), True
    hits, step = 0, max(1, _CHUNK // len(i))
    for start in range(0, len(perms), step):
        yp = y[perms[start:start + step]]
        hits += int(np.count_nonzero(extreme(np.sign(yp[:, i] - yp[:, j]) @ sx)))
    p_value = (1 + hits) / (1 + n_perm) if random else hits / len(perms)
    return observed, float(p_value)



@lru_cache(maxsize=128)
def inversion_pmf(n: int) -> np.ndarray:
    """P(D = d), d = 0 .. n(n-1)/2, for D the number of inversions of a uniformly random permutation of n: the
    null distribution of the discordant pairs of n untied points. The k-th element placed adds 0..k-1
    inversions, uniformly and independently, so the pmf is the convolution of those uniforms."""
    pmf = np.ones(1)
    for k in range(2, n + 1):
        pmf = np.convolve(pmf, np.full(k, 1.0 / k))
    return pmf


def discordant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The number of discordant pairs of each row of x with the same row of y (arrays [..., n])."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    i, j = np.triu_indices(x.shape[-1], 1)
    return np.count_nonzero((x[..., i] - x[..., j]) * (y[..., i] - y[..., j]) < 0, axis=-1)


def exact_p(d: np.ndarray, n: int, alternative: str) -> np.ndarray:
    """The exact p of untied Kendall tests with ``d`` discordant pairs among n points: ``greater`` (positive
    association) P(D <= d), ``less`` P(D >= d), ``two-sided`` twice the smaller tail, at most 1."""
    cdf = np.minimum(np.cumsum(inversion_pmf(n)), 1.0)
    sf = np.minimum(np.cumsum(inversion_pmf(n)[::-1])[::-1], 1.0)  # P(D >= d)
    d = np.asarray(d, dtype=np.intp)
    if alternative == "greater":
        return cdf[d]
    if alternative == "less":
        return sf[d]
    if alternative == "two-sided":
        return np.minimum(1.0, 2 * np.minimum(cdf[d], sf[d]))
    raise ValueError(f"alternative={alternative!r}; valid: {', '.join(ALTERNATIVES)}")


def kendall_test(x: np.ndarray, y: np.ndarray, alternative: str, seed: int = 0) -> tuple[float, float, str]:
    """Kendall's tau-b of x with y, its p-value and how it was computed: exact over every permutation (the
    inversion distribution) when neither x nor y ties; with ties, the permutation count (``permutation_test``,
    exact up to ``EXACT_UP_TO`` points, else seeded); NaN when either is constant or n < 2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, "constant"
    if len(np.unique(x)) == n and len(np.unique(y)) == n:
        d = int(discordant(x, y))
        return 1 - 4 * d / (n * (n - 1)), float(exact_p(d, n, alternative)), "exact"
    tau, p = permutation_test(x, y, seed, alternative=alternative)
    return tau, p, "permutation (ties)"


def tau_interval(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval of Kendall's tau-b of x with y, resampling the points (here: recipe means,
    so the interval describes the same tau as ``kendall_test``); resamples where tau is undefined left out."""
    n = len(x)
    weights = member_weights(np.arange(n), resample_groups(n, n_boot, np.random.default_rng(seed)))
    boot = kendall_tau_b(x, y, weights)
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return math.nan, math.nan
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _adjusted(p_values, step) -> np.ndarray:
    """``step`` (sorted finite p-values -> their adjusted values) applied over the finite ones, each back in its
    place; NaN stays NaN and is not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if len(finite):
        order = finite[np.argsort(p[finite], kind="stable")]
        out[order] = np.minimum(1.0, step(p[order]))
    return out


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values: the i-th smallest (from 0) of m times m - i, the running maximum of
    those, clipped to 1."""
    return _adjusted(p_values, lambda p: np.maximum.accumulate((len(p) - np.arange(len(p))) * p))


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q): the i-th smallest (from 1) of m times m / i, the running minimum
    from the largest down, clipped to 1. Controls the false discovery rate of an exploratory table, where Holm
    over hundreds of rows would pass nothing."""
    return _adjusted(p_values, lambda p: np.minimum.accumulate((p * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1])


def correlations(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, level: float = 0.95, *,
                 groups=None) -> dict:
    """Pearson's r and Kendall's tau of x with y over the members, each with a percentile bootstrap interval that
    resamples ``groups`` (integer codes 0..G-1 per member; default: each member its own group), resamples where
    a statistic is undefined (all-equal values) left out; Kendall's tau of the group means with its permutation
    p-value over groups (``kendall_groups``, ``p``); and ``groups``, their count."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups, dtype=np.intp)
    n_groups = int(groups.max()) + 1
    keys = ("pearson", "kendall", "pearson_lo", "pearson_hi", "kendall_lo", "kendall_hi", "kendall_groups", "p")
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant column has no correlation: NaN, said as such
        return {**{k: math.nan for k in keys}, "groups": n_groups}
    out = {"pearson": float(stats.pearsonr(x, y)[0]), "kendall": float(stats.kendalltau(x, y)[0])}
    weights = member_weights(groups, resample_groups(n_groups, n_boot, np.random.default_rng(seed)))
    boot = {"pearson": pearson_r(x, y, weights), "kendall": kendall_tau_b(x, y, weights)}
    defined = np.isfinite(boot["pearson"]) & np.isfinite(boot["kendall"])
    for key, values in boot.items():
        values = values[defined]
        lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)]) if len(values) else (math.nan, math.nan)
        out[f"{key}_lo"], out[f"{key}_hi"] = float(lo), float(hi)
    out["kendall_groups"], out["p"] = permutation_test(group_means(x, groups), group_means(y, groups), seed)
    out["groups"] = n_groups
    return out

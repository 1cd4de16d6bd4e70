"""Power by design: how likely the validity study's test is to detect a true association, before any study runs.

The study tests Kendall's tau of recipe means, one-sided and exact (``stats.kendall_test``), inside a Holm
family of pre-registered tests. The simulation here applies that same test and correction to recipe-level data
drawn from a Gaussian copula: a bivariate normal with correlation rho has Kendall's tau = 2/pi arcsin(rho), so
rho = sin(pi tau / 2) gives any target tau (ranks only depend on the copula, so the margins do not matter).
Seeds enter as noise on the recipe means: each of ``seeds`` training seeds adds independent noise of standard
deviation ``noise`` (relative to the spread of the recipes' true values) to the score and to the truth, so the
observed recipe mean carries noise / sqrt(seeds); the target tau is that of the noise-free recipe values.

The other tests of the family are drawn independently, with their own true tau (0 unless given): with every
other test null, Holm's first step is Bonferroni, the case the issue's figures (one-sided, 0.05/36) describe.

``python -m synbench.report.power [conf/validity/preregistration.yaml]`` prints the pre-registered design's
power and the old design's, as markdown tables.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from synbench.report.stats import ALTERNATIVES, discordant, exact_p

REPS = 20000  # Monte-Carlo replicates: the standard error of a power near 0.8 is then 0.003
CHUNK = 2000  # replicates per block (memory: CHUNK x pairs x 8 bytes per test)


def holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of every row of p ([reps, m], all finite): ``stats.holm`` row by row, at once."""
    m = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(np.take_along_axis(p, order, 1) * (m - np.arange(m)), axis=1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


def rho_of_tau(tau) -> np.ndarray:
    """The normal correlation whose Kendall's tau is ``tau`` (Greiner's relation tau = 2/pi arcsin rho)."""
    return np.sin(np.pi * np.asarray(tau, dtype=np.float64) / 2)


def draw(z: np.ndarray, tau: float, seeds: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Observed recipe means (score, truth) from standard normal draws z [..., n, 4]: the first two columns make
    the copula with Kendall's tau ``tau``, the last two the seed noise of each mean."""
    rho = float(rho_of_tau(tau))
    x = z[..., 0]
    y = rho * z[..., 0] + math.sqrt(max(0.0, 1 - rho * rho)) * z[..., 1]
    scale = noise / math.sqrt(seeds)
    return x + scale * z[..., 2], y + scale * z[..., 3]


def simulate(taus, ns, alpha: float = 0.05, alternative: str = "greater", correction: str = "holm",
             seeds: int = 1, noise: float = 0.0, reps: int = REPS, seed: int = 0, z=None) -> np.ndarray:
    """The share of ``reps`` simulated studies in which each test of the family rejects: test k has true tau
    ``taus[k]`` over ``ns[k]`` recipes; p-values exact (``stats.exact_p``: the study's test, ties having
    probability 0 here), adjusted by ``correction`` (``holm`` over the family, or ``none``), rejected at
    adjusted p <= alpha. ``z`` (optional): the standard normal draws, one [reps, n, 4] array per test, so that
    calls for different taus share them (common random numbers)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r}; valid: {', '.join(ALTERNATIVES)}")
    if correction not in ("holm", "none"):
        raise ValueError(f"correction={correction!r}; valid: holm, none")
    taus, ns = list(taus), [int(n) for n in ns]
    if len(taus) != len(ns) or not ns or min(ns) < 2:
        raise ValueError(f"need one n >= 2 per tau: taus {taus}, ns {ns}")
    if z is None:
        rng = np.random.default_rng(seed)
        z = [rng.standard_normal((reps, n, 4)) for n in ns]
    p = np.empty((len(z[0]), len(ns)))
    for k, (tau, n, zk) in enumerate(zip(taus, ns, z)):
        for start in range(0, len(zk), CHUNK):
            x, y = draw(zk[start:start + CHUNK], tau, seeds, noise)
            p[start:start + CHUNK, k] = exact_p(discordant(x, y), n, alternative)
    adjusted = holm_rows(p) if correction == "holm" else p
    return (adjusted <= alpha).mean(axis=0)


def power(tau: float, n: int, m: int = 1, **kw) -> float:
    """The chance that a test of true tau over n recipes rejects inside a family of m tests whose m - 1 others
    are null (each over n recipes)."""
    return float(simulate([tau] + [0.0] * (m - 1), [n] * m, **kw)[0])


def detectable_tau(n: int, m: int = 1, target: float = 0.8, tol: float = 0.005, **kw) -> float:
    """The smallest true tau that the test over n recipes (in a family of m, the others null) detects with
    probability ``target``, by bisection over tau on common random numbers (so power rises with tau); NaN if
    even tau = 1 falls short (the design cannot reach ``target``)."""
    rng = np.random.default_rng(kw.pop("seed", 0))
    reps = kw.pop("reps", REPS)
    z = [rng.standard_normal((reps, n, 4)) for _ in range(m)]

    def rate(tau: float) -> float:
        return float(simulate([tau] + [0.0] * (m - 1), [n] * m, z=z, **kw)[0])

    lo, hi = 0.0, 1.0
    if rate(hi) < target:
        return math.nan
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if rate(mid) >= target else (mid, hi)
    return hi


def size(n: int, alpha: float, alternative: str = "greater") -> float:
    """The exact size of the uncorrected test over n untied points: the largest attainable P(p <= alpha) under
    the null, which a valid discrete test keeps at or under alpha."""
    from synbench.report.stats import inversion_pmf

    pmf = inversion_pmf(n)
    p = exact_p(np.arange(len(pmf)), n, alternative)
    return float(pmf[p <= alpha].sum())


def _table(rows: list[list[str]], header: list[str]) -> str:
    from synbench.report.mdtable import table

    return table(header, rows, ["---:" if h != "design" else "---" for h in header])


def report(prereg_path: Path, reps: int = REPS) -> str:
    """The pre-registered design's power (per test size, Holm over its supported family; without and with seed
    noise as large as the recipes' spread) and the 2026-12-04 run's (9 or 10 recipes, two-sided, Holm over 36),
    as markdown: the numbers docs/validity.md quotes."""
    from synbench.preregistration import load

    pre = load(prereg_path)
    alpha, ns, seeds = pre["statistics"]["alpha"], pre["family_ns"], len(pre["design"]["seeds"])
    m = len(ns)
    designs = [(f"pre-registered: {n} recipes, one-sided, Holm over {m}", n, m, "greater", 1, 0.0)
               for n in sorted(set(ns))]
    designs += [(f"pre-registered: {n} recipes, one-sided, Holm over {m}, seed noise = recipe spread, "
                 f"{seeds} seeds", n, m, "greater", seeds, 1.0) for n in sorted(set(ns))]
    designs += [(f"2026-12-04 run: {n} recipes, two-sided, Holm over 36", n, 36, "two-sided", 1, 0.0)
                for n in (9, 10)]
    rows = []
    for name, n, size, alternative, s, noise in designs:
        kw = {"alpha": alpha, "alternative": alternative, "seeds": s, "noise": noise, "reps": reps}
        rows.append([name, f"{n}", *(f"{power(t, n, size, **kw):.2f}" for t in (0.3, 0.5, 0.7)),
                     _fmt(detectable_tau(n, size, **kw))])
    header = ["design", "recipes", "power at tau 0.3", "power at tau 0.5", "power at tau 0.7",
              "smallest tau detected with probability 0.8"]
    return _table(rows, header)


def _fmt(v: float) -> str:
    return "none (not even tau = 1)" if math.isnan(v) else f"{v:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synbench.report.power", description=__doc__.split("\n\n")[0])
    p.add_argument("preregistration", nargs="?", type=Path,
                   default=Path(__file__).resolve().parents[2] / "conf" / "validity" / "preregistration.yaml")
    p.add_argument("--reps", type=int, default=REPS, help=f"Monte-Carlo replicates per point (default {REPS})")
    args = p.parse_args(argv)
    print(report(args.preregistration, args.reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

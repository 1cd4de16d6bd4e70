"""The validity study's exact test and its power by design (synbench/report/stats.py, synbench/report/power.py):
the exact one-sided p against scipy and a count of every permutation, the null distribution against a direct
count of inversions, the simulation's size against the test's exact size, Greiner's relation, the vectorised
Holm against the report's, and the issue's power figures (one-sided, 0.05/36: about 0.12 at 10 recipes and 0.88
at 30 for tau 0.5)."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from synbench.report import power as pw
from synbench.report import stats as rstats
from synbench.report.mdtable import ragged


def count_p(x, y, alternative: str) -> float:
    """The share of every permutation of y whose Kendall tau is at least as extreme as the observed one."""
    i, j = np.triu_indices(len(x), 1)
    sx = np.sign(x[i] - x[j])
    perms = np.array(list(itertools.permutations(range(len(y)))))
    taus = (np.sign(y[perms][:, i] - y[perms][:, j]) @ sx) / len(i)  # tau-a: ties move every permutation alike
    tau = float(np.sign(y[i] - y[j]) @ sx) / len(i)
    hit = {"greater": taus >= tau - 1e-12, "less": taus <= tau + 1e-12,
           "two-sided": np.abs(taus) >= abs(tau) - 1e-12}[alternative]
    return float(hit.mean())


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_the_exact_p_is_a_count_of_every_permutation(n):
    rng = np.random.default_rng(n)
    for _ in range(3):
        x, y = rng.normal(size=n), rng.normal(size=n)
        for alternative in ("greater", "less"):
            tau, p, how = rstats.kendall_test(x, y, alternative)
            assert how == "exact" and tau == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
            assert p == pytest.approx(count_p(x, y, alternative), abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 9, 10, 16, 30, 45])
def test_the_exact_p_equals_scipys(n):
    rng = np.random.default_rng(100 + n)
    for k in range(4):
        x = rng.normal(size=n)
        y = x * (k / 3) + rng.normal(size=n)  # from no association to a strong one
        for alternative in ("greater", "less", "two-sided"):
            want = stats.kendalltau(x, y, method="exact", alternative=alternative)
            tau, p, _ = rstats.kendall_test(x, y, alternative)
            assert tau == pytest.approx(want.statistic, abs=1e-12)
            assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-15)


def test_ties_fall_back_to_a_one_sided_permutation_count():
    x = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.0, 1.0, 3.0, 3.0, 5.0, 4.0])
    for alternative in ("greater", "less", "two-sided"):
        tau, p, how = rstats.kendall_test(x, y, alternative)
        assert how == "permutation (ties)" and p == pytest.approx(count_p(x, y, alternative), abs=1e-12)
    assert math.isnan(rstats.kendall_test(np.ones(5), x[:5], "greater")[1])
    with pytest.raises(ValueError, match="alternative"):
        rstats.permutation_test(x, y, 0, alternative="bigger")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_the_null_distribution_counts_inversions(n):
    counts = np.zeros(n * (n - 1) // 2 + 1)
    for perm in itertools.permutations(range(n)):
        counts[sum(perm[i] > perm[j] for i in range(n) for j in range(i + 1, n))] += 1
    assert rstats.inversion_pmf(n) == pytest.approx(counts / math.factorial(n), abs=1e-15)


def test_greiners_relation_gives_the_target_tau():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 20000, 4))
    for tau in (0.0, 0.3, 0.5, 0.8):
        x, y = pw.draw(z, tau, seeds=1, noise=0.0)
        assert stats.kendalltau(x[0], y[0])[0] == pytest.approx(tau, abs=0.01)
    # seed noise attenuates: with noise equal to the recipes' spread and 2 seeds, rho shrinks by 1 / 1.5
    x, y = pw.draw(z, 0.5, seeds=2, noise=1.0)
    rho = math.sin(math.pi * 0.5 / 2) / 1.5
    assert stats.kendalltau(x[0], y[0])[0] == pytest.approx(2 / math.pi * math.asin(rho), abs=0.01)


@pytest.mark.parametrize("n,alpha", [(6, 0.05), (8, 0.05), (10, 0.01)])
def test_at_tau_zero_the_simulated_rejection_rate_is_the_tests_exact_size(n, alpha):
    size = pw.size(n, alpha)
    assert 0 < size <= alpha  # a valid discrete test: at most alpha, attained exactly
    reps = 40000
    rate = pw.power(0.0, n, alpha=alpha, correction="none", reps=reps, seed=n)
    assert abs(rate - size) < 4 * math.sqrt(size * (1 - size) / reps), (rate, size)


def test_holm_rows_is_the_reports_holm_row_by_row():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(50, 7)) ** 3
    p[0, :3] = 0.01  # ties keep their order
    want = np.array([rstats.holm(row) for row in p])
    assert pw.holm_rows(p) == pytest.approx(want, abs=1e-15)


def test_the_issues_figures():
    """One-sided exact Kendall at 0.05/36 detects tau 0.5 with probability about 0.12 at 10 recipes and 0.88 at
    30 (issue 41); Holm over 36 with the other 35 null gives the same here (its first step is Bonferroni)."""
    low = pw.power(0.5, 10, alpha=0.05 / 36, correction="none", reps=20000)
    high = pw.power(0.5, 30, alpha=0.05 / 36, correction="none", reps=20000)
    assert low == pytest.approx(0.12, abs=0.02) and high == pytest.approx(0.88, abs=0.02), (low, high)
    assert pw.power(0.5, 30, 36, reps=20000) == pytest.approx(high, abs=0.01)


def test_power_orders_as_it_must():
    kw = {"reps": 4000, "seed": 3}
    none, holm = pw.power(0.5, 20, alpha=0.05, correction="none", **kw), pw.power(0.5, 20, 10, **kw)
    bonferroni = pw.power(0.5, 20, alpha=0.005, correction="none", **kw)
    assert none > holm >= bonferroni - 0.02  # Holm is never below Bonferroni (up to Monte-Carlo error)
    assert pw.power(0.5, 30, 10, **kw) > pw.power(0.5, 15, 10, **kw)  # more recipes, more power
    assert pw.power(0.5, 20, 10, seeds=2, noise=1.0, **kw) < holm  # seed noise costs power
    assert pw.power(-0.5, 20, alpha=0.05, correction="none", **kw) < 0.01  # one-sided: the wrong sign never passes


def test_the_detectable_tau_is_where_power_crosses_the_target():
    kw = {"reps": 3000, "seed": 5}
    tau = pw.detectable_tau(20, 4, **kw)
    rng = np.random.default_rng(5)
    z = [rng.standard_normal((3000, 20, 4)) for _ in range(4)]
    at = pw.simulate([tau, 0, 0, 0], [20] * 4, z=z)[0]
    below = pw.simulate([tau - 0.01, 0, 0, 0], [20] * 4, z=z)[0]
    assert at >= 0.8 > below
    assert math.isnan(pw.detectable_tau(3, 36, reps=500))  # 3 recipes can never pass 0.05/36: said, not a number


def test_the_power_report_renders(tmp_path):
    text = pw.report(pw.Path(__file__).resolve().parent.parent / "conf" / "validity" / "preregistration.yaml",
                     reps=300)
    assert "pre-registered: 36 recipes" in text and "2026-12-04 run: 10 recipes" in text
    assert ragged(text) == []

"""The validity study's verdicts, written by the study from its pre-registration (``design.load``), never by hand.

One statistic per row: Kendall's tau-b over recipe means (a recipe's score and truth each averaged over its
training seeds), its exact one-sided p (``stats.kendall_test``) and a percentile bootstrap interval that
resamples the same recipe means, so the tau, the interval and the p of a row describe one quantity.

Verdicts, the same rule for every row (label-free claims and the labelled control alike):
- supported: the one-sided p in the claimed direction, Holm-adjusted over its registered family, <= alpha;
- contradicted: the one-sided p in the opposite direction, Holm-adjusted over the same family (a test of its
  own, registered as such), <= alpha;
- absent: the interval (registered level, 90%) lies inside (-margin, +margin);
- undecided: anything else, a test that could not run (too few recipes, a constant column: it counts as p = 1,
  so the family keeps its registered size), or a row whose members are mostly guard-flagged (a floored or
  pinned score is not a measurement).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from synbench.preregistration import in_subset
from synbench.report.mdtable import table
from synbench.report.stats import benjamini_hochberg, holm, kendall_test, tau_interval

GROUP = re.compile(r"(.+)_s\d+")  # <recipe>_s<seed>: the recipe is the unit
ACCURACY = "downstream/accuracy"


def recipe(member: str) -> str:
    m = GROUP.fullmatch(member)
    return m.group(1) if m else member


def recipe_means(x: dict, y: dict, recipes: list[str]) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """The recipes (of ``recipes``) with a member finite in both x and y, their mean x and mean y over those
    members, and the number of members used."""
    by = defaultdict(list)
    for m in sorted(set(x) & set(y)):
        if math.isfinite(x[m]) and math.isfinite(y[m]) and recipe(m) in recipes:
            by[recipe(m)].append(m)
    names = [r for r in recipes if r in by]
    xm = np.array([np.mean([x[m] for m in by[r]]) for r in names])
    ym = np.array([np.mean([y[m] for m in by[r]]) for r in names])
    return names, xm, ym, sum(len(by[r]) for r in names)


def transform(values: dict, how: str) -> dict:
    """The score a claim ranks by: ``identity``, or ``closeness_to_1`` (-|x - 1|)."""
    if how == "closeness_to_1":
        return {m: -abs(v - 1.0) for m, v in values.items()}
    return dict(values)


def not_run(note: str) -> dict:
    """A registered test without numbers: p = 1 in both directions, so its family keeps its registered size."""
    return {"recipes": 0, "tau": math.nan, "lo": math.nan, "hi": math.nan, "p_claimed": 1.0, "p_opposite": 1.0,
            "method": "", "note": note}


def evaluate(x: np.ndarray, y: np.ndarray, sign: int, eq: dict, min_recipes: int) -> dict:
    """Tau over the recipe means, its exact one-sided p in the claimed and in the opposite direction, and the
    registered bootstrap interval of the same tau; ``note`` says why a test did not run (then p = 1)."""
    out = {**not_run(""), "recipes": len(x)}
    if len(x) < min_recipes:
        return {**out, "note": f"not run: {len(x)} recipes (the test needs {min_recipes})"}
    claimed, opposite = ("greater", "less") if sign > 0 else ("less", "greater")
    tau, p_claimed, method = kendall_test(x, y, claimed)
    if not math.isfinite(tau):
        return {**out, "note": "not run: the score or the truth is constant over the recipes"}
    _, p_opposite, _ = kendall_test(x, y, opposite)
    lo, hi = tau_interval(x, y, eq["resamples"], eq["seed"], eq["level"])
    return {**out, "tau": tau, "lo": lo, "hi": hi, "p_claimed": p_claimed, "p_opposite": p_opposite,
            "method": method}


def verdict(row: dict, alpha: float, margin: float) -> str:
    if row["note"]:
        return "undecided"
    if row["p_claimed_holm"] <= alpha:
        return "supported"
    if row["p_opposite_holm"] <= alpha:
        return "contradicted"
    if -margin < row["lo"] and row["hi"] < margin:
        return "absent"
    return "undecided"


def decide(rows: list[dict], alpha: float, margin: float) -> list[dict]:
    """Holm over the family's rows in each direction, then each row's verdict (in place; returns rows)."""
    for key in ("p_claimed", "p_opposite"):
        for r, adj in zip(rows, holm([r[key] for r in rows])):
            r[f"{key}_holm"] = float(adj)
    for r in rows:
        r["verdict"] = verdict(r, alpha, margin)
    return rows


def score_name(values: dict, score: str, dataset: str, directions: set = frozenset()) -> str | None:
    """The report's name of ``score``: itself, its per-dataset name when the sweep read several datasets, or its
    bare name when the score names a direction (``synbench/score [ones]``) and every run that computed the score
    used that one direction (``directions``): a report of one direction writes no bracket."""
    for name in (score, f"{score} [{dataset}]"):
        if name in values:
            return name
    bare = re.sub(r" \[[^]]*\]$", "", score)
    if bare != score and bare in values and set(directions) == {score[len(bare):].strip(" []")}:
        return bare
    return None


def guard_key(flag: str, score: str) -> str:
    """A guard flag belongs to the run that computed the score: ``synbench/floored [ones]`` for the score
    ``synbench/score [ones]`` (its direction), the bare flag for a score without one."""
    bracket = re.search(r" (\[[^]]*\])$", score)
    return f"{flag} {bracket.group(1)}" if bracket else flag


def shown(score: str, how: str) -> str:
    return f"-|{score} - 1|" if how == "closeness_to_1" else score


def claim_rows(pre: dict, which: str, values: dict, flags: dict, recipes: dict, directions: dict | None = None
               ) -> list[dict]:
    """Every registered test of ``which`` (``claims`` or ``controls``): claim x domain x truth, in the file's
    order, with the family's Holm and the verdicts. ``values[domain]``: {report name: {member: mean}};
    ``flags[domain][flag]``: {member: value} of the guard flags; ``recipes[domain]``: the recipes of the run;
    ``directions[domain]``: the mixture directions of the runs that computed SynBench's score."""
    st = pre["statistics"]
    domains = pre["design"]["domains"]
    other = {domains[0]: domains[1], domains[1]: domains[0]}
    rows = []
    for c in pre[which]:
        for domain in domains:
            for truth in c["truths"]:
                truth_ds = domain if truth == "home" else other[domain]
                vals = values.get(domain, {})
                score_ds = truth_ds if c["input"] == "target_labels" else domain
                name = score_name(vals, c["score"], score_ds, (directions or {}).get(domain, set()))
                row = {"id": c["id"], "paper": c["paper"], "where": c["where"], "domain": domain,
                       "truth": f"{truth_ds} accuracy ({truth})", "subset": c["subset"], "sign": c["sign"],
                       # the registered name where the report's is the bare one of a single direction
                       "score": shown(name if name in (c["score"], f"{c['score']} [{score_ds}]") else c["score"],
                                      c["transform"]),
                       "members": 0, "guards": ""}
                column = vals.get(f"{truth_ds}: {ACCURACY}")
                subset = in_subset(recipes.get(domain, []), pre["subset_re"][c["subset"]])
                if name is None or column is None:
                    missing = c["score"] if name is None else f"{truth_ds}: {ACCURACY}"
                    rows.append({**row, **not_run(f"not run: no {missing} in this run")})
                    continue
                names, x, y, n_members = recipe_means(transform(vals[name], c["transform"]), column, subset)
                row.update(evaluate(x, y, c["sign"], st["equivalence"], st["min_recipes"]), members=n_members)
                members = [m for m in vals[name] if recipe(m) in names and m in column]
                got = flags.get(domain, {})
                flagged = {g: sorted(m for m in members if got.get(guard_key(g, c["score"]), {}).get(m, 0.0) == 1.0)
                           for g in c["guards"]}
                hit = set().union(*flagged.values()) if flagged else set()
                row["guards"] = "; ".join(f"{g.rsplit('/', 1)[-1]} {len(v)} of {len(members)}"
                                          for g, v in flagged.items()) or "none registered"
                if members and len(hit) > st["guard_share"] * len(members) and not row["note"]:
                    row["note"] = (f"guarded: {len(hit)} of {len(members)} members flagged "
                                   f"(more than {st['guard_share']:g}); the score is not a measurement there")
                rows.append(row)
    return decide(rows, st["alpha"], st["equivalence"]["margin"])


def _f(v: float, spec: str = "+.2f") -> str:
    return "n/a" if not math.isfinite(v) else format(v, spec)


def _p(v: float) -> str:
    return "n/a" if not math.isfinite(v) else "<0.001" if v < 0.001 else f"{v:.3f}"


def claims_table(rows: list[dict], pre: dict) -> str:
    """The rows as a markdown table, then the sources of each claim and why any test did not run."""
    level = pre["statistics"]["equivalence"]["level"]
    header = ["claim", "score", "domain", "truth", "subset", "recipes (members)", "expected",
              f"Kendall tau of recipe means [{level:.0%} CI]", "p, claimed direction", "Holm",
              "p, opposite", "Holm", "guards", "verdict"]
    align = ["---"] * 5 + ["---:", ":---:", "---"] + ["---:"] * 4 + ["---", "---"]
    body = [[r["paper"], r["score"], r["domain"], r["truth"], r["subset"], f"{r['recipes']} ({r['members']})",
             "+" if r["sign"] > 0 else "-", f"{_f(r['tau'])} [{_f(r['lo'])}, {_f(r['hi'])}]",
             _p(r["p_claimed"]), _p(r["p_claimed_holm"]), _p(r["p_opposite"]), _p(r["p_opposite_holm"]),
             r["guards"], r["verdict"]] for r in rows]
    notes = sorted({f"{r['paper']}: {r['where']}" for r in rows})
    notes += [f"{r['paper']}, {r['domain']}, {r['truth']}: {r['note']}" for r in rows if r["note"]]
    ties = [r for r in rows if r["method"].startswith("permutation")]
    notes += [f"{r['paper']}, {r['domain']}, {r['truth']}: recipe means tie, so p is a one-sided permutation "
              "count, not the exact distribution" for r in ties]
    return table(header, body, align) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def verdict_counts(rows: list[dict]) -> dict:
    out = {v: 0 for v in ("supported", "contradicted", "absent", "undecided")}
    for r in rows:
        out[r["verdict"]] += 1
    return out


def exploratory_rows(values: dict, subsets: dict, level: float, n_boot: int, seed: int, min_recipes: int,
                     keep=lambda metric: True) -> list[dict]:
    """Every label-free score (and LogME) against every accuracy truth over each subset of recipes: tau of
    recipe means, its two-sided exact p (uncorrected) and a bootstrap interval of the same tau, then q
    (Benjamini-Hochberg over these rows). ``subsets``: {name: recipe names}."""
    rows = []
    truths = sorted(k for k in values if k.endswith(f": {ACCURACY}"))
    for metric in sorted(k for k in values if ": " not in k and keep(k)):
        for truth in truths:
            for subset, names in subsets.items():
                kept, x, y, n_members = recipe_means(values[metric], values[truth], names)
                if len(kept) < min_recipes:
                    continue
                tau, p, method = kendall_test(x, y, "two-sided")
                if not math.isfinite(tau):
                    continue
                lo, hi = tau_interval(x, y, n_boot, seed, level)
                rows.append({"metric": metric, "truth": truth.split(":")[0] + " accuracy", "subset": subset,
                             "recipes": len(kept), "members": n_members, "tau": tau, "lo": lo, "hi": hi, "p": p,
                             "method": method})
    for r, q in zip(rows, benjamini_hochberg([r["p"] for r in rows])):
        r["q"] = float(q)
    return rows


def exploratory_table(rows: list[dict], level: float) -> str:
    header = ["score", "truth", "subset", "recipes (members)", f"Kendall tau of recipe means [{level:.0%} CI]",
              "p (two-sided, uncorrected)", "q (Benjamini-Hochberg, this table)"]
    body = [[r["metric"], r["truth"], r["subset"], f"{r['recipes']} ({r['members']})",
             f"{_f(r['tau'])} [{_f(r['lo'])}, {_f(r['hi'])}]", _p(r["p"]), _p(r["q"])] for r in rows]
    return table(header, body, ["---", "---", "---", "---:", "---", "---:", "---:"])


def nern_rows(pre: dict, runs_by_domain: dict) -> list[dict]:
    """Nern et al.'s criterion as a check that can fail, per domain, dataset and registered radius: members
    whose certified fraction exceeds their end-to-end robust accuracy (+ tolerance) are violations; a radius
    where no member certifies anything is vacuous (it cannot fail), one the runs did not measure is said."""
    rows = []
    for check in pre["checks"]:
        for domain, runs in runs_by_domain.items():
            found = defaultdict(dict)  # dataset -> {radius: [(certified, robust)]}
            datasets = sorted({r.data.tags.get("synbench.dataset", "?") for r in runs
                               if any(k.startswith("downstream/") for k in r.data.metrics)})
            for ds in datasets:
                for radius in check["radii"]:
                    c_key = check["certified"].format(radius=f"{radius:g}")
                    r_key = check["robust"].format(radius=f"{radius:g}")
                    found[ds][radius] = [(r.data.metrics[c_key], r.data.metrics[r_key]) for r in runs
                                         if r.data.tags.get("synbench.dataset") == ds and c_key in r.data.metrics
                                         and r_key in r.data.metrics]
            for ds in datasets:
                for radius, pairs in found[ds].items():
                    a = np.array(pairs).reshape(-1, 2)
                    excess = a[:, 0] - a[:, 1]
                    bad = int((excess > check["tolerance"]).sum())
                    certifying = int((a[:, 0] > 0).sum())
                    result = ("not measured" if not len(a) else "fails" if bad else
                              "vacuous" if certifying == 0 else "holds")
                    rows.append({"domain": domain, "dataset": ds, "radius": radius, "members": len(a),
                                 "certifying": certifying, "violations": bad,
                                 "excess": float(excess.max()) if len(a) else math.nan,
                                 "certified": float(a[:, 0].mean()) if len(a) else math.nan,
                                 "robust": float(a[:, 1].mean()) if len(a) else math.nan, "result": result})
    return rows


def nern_table(rows: list[dict]) -> str:
    header = ["domain", "dataset", "radius (l-inf, pixels)", "members", "members certifying > 0",
              "violations (certified > robust)", "largest excess", "certified, mean", "robust accuracy, mean",
              "result"]
    body = [[r["domain"], r["dataset"], f"{r['radius']:g}", r["members"], r["certifying"], r["violations"],
             _f(r["excess"], "+.3f"), _f(r["certified"], ".3f"), _f(r["robust"], ".3f"), r["result"]]
            for r in rows]
    return table(header, body, ["---", "---"] + ["---:"] * 7 + ["---"])


def summary(claims: list[dict], controls: list[dict], nern: list[dict], detectable: dict, run: str) -> str:
    """The study's headline, in words no stronger than its verdicts: counts of each verdict with the rows that
    reached one, what "undecided" can and cannot mean here (``detectable``: {recipes: the true tau detected
    with probability 0.8, NaN where none}), the labelled control and Nern et al.'s check. ``run`` says when, on
    what and how long. README's summary of the study is this paragraph, written by the study."""
    counts = verdict_counts(claims)

    def rows(verdict: str) -> str:
        named = [f"{r['paper'].split(' (')[0]}, {r['domain']} family, against {r['truth']}: tau {r['tau']:+.2f}"
                 for r in claims if r["verdict"] == verdict]
        return f" ({'; '.join(named)})" if named else ""

    papers = len({r["paper"] for r in claims})
    text = [f"**Do the label-free scores predict accuracy? The pre-registered study** ({run}). Of its {len(claims)} "
            f"registered one-sided tests ({papers} label-free claims, each on 2 domains against home and transfer "
            f"accuracy), {counts['supported']} supported{rows('supported')}, {counts['contradicted']} "
            f"contradicted{rows('contradicted')}, {counts['absent']} absent{rows('absent')} and "
            f"{counts['undecided']} undecided."]
    if not counts["supported"] and not counts["contradicted"]:
        text.append("No claim is shown, and none is shown false.")
    power = ", ".join(f"{tau:.2f} over {n} recipes" if math.isfinite(tau) else f"no tau over {n} recipes"
                      for n, tau in sorted(detectable.items(), reverse=True))
    text.append(f"An undecided row is not an absent association: the design detects a true tau of {power} with "
                f"probability 0.8, without seed noise, and less with it.")
    if controls:
        c = verdict_counts(controls)
        text.append(f"The labelled control LogME, which reads the target labels, is supported in {c['supported']} "
                    f"of {len(controls)} settings.")
    if nern:
        res = {k: sum(r["result"] == k for r in nern) for k in ("holds", "fails", "vacuous", "not measured")}
        text.append(f"Nern et al.'s criterion with the label-free Delta_f holds in {res['holds']}, fails in "
                    f"{res['fails']} and is vacuous in {res['vacuous']} of its {len(nern)} settings"
                    + (f" ({res['not measured']} not measured)." if res["not measured"] else "."))
    return " ".join(text)


def guard_rows(runs_by_domain: dict) -> list[dict]:
    """What the page must show beside the verdicts, per domain: SynBench members whose score floored, was pinned
    at the grid's end or comes mostly from saturated scales (share > 0.5), and per radius of the robustness bound
    whether the raw-input reference certifies anything and how many members certify nothing (a radius where
    either holds cannot tell members apart)."""
    rows = []
    for domain, runs in runs_by_domain.items():
        syn = [r for r in runs if "synbench/score" in r.data.metrics]
        for guard, flagged in (("SynBench score floored (no scale reaches the threshold)", "synbench/floored"),
                               ("SynBench score pinned at the grid's end", "synbench/pinned"),
                               ("SynBench score mostly from saturated scales (share > 0.5)",
                                "synbench/saturated_share")):
            hit = [r for r in syn if r.data.metrics.get(flagged, 0.0) > (0.5 if "share" in flagged else 0.0)]
            rows.append({"domain": domain, "guard": guard, "members": len(syn), "flagged": len(hit),
                         "recipes": sorted({recipe(r.data.tags.get("synbench.model", "?")) for r in hit})})
        bound = [r for r in runs if any(k.startswith("robustness/reference/certified/eps_") for k in r.data.metrics)]
        radii = sorted({k.rsplit("eps_", 1)[1] for r in bound for k in r.data.metrics
                        if k.startswith("robustness/reference/certified/eps_")}, key=float)
        for radius in radii:
            reference = [r.data.metrics[f"robustness/reference/certified/eps_{radius}"] for r in bound]
            key = f"robustness/eps_0.00/criterion/eps_{radius}"
            hit = [r for r in bound if key in r.data.metrics and r.data.metrics[key] <= 0.0]
            rows.append({"domain": domain, "guard": f"bound at radius {radius}: members certifying nothing "
                                                    f"(raw reference certifies {max(reference):.3f})",
                         "members": sum(key in r.data.metrics for r in bound), "flagged": len(hit),
                         "recipes": sorted({recipe(r.data.tags.get("synbench.model", "?")) for r in hit})})
    return rows


def guard_table(rows: list[dict], shown: int = 6) -> str:
    body = [[r["domain"], r["guard"], r["flagged"], r["members"],
             ", ".join(r["recipes"][:shown]) + (f", +{len(r['recipes']) - shown} more" if len(r["recipes"]) > shown
                                                 else "")] for r in rows]
    return table(["domain", "guard", "members flagged", "of", "recipes flagged"], body,
                 ["---", "---", "---:", "---:", "---"])

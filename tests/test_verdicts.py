"""The validity study's pre-registration and verdicts (conf/validity/preregistration.yaml, synbench/preregistration.py,
verdicts.py, mdtable.py): the file loads and fixes what it must, a bad key is one line naming it, the sampler is a
deterministic function of the space and seed, each verdict follows its rule on data whose answer is known, a row's
tau, interval and p describe the same recipe means (checked against scipy and a direct bootstrap), Nern et al.'s
check can fail, and every table renders (docs/validity.md's included)."""

import copy
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from synbench import preregistration as design
from synbench.report import verdicts
from synbench.report.design import main as design_main
from synbench.report.mdtable import cells, escape, ragged, table, tables
from synbench.report.stats import benjamini_hochberg, tau_interval

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "conf" / "validity" / "preregistration.yaml"


@pytest.fixture(scope="module")
def pre():
    return design.load(FILE)


@pytest.fixture()
def raw():
    return yaml.safe_load(FILE.read_text())


# --- the pre-registration --------------------------------------------------------------------------------------------

def test_the_registration_fixes_the_issues_minimum(pre):
    kinds = [r["kind"] for r in pre["recipes"]]
    assert kinds.count("space") >= 30 and kinds.count("sweep") >= 20 and len(pre["design"]["seeds"]) >= 2
    assert {r["architecture"] for r in pre["recipes"] if r["kind"] == "space"} == {"mlp", "cnn", "resnet", "vit"}
    # one one-sided claim per paper; the control reads labels and is in no claim family
    assert [c["id"] for c in pre["claims"]] == ["synbench", "rmqm", "rankme", "alpha_req"]
    assert all(c["sign"] in (1, -1) and c["truths"] == ["home", "transfer"] for c in pre["claims"])
    inputs = {c["id"]: c["input"] for c in pre["claims"]}
    assert inputs == {"synbench": "mixture", "rmqm": "images", "rankme": "images", "alpha_req": "images"}
    assert {c["id"]: c["subset"] for c in pre["claims"]}["rankme"] == "sweep"
    [logme] = pre["controls"]
    assert logme["reads_labels"] is True and logme["input"] == "target_labels"
    st = pre["statistics"]
    assert st["supported"]["family_size"] == len(pre["family_ns"]) == 16 and st["alpha"] == 0.05
    assert st["equivalence"]["margin"] == 0.3 and st["equivalence"]["level"] == 0.9
    assert pre["checks"][0]["id"] == "nern"


def test_the_sampler_is_a_function_of_the_space_and_its_seed(pre, raw):
    again = design.validate(copy.deepcopy(raw))
    assert again["recipes"] == pre["recipes"]  # deterministic
    space = [r for r in pre["recipes"] if r["kind"] == "space"]
    archs = [r["architecture"] for r in space]
    assert max(archs.count(a) for a in set(archs)) - min(archs.count(a) for a in set(archs)) <= 1  # balanced
    lo, hi = raw["design"]["space"]["learning_rate"]["log_uniform"]
    for r in space:
        assert r["name"] == f"space{space.index(r):02d}_{r['architecture']}"
        assert lo <= r["learning_rate"] <= hi and 16 <= r["feature_width"] <= 256
        assert r["objective"] == "supervised" or r["label_noise"] == 0.0  # only a label reader has label noise
        assert r["objective"] != "simclr" or r["augmentation"] != "none"  # SimCLR needs views
    assert len({tuple(sorted((k, v) for k, v in r.items() if k != "name")) for r in space}) == len(space)
    sweep = [r for r in pre["recipes"] if r["kind"] == "sweep"]
    assert {(r["architecture"], r["feature_width"], r["objective"]) for r in sweep} == {("cnn", 64, "simclr")}
    raw["design"]["space"]["sampler_seed"] += 1
    assert design.validate(raw)["recipes"][:36] != pre["recipes"][:36]
    # the subsets hold what their names say
    names = [r["name"] for r in pre["recipes"]]
    assert design.in_subset(names, pre["subset_re"]["trained"]) == [r["name"] for r in space]
    assert design.in_subset(names, pre["subset_re"]["sweep"]) == [r["name"] for r in sweep]
    assert pre["family_ns"] == [36] * 8 + [24] * 8
    assert len(design.members(pre)) == len(names) * len(pre["design"]["seeds"])


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["statistics"].pop("alpha"), "statistics.alpha: missing"),
    (lambda d: d["statistics"].update(alpha=True), "statistics.alpha: True is not"),
    (lambda d: d["statistics"].update(correction="bonferroni"), "statistics.correction: 'bonferroni'"),
    (lambda d: d["statistics"]["supported"].update(family_size=15), "statistics.supported.family_size: 15"),
    (lambda d: d["statistics"]["exploratory"].update(correction="holm"), "statistics.exploratory.correction"),
    (lambda d: d["design"]["space"].update(recipes=10), "design.space.recipes: 10 is not an integer >= 30"),
    (lambda d: d["design"]["sweep"].update(configurations=12), "design.sweep.configurations: 12"),
    (lambda d: d["design"].update(seeds=[0]), "design.seeds: [0]"),
    (lambda d: d["design"]["space"].update(architecture=["mlp", "lstm"]), "design.space.architecture"),
    (lambda d: d["design"]["space"].update(feature_width=[8, 64]), "design.space.feature_width"),
    (lambda d: d["design"]["space"].update(objective={"supervised": 0}), "design.space.objective"),
    (lambda d: d["design"]["space"].update(learning_rate={"log_uniform": [0.1, 0.01]}), "design.space.learning_rate"),
    (lambda d: d["design"]["space"].update(dropout=[0.1]), "design.space.dropout: unknown key"),
    (lambda d: d["claims"][1].update(subset="sweeps"), "claims[1].subset: 'sweeps' is not one of the subsets"),
    (lambda d: d["claims"][1].update(score="rmqm/noise"), "claims[1].score: 'rmqm/noise' is not read on images"),
    (lambda d: d["claims"][0].update(score="spectrum/data/rankme"), "claims[0].score"),
    (lambda d: d["claims"][0].update(sign=2), "claims[0].sign: 2"),
    (lambda d: d["claims"][2].update(id="synbench"), "claims[2].id: 'synbench' appears twice"),
    (lambda d: d["claims"][0].update(reads_labels=True), "claims[0].reads_labels"),
    (lambda d: d["controls"][0].pop("reads_labels"), "controls[0].reads_labels: missing"),
    (lambda d: d["checks"][0].update(certified="downstream/criterion"), "checks[0].certified"),
    (lambda d: d["subsets"]["sweep"].update(include="simclr_sweep(\\d+"), "subsets.sweep.include"),
    (lambda d: d["subsets"]["sweep"].update(include="nothing"), "claims.rankme.subset: 'sweep' holds 0"),
    (lambda d: d.update(verdicts="by hand"), "verdicts: unknown key"),
])
def test_a_bad_key_is_one_line_naming_it(raw, tmp_path, edit, needle):
    edit(raw)
    path = tmp_path / "prereg.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(design.PreregistrationError) as err:
        design.load(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and needle in message, message


def test_the_design_command_lists_the_recipes(capsys):
    assert design_main([str(FILE)]) == 0
    out = capsys.readouterr().out
    assert "36 trained recipes" in out and "24 SimCLR sweep" in out and ragged(out) == []
    with pytest.raises(SystemExit, match="synbench.report.design: error: .*: cannot read"):
        design_main([str(FILE.with_name("missing.yaml"))])


# --- one statistic per row ------------------------------------------------------------------------------------------

def test_a_rows_tau_interval_and_p_describe_the_same_recipe_means():
    rng = np.random.default_rng(0)
    members = {f"r{k}_s{s}": None for k in range(12) for s in range(2)}
    x = {m: rng.normal() for m in members}
    y = {m: x[m] * 0.5 + rng.normal() for m in members}
    recipes = [f"r{k}" for k in range(12)]
    names, xm, ym, n = verdicts.recipe_means(x, y, recipes)
    assert names == recipes and n == 24
    assert xm[3] == pytest.approx((x["r3_s0"] + x["r3_s1"]) / 2)
    eq = {"resamples": 400, "seed": 7, "level": 0.9}
    row = verdicts.evaluate(xm, ym, +1, eq, 3)
    assert row["tau"] == pytest.approx(stats.kendalltau(xm, ym)[0], abs=1e-12)
    assert row["p_claimed"] == pytest.approx(stats.kendalltau(xm, ym, method="exact", alternative="greater").pvalue)
    assert row["p_opposite"] == pytest.approx(stats.kendalltau(xm, ym, method="exact", alternative="less").pvalue)
    # the interval: percentiles of scipy's tau-b over the same resamples of the recipe means
    draws = np.random.default_rng(7).integers(0, 12, (400, 12))
    boot = [stats.kendalltau(xm[d], ym[d])[0] for d in draws]
    assert (row["lo"], row["hi"]) == pytest.approx(tuple(np.nanpercentile(boot, [5, 95])), abs=1e-9)
    assert (row["lo"], row["hi"]) == pytest.approx(tau_interval(xm, ym, 400, 7, 0.9))
    negative = verdicts.evaluate(xm, ym, -1, eq, 3)  # a claimed negative sign swaps the directions
    assert negative["p_claimed"] == row["p_opposite"] and negative["p_opposite"] == row["p_claimed"]
    assert verdicts.evaluate(xm[:2], ym[:2], 1, eq, 3)["note"].startswith("not run: 2 recipes")


def family(n: int, taus: list[float], seed: int = 0) -> list[dict]:
    """Rows of one family whose recipe means have roughly the given taus (a Gaussian copula)."""
    rng = np.random.default_rng(seed)
    rows = []
    for tau in taus:
        rho = math.sin(math.pi * tau / 2)
        x = rng.normal(size=n)
        y = rho * x + math.sqrt(1 - rho * rho) * rng.normal(size=n)
        rows.append(verdicts.evaluate(x, y, +1, {"resamples": 1000, "seed": 0, "level": 0.9}, 3))
    return verdicts.decide(rows, 0.05, 0.3)


def test_each_verdict_follows_its_rule():
    rows = family(60, [0.8, -0.8, 0.0, 0.2])
    assert [r["verdict"] for r in rows[:2]] == ["supported", "contradicted"]
    for r in rows:  # Holm over the family's 4 rows, each direction on its own
        assert r["p_claimed_holm"] >= r["p_claimed"] and r["p_opposite_holm"] >= r["p_opposite"]
        assert (r["verdict"] == "supported") == (r["p_claimed_holm"] <= 0.05)
    # absent only when the 90% interval is inside (-0.3, 0.3): 400 recipes in a scrambled order (tau -0.03)
    x = np.arange(400.0)
    [null] = verdicts.decide([verdicts.evaluate(x, (x * 7919) % 400, +1, {"resamples": 1000, "seed": 0,
                                                                         "level": 0.9}, 3)], 0.05, 0.3)
    assert -0.3 < null["lo"] < null["hi"] < 0.3 and null["verdict"] == "absent"
    wide = verdicts.decide([verdicts.evaluate(x[:40], ((x * 7919) % 400)[:40], +1, {"resamples": 1000, "seed": 0,
                                                                                    "level": 0.9}, 3)], 0.05, 0.3)
    assert wide[0]["verdict"] == "undecided"  # the same scramble over 40 recipes: too wide to call absent
    # a row that did not run is undecided and still counts in its family (p = 1)
    rows = family(60, [0.8])
    rows.append(verdicts.not_run("not run: no score"))
    rows = verdicts.decide(rows, 0.05, 0.3)
    assert rows[0]["p_claimed_holm"] == pytest.approx(min(1, 2 * rows[0]["p_claimed"]))
    assert rows[1]["verdict"] == "undecided" and rows[1]["p_claimed_holm"] == 1.0


def test_benjamini_hochberg_equals_scipy():
    p = np.random.default_rng(3).uniform(size=40) ** 2
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p), abs=1e-12)
    got = benjamini_hochberg([0.01, math.nan, 0.02])
    assert math.isnan(got[1]) and list(got[[0, 2]]) == pytest.approx([0.02, 0.02])


# --- the study's tables on a fake run -------------------------------------------------------------------------------

def fake_values(pre, rng, strength: float) -> dict:
    """Per domain {report name: {member: value}} for every registered member: accuracy rises with a latent
    quality; synbench/score tracks it with ``strength``, the other scores are noise, LogME tracks it closely."""
    d0, d1 = pre["design"]["domains"]
    values = {}
    for domain, other in ((d0, d1), (d1, d0)):
        v = {}
        quality = {r["name"]: rng.normal() for r in pre["recipes"]}
        for m in design.members(pre):
            q = quality[verdicts.recipe(m)] + 0.1 * rng.normal()
            for name, val in ((f"{domain}: downstream/accuracy", 0.9 + 0.02 * q),
                              (f"{other}: downstream/accuracy", 0.7 + 0.02 * q + 0.01 * rng.normal()),
                              ("synbench/score [ones]", strength * q + rng.normal()),
                              ("rmqm/data/noise", rng.normal()), ("spectrum/data/rankme", rng.normal()),
                              ("spectrum/data/alpha_req", 1.5 + rng.normal()),
                              (f"logme/logme [{domain}]", q + 0.1 * rng.normal()),
                              (f"logme/logme [{other}]", q + 0.1 * rng.normal())):
                v.setdefault(name, {})[m] = val
        values[domain] = v
    return values


def test_the_claims_table_on_a_fake_run(pre):
    values = fake_values(pre, np.random.default_rng(4), strength=3.0)
    recipes = {d: [r["name"] for r in pre["recipes"]] for d in pre["design"]["domains"]}
    first = next(iter(values))
    flags = {first: {"synbench/floored [ones]": {m: 1.0 for m in list(values[first]["rmqm/data/noise"])[:200]}}}
    rows = verdicts.claim_rows(pre, "claims", values, flags, recipes)
    assert len(rows) == pre["statistics"]["supported"]["family_size"]
    by = {(r["id"], r["domain"], r["truth"].split(" (")[1]): r for r in rows}
    other = [d for d in values if d != first][0]
    assert by[("synbench", other, "home)")]["verdict"] == "supported"  # a strong true association is found
    guarded = by[("synbench", first, "home)")]
    assert guarded["verdict"] == "undecided" and guarded["note"].startswith("guarded")
    assert guarded["guards"].startswith("floored ") and "pinned 0 of" in guarded["guards"]
    assert by[("rankme", first, "home)")]["recipes"] == 24 and by[("rmqm", first, "home)")]["recipes"] == 36
    assert all(r["verdict"] != "supported" for r in rows if r["id"] != "synbench")  # noise scores never pass here
    # the claim's transform: -|alpha - 1| (its name escaped when drawn)
    alpha_row = by[("alpha_req", first, "home)")]
    names, xm, ym, _ = verdicts.recipe_means(
        {m: -abs(v - 1) for m, v in values[first]["spectrum/data/alpha_req"].items()},
        values[first][f"{first}: downstream/accuracy"], design.in_subset(recipes[first], pre["subset_re"]["sweep"]))
    assert alpha_row["tau"] == pytest.approx(stats.kendalltau(xm, ym)[0]) and alpha_row["score"].startswith("-|")
    text = verdicts.claims_table(rows, pre)
    assert ragged(text) == [] and "-\\|spectrum/data/alpha_req - 1\\|" in text
    # the control reads the truth's own dataset: LogME [transfer] against transfer accuracy
    controls = verdicts.claim_rows(pre, "controls", values, {}, recipes)
    assert {r["score"] for r in controls} == {f"logme/logme [{d}]" for d in values}
    assert all(r["score"].endswith(f"[{r['truth'].split(' ')[0]}]") for r in controls)
    assert all(r["verdict"] == "supported" for r in controls)
    # a report of one direction names SynBench's score without a bracket: the claim reads it only when every
    # run that computed it used the registered direction
    bare = {d: {("synbench/score" if k == "synbench/score [ones]" else k): v for k, v in values[d].items()}
            for d in values}
    ones = verdicts.claim_rows(pre, "claims", bare, flags, recipes, {d: {"ones"} for d in values})
    assert [(r["tau"], r["score"]) for r in ones if r["id"] == "synbench"] == [
        (r["tau"], r["score"]) for r in rows if r["id"] == "synbench"]
    for directions in ({"random"}, {"ones", "random"}, set()):
        other_dir = verdicts.claim_rows(pre, "claims", bare, flags, recipes, {d: directions for d in values})
        assert all(r["note"] == "not run: no synbench/score [ones] in this run"
                   for r in other_dir if r["id"] == "synbench")
    # a run without a domain: its tests are listed, not run, and keep the family's size
    rows = verdicts.claim_rows(pre, "claims", {first: values[first]}, {}, recipes)
    missing = [r for r in rows if r["domain"] == other]
    assert len(rows) == 16 and all(r["verdict"] == "undecided" and r["p_claimed_holm"] == 1 for r in missing)


def test_the_exploratory_table_is_labelled_and_adjusted_by_benjamini_hochberg(pre):
    values = fake_values(pre, np.random.default_rng(5), strength=1.0)
    domain = next(iter(values))
    recipes = [r["name"] for r in pre["recipes"]]
    rows = verdicts.exploratory_rows(values[domain], {"all": recipes}, 0.95, 200, 0, 3)
    assert rows and all(r["q"] >= r["p"] for r in rows)
    assert [r["q"] for r in rows] == pytest.approx(list(stats.false_discovery_control([r["p"] for r in rows])))
    r = next(r for r in rows if r["metric"] == "rmqm/data/noise")
    _, xm, ym, _ = verdicts.recipe_means(values[domain]["rmqm/data/noise"],
                                         values[domain][f"{domain}: downstream/accuracy"], recipes)
    if r["truth"].startswith(domain):
        assert r["p"] == pytest.approx(stats.kendalltau(xm, ym, method="exact").pvalue)
    text = verdicts.exploratory_table(rows, 0.95)
    assert "uncorrected" in text and "Benjamini-Hochberg" in text and ragged(text) == []


# --- Nern et al.'s check ------------------------------------------------------------------------------------------

def run(model: str, dataset: str, metrics: dict):
    return SimpleNamespace(data=SimpleNamespace(metrics=metrics, tags={"synbench.model": model,
                                                                      "synbench.dataset": dataset}))


def test_nerns_check_can_fail_and_says_when_it_cannot(pre):
    check = pre["checks"][0]
    c, r = (check[k].replace("{radius}", "{}") for k in ("certified", "robust"))
    assert "label_free" in c  # the registered check reads the criterion whose Delta_f ignores the attack
    runs = [run("a_s0", "mnist", {c.format(0.01): 0.5, r.format(0.01): 0.6, c.format(0.02): 0.0,
                                  r.format(0.02): 0.3, c.format(0.05): 0.2, r.format(0.05): 0.1}),
            run("b_s0", "mnist", {c.format(0.01): 0.4, r.format(0.01): 0.4, c.format(0.02): 0.0,
                                  r.format(0.02): 0.2, "downstream/accuracy": 0.9})]
    rows = verdicts.nern_rows(pre, {"mnist": runs})
    got = {row["radius"]: row for row in rows}
    assert got[0.01]["result"] == "holds" and got[0.01]["violations"] == 0 and got[0.01]["certifying"] == 2
    assert got[0.02]["result"] == "vacuous"  # no member certifies: the inequality cannot fail there
    assert got[0.05]["result"] == "fails" and got[0.05]["violations"] == 1
    assert got[0.05]["excess"] == pytest.approx(0.1)
    assert ragged(verdicts.nern_table(rows)) == []
    rows = verdicts.nern_rows(pre, {"mnist": [run("a_s0", "mnist", {"downstream/accuracy": 0.9})]})
    assert {row["result"] for row in rows} == {"not measured"}


def test_the_current_criterion_cannot_fail_by_construction():
    """Why the check needs the label-free estimate of Delta_f: metrics/downstream.py certifies with a Delta_f
    that includes the end-to-end attack's own feature shift, and a point certified at that Delta_f is never
    misclassified at the attacked features (a linear head moves its margins by at most ||w_y - w_j|| times the
    shift), so 'certified <= robust accuracy' holds whatever the encoder."""
    from synbench.metrics.downstream import multiclass_bound
    from synbench.probes.softmax import SoftmaxHead

    g = torch.Generator().manual_seed(0)
    head = SoftmaxHead(torch.randn(5, 16, generator=g, dtype=torch.float64),
                       torch.randn(5, generator=g, dtype=torch.float64), 0.0)
    f = torch.randn(4000, 16, generator=g, dtype=torch.float64)
    y = head.predict(f)
    f_adv = f + 0.3 * torch.randn(4000, 16, generator=g, dtype=torch.float64)
    reached = (f_adv - f).norm(dim=1)
    certified = multiclass_bound(f, y, head, reached)["certified"].bool()
    assert certified.any() and not (certified & (head.predict(f_adv) != y)).any()
    # with a smaller (label-free) estimate the same inequality can fail: some certified points are broken
    loose = multiclass_bound(f, y, head, 0.3 * reached)["certified"].bool()
    assert (loose & (head.predict(f_adv) != y)).any()


# --- tables that render -----------------------------------------------------------------------------------------

def test_cells_escape_pipes_and_rows_keep_the_headers_width():
    assert escape("-|a - 1|") == "-\\|a - 1\\|" and escape("a\\|b") == "a\\|b" and escape("x\ny") == "x y"
    text = table(["score", "tau"], [["-|alpha - 1|", "+0.10"], ["rmqm", "-0.20"]], ["---", "---:"])
    [t] = tables(text)
    assert [len(line) for line in t] == [2, 2, 2, 2] and t[2] == ["-\\|alpha - 1\\|", "+0.10"]
    broken = "| score | tau |\n|---|---:|\n| -|alpha - 1| | +0.10 |\n"
    assert ragged(broken) == ["score | tau || - | alpha - 1 |  | +0.10"]  # 4 cells under 2 headers
    assert cells("| `a` | b |") == ["`a`", "b"]
    with pytest.raises(ValueError, match="2 columns"):
        table(["a", "b"], [["1"]])


def test_every_table_on_the_validity_page_renders():
    text = (ROOT / "docs" / "validity.md").read_text()
    found = tables(text)
    assert len(found) >= 5
    assert ragged(text) == [], "\n".join(ragged(text))
    # nothing the page says was measured was left as a bare pipe inside a cell
    assert not re.search(r"\| -\|[a-z]", text)

"""The validity study's pre-registration (``conf/validity/preregistration.yaml``): its loader, which refuses a file
that does not fix what it must (one line naming the bad key), and the sampler that draws the study's recipes
from the registered space and seed, so that the recipes are a consequence of the file, never a later choice.

A config-level module (it reads a file of ``conf/``), so that the family (``synbench/encoders/family.py``) builds
its recipes from it without importing upwards; ``python -m synbench.report.design [FILE]`` lists them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import yaml

DEFAULT = Path(__file__).resolve().parents[1] / "conf" / "validity" / "preregistration.yaml"
ARCHITECTURES = ("mlp", "cnn", "resnet", "vit")
OBJECTIVES = ("supervised", "simclr", "autoencoder")
AUGMENTATIONS = ("none", "light", "strong")
WIDTHS = (16, 256)  # feature widths the space may hold
MIN_RECIPES, MIN_SWEEP, MIN_SEEDS = 30, 20, 2  # the least the design allows
TRANSFORMS = ("identity", "closeness_to_1")
TRUTHS = ("home", "transfer")
TOP = ("version", "registered", "design", "subsets", "untrained", "claims", "controls", "checks", "statistics")


class PreregistrationError(ValueError):
    """A pre-registration that does not fix what the study needs: the message names the key."""


def _fail(path: str, why: str):
    raise PreregistrationError(f"{path}: {why}")


def _get(d, key: str, path: str, kinds, check=None, why: str = ""):
    """d[key], of one of ``kinds`` and passing ``check``; else a one-line error naming ``path.key``."""
    where = f"{path}.{key}" if path else key
    if not isinstance(d, dict) or key not in d:
        _fail(where, "missing")
    value = d[key]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    bad_bool = isinstance(value, bool) and bool not in kinds  # YAML's true is no number
    if bad_bool or not isinstance(value, kinds) or (check is not None and not check(value)):
        _fail(where, f"{value!r} is not {why or ' or '.join(k.__name__ for k in kinds)}")
    return value


def _regex(d, key: str, path: str) -> re.Pattern:
    text = _get(d, key, path, str)
    try:
        return re.compile(text)
    except re.error as e:
        _fail(f"{path}.{key}", f"{text!r} is not a regular expression ({e})")


def _distribution(d, key: str, path: str, values=None, number: bool = False):
    """A parameter of the space: a non-empty list (uniform choice), a mapping {value: positive weight}, or
    {log_uniform: [lo, hi]} with 0 < lo < hi (numbers only), every value among ``values`` when given."""
    spec = _get(d, key, path, (list, dict), why="a list, a {value: weight} mapping or {log_uniform: [lo, hi]}")
    where = f"{path}.{key}"
    if isinstance(spec, dict) and "log_uniform" in spec:
        lo_hi = spec["log_uniform"]
        if not number or len(spec) != 1 or not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi) and 0 < lo_hi[0] < lo_hi[1]):
            _fail(where, f"{spec!r}: log_uniform needs [lo, hi] with 0 < lo < hi (numeric parameters only)")
        return spec
    options = list(spec) if isinstance(spec, list) else list(spec.keys())
    if not options or len(set(options)) != len(options):
        _fail(where, f"{spec!r}: needs at least one value, each once")
    if isinstance(spec, dict) and not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0
                                          for w in spec.values()):
        _fail(where, f"{spec!r}: every weight must be a positive number")
    bad = [v for v in options if (values is not None and v not in values) or
           (number and (isinstance(v, bool) or not isinstance(v, (int, float))))]
    if bad:
        _fail(where, f"{bad[0]!r} is not valid here" + (f" (valid: {', '.join(map(str, values))})" if values else
                                                         " (a number)"))
    return spec


def _draw(rng: np.random.Generator, spec):
    """One value of a parameter: see ``_distribution``; log-uniform values keep 3 significant digits."""
    if isinstance(spec, dict) and "log_uniform" in spec:
        lo, hi = spec["log_uniform"]
        return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.3g}")
    if isinstance(spec, dict):
        options, weights = list(spec), np.array(list(spec.values()), dtype=np.float64)
        return options[int(rng.choice(len(options), p=weights / weights.sum()))]
    return spec[int(rng.integers(len(spec)))]


def sample_space(space: dict) -> list[dict]:
    """The trained recipes of the space, drawn from ``space['sampler_seed']``: architectures balanced (each
    ``recipes / 4`` times, the remainder and the order seeded), every other parameter drawn per recipe in a
    fixed order; label noise only for supervised recipes (the others read no label), SimCLR's augmentation
    never ``none`` (its views need one); a recipe equal to an earlier one is drawn again. Names:
    ``space<k>_<architecture>``."""
    rng = np.random.default_rng(space["sampler_seed"])
    n, archs = space["recipes"], list(space["architecture"])
    order = (archs * (n // len(archs) + 1))[:n]
    order = [order[i] for i in rng.permutation(n)]
    recipes, seen = [], set()
    for k, arch in enumerate(order):
        while True:
            r = {"name": f"space{k:02d}_{arch}", "kind": "space", "architecture": arch}
            r["objective"] = _draw(rng, space["objective"])
            for key in ("feature_width", "steps", "learning_rate", "label_noise", "bottleneck"):
                r[key] = _draw(rng, space[key])
            aug = space["augmentation"]
            if r["objective"] == "simclr":
                aug = [a for a in (aug if isinstance(aug, list) else list(aug)) if a != "none"] or ["light"]
            r["augmentation"] = _draw(rng, aug)
            if r["objective"] != "supervised":
                r["label_noise"] = 0.0
            same = tuple((k2, v) for k2, v in r.items() if k2 != "name")
            if same not in seen:
                seen.add(same)
                recipes.append(r)
                break
    return recipes


def untrained_recipes(untrained: dict) -> list[dict]:
    """One seeded init per architecture (``random_<architecture>``): baselines, never trained."""
    return [{"name": f"random_{a}", "kind": "untrained", "architecture": a, "objective": "none",
             "feature_width": untrained["feature_width"], "steps": 0} for a in untrained["architectures"]]


def sample_sweep(sweep: dict) -> list[dict]:
    """The within-method sweep: SimCLR at one architecture and width, temperature, view strength, steps and
    projector width drawn per configuration from ``sweep['sampler_seed']`` (a repeat is drawn again).
    Names: ``simclr_sweep<k>``."""
    rng = np.random.default_rng(sweep["sampler_seed"])
    out, seen = [], set()
    while len(out) < sweep["configurations"]:
        r = {"name": f"simclr_sweep{len(out):02d}", "kind": "sweep", "architecture": sweep["architecture"],
             "objective": "simclr", "feature_width": sweep["feature_width"], "learning_rate": sweep["learning_rate"]}
        for key in ("temperature", "augmentation_strength", "steps", "projector_width"):
            r[key] = _draw(rng, sweep[key])
        same = tuple((k, v) for k, v in r.items() if k != "name")
        if same not in seen:
            seen.add(same)
            out.append(r)
    return out


def _check_design(d: dict) -> None:
    design = _get(d, "design", "", dict)
    _get(design, "domains", "design", list, lambda v: len(set(v)) == len(v) == 2 and
         all(isinstance(x, str) for x in v), "two distinct dataset names (each family's home, the other's transfer)")
    _get(design, "seeds", "design", list, lambda v: len(set(v)) == len(v) >= MIN_SEEDS and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v),
         f"at least {MIN_SEEDS} distinct non-negative integer seeds")
    space = _get(design, "space", "design", dict)
    p = "design.space"
    _get(space, "sampler_seed", p, int, lambda v: v >= 0, "a non-negative integer")
    _get(space, "recipes", p, int, lambda v: v >= MIN_RECIPES, f"an integer >= {MIN_RECIPES}")
    _get(space, "architecture", p, list, lambda v: v and len(set(v)) == len(v) and set(v) <= set(ARCHITECTURES),
         f"a list of distinct architectures among {', '.join(ARCHITECTURES)}")
    widths = _distribution(space, "feature_width", p, number=True)
    if any(not (isinstance(w, int) and WIDTHS[0] <= w <= WIDTHS[1]) for w in (widths if isinstance(widths, list)
                                                                                else list(widths))):
        _fail(f"{p}.feature_width", f"{widths!r}: integer widths from {WIDTHS[0]} to {WIDTHS[1]}")
    _distribution(space, "objective", p, OBJECTIVES)
    _distribution(space, "steps", p, number=True)
    _distribution(space, "learning_rate", p, number=True)
    noise = _distribution(space, "label_noise", p, number=True)
    if not isinstance(noise, dict) or "log_uniform" in noise:
        noise = {v: 1 for v in noise} if isinstance(noise, list) else noise
    if any(not 0 <= v < 1 for v in noise if not isinstance(v, str)):
        _fail(f"{p}.label_noise", "label noise is a fraction in [0, 1)")
    _distribution(space, "bottleneck", p, number=True)
    _distribution(space, "augmentation", p, AUGMENTATIONS)
    extra = set(space) - {"sampler_seed", "recipes", "architecture", "feature_width", "objective", "steps",
                          "learning_rate", "label_noise", "bottleneck", "augmentation"}
    if extra:
        _fail(f"{p}.{sorted(extra)[0]}", "unknown key (the space's parameters are fixed by the sampler)")
    un = _get(design, "untrained", "design", dict)
    _get(un, "architectures", "design.untrained", list, lambda v: v and set(v) <= set(ARCHITECTURES),
         f"architectures among {', '.join(ARCHITECTURES)}")
    _get(un, "feature_width", "design.untrained", int, lambda v: WIDTHS[0] <= v <= WIDTHS[1],
         f"an integer width from {WIDTHS[0]} to {WIDTHS[1]}")
    sw = _get(design, "sweep", "design", dict)
    p = "design.sweep"
    _get(sw, "sampler_seed", p, int, lambda v: v >= 0, "a non-negative integer")
    _get(sw, "configurations", p, int, lambda v: v >= MIN_SWEEP, f"an integer >= {MIN_SWEEP}")
    _get(sw, "architecture", p, str, lambda v: v in ARCHITECTURES, f"one of {', '.join(ARCHITECTURES)}")
    _get(sw, "feature_width", p, int, lambda v: WIDTHS[0] <= v <= WIDTHS[1], f"a width from {WIDTHS[0]} to {WIDTHS[1]}")
    _get(sw, "learning_rate", p, (int, float), lambda v: v > 0, "a positive number")
    for key in ("temperature", "augmentation_strength", "steps", "projector_width"):
        _distribution(sw, key, p, number=True)


def _check_claims(d: dict, key: str, subsets: dict) -> list[dict]:
    """Claims (``claims``) or positive controls (``controls``): each a one-sided claim on one score."""
    items = _get(d, key, "", list, lambda v: len(v) > 0, "a non-empty list")
    ids = set()
    for i, c in enumerate(items):
        p = f"{key}[{i}]"
        cid = _get(c, "id", p, str, lambda v: re.fullmatch(r"[a-z][a-z0-9_]*", v), "an identifier ([a-z0-9_])")
        if cid in ids:
            _fail(f"{p}.id", f"{cid!r} appears twice")
        ids.add(cid)
        for k in ("paper", "where", "score"):
            _get(c, k, p, str, lambda v: v.strip() != "", "a non-empty string")
        inputs = ("target_labels",) if key == "controls" else ("mixture", "images")
        inp = _get(c, "input", p, str, lambda v: v in inputs, f"one of {', '.join(inputs)}")
        score = c["score"]
        if inp == "images" and "/data/" not in score:
            _fail(f"{p}.score", f"{score!r} is not read on images (an images score is named <metric>/data/...)")
        if inp == "mixture" and ("/data/" in score or score.startswith("logme")):
            _fail(f"{p}.score", f"{score!r} reads the dataset, not the mixture")
        if key == "controls":
            _get(c, "reads_labels", p, bool, lambda v: v is True, "true: a positive control reads the labels")
        elif c.get("reads_labels"):
            _fail(f"{p}.reads_labels", "a claim under test is label-free; a labelled score is a control")
        _get(c, "transform", p, str, lambda v: v in TRANSFORMS, f"one of {', '.join(TRANSFORMS)}")
        _get(c, "subset", p, str, lambda v: v in subsets, f"one of the subsets ({', '.join(subsets)})")
        _get(c, "truths", p, list, lambda v: v and len(set(v)) == len(v) and set(v) <= set(TRUTHS),
             f"distinct truths among {', '.join(TRUTHS)}")
        _get(c, "sign", p, int, lambda v: v in (1, -1), "+1 or -1 (the claimed direction)")
        _get(c, "guards", p, list, lambda v: all(isinstance(g, str) for g in v), "a list of flag metrics")
    return items


def _check_statistics(d: dict, n_claims: int, n_controls: int) -> None:
    st = _get(d, "statistics", "", dict)
    p = "statistics"
    _get(st, "statistic", p, str, lambda v: v == "recipe_mean_kendall_tau",
         "recipe_mean_kendall_tau (the only statistic the study computes)")
    _get(st, "test", p, str, lambda v: v == "exact_one_sided", "exact_one_sided (the only test the study runs)")
    _get(st, "alpha", p, (int, float), lambda v: 0 < v < 1, "a level in (0, 1)")
    _get(st, "correction", p, str, lambda v: v == "holm", "holm")
    for name, family, size, alt in (("supported", "claims", n_claims, "claimed"),
                                    ("contradicted", "claims", n_claims, "opposite"),
                                    ("controls", "controls", n_controls, None)):
        f = _get(st, name, p, dict)
        _get(f, "family", f"{p}.{name}", str, lambda v: v == family, family)
        _get(f, "family_size", f"{p}.{name}", int, lambda v: v == size,
             f"{size}: the {family} x domains x truths this file registers")
        if alt:
            _get(f, "alternative", f"{p}.{name}", str, lambda v: v == alt, alt)
    eq = _get(st, "equivalence", p, dict)
    _get(eq, "margin", f"{p}.equivalence", (int, float), lambda v: 0 < v < 1, "a margin in (0, 1)")
    _get(eq, "level", f"{p}.equivalence", (int, float), lambda v: 0 < v < 1, "a level in (0, 1)")
    _get(eq, "resamples", f"{p}.equivalence", int, lambda v: v >= 100, "an integer >= 100")
    _get(eq, "seed", f"{p}.equivalence", int, lambda v: v >= 0, "a non-negative integer")
    _get(st, "min_recipes", p, int, lambda v: v >= 2, "an integer >= 2")
    _get(st, "guard_share", p, (int, float), lambda v: 0 < v <= 1, "a share in (0, 1]")
    ex = _get(st, "exploratory", p, dict)
    _get(ex, "correction", f"{p}.exploratory", str, lambda v: v == "benjamini_hochberg", "benjamini_hochberg")


def validate(d) -> dict:
    """The pre-registration ``d`` (parsed YAML) checked, with the drawn recipes (``recipes``) and per
    confirmatory test the number of recipes its subset holds (``family_ns``) added; a PreregistrationError
    naming the first bad key otherwise."""
    if not isinstance(d, dict):
        _fail("(top)", "not a mapping")
    unknown = sorted(set(d) - set(TOP))
    if unknown:
        _fail(unknown[0], f"unknown key (valid: {', '.join(TOP)})")
    _get(d, "version", "", int, lambda v: v == 1, "1")
    _check_design(d)
    raw = _get(d, "subsets", "", dict, lambda v: len(v) > 0, "a non-empty mapping")
    subsets = {}
    for name, s in raw.items():
        inc = _regex(s, "include", f"subsets.{name}")
        exc = _regex(s, "exclude", f"subsets.{name}") if isinstance(s, dict) and "exclude" in s else None
        subsets[name] = (inc, exc)
    _regex(d, "untrained", "")
    claims = _check_claims(d, "claims", subsets)
    controls = _check_claims(d, "controls", subsets)
    checks = _get(d, "checks", "", list, lambda v: len(v) > 0, "a non-empty list")
    for i, c in enumerate(checks):
        p = f"checks[{i}]"
        _get(c, "id", p, str, lambda v: v == "nern", "nern (the one check the study runs)")
        _get(c, "paper", p, str)
        for k in ("certified", "robust"):
            _get(c, k, p, str, lambda v: "{radius}" in v, "a metric name with {radius}")
        _get(c, "radii", p, list, lambda v: v and all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                                       and r > 0 for r in v), "positive radii")
        _get(c, "tolerance", p, (int, float), lambda v: v >= 0, "a non-negative number")
    design = d["design"]
    n_truth = len(design["domains"])
    _check_statistics(d, sum(len(c["truths"]) for c in claims) * n_truth,
                      sum(len(c["truths"]) for c in controls) * n_truth)
    out = dict(d)
    out["recipes"] = (sample_space(design["space"]) + untrained_recipes(design["untrained"])
                      + sample_sweep(design["sweep"]))
    names = [r["name"] for r in out["recipes"]]
    untrained = re.compile(d["untrained"])
    if not all(untrained.fullmatch(r["name"]) for r in out["recipes"] if r["kind"] == "untrained") or any(
            untrained.fullmatch(r["name"]) for r in out["recipes"] if r["kind"] != "untrained"):
        _fail("untrained", f"{d['untrained']!r} must match exactly the untrained inits' names (random_<arch>)")
    out["subset_re"] = subsets
    sizes = {name: len(in_subset(names, subsets[name])) for name in subsets}
    for c in claims + controls:
        if sizes[c["subset"]] < d["statistics"]["min_recipes"]:
            _fail(f"claims.{c['id']}.subset", f"{c['subset']!r} holds {sizes[c['subset']]} of the drawn recipes")
    out["family_ns"] = [sizes[c["subset"]] for c in claims for _ in c["truths"] for _ in design["domains"]]
    return out


def in_subset(recipes, subset: tuple) -> list[str]:
    """The recipe names of ``recipes`` in a subset (include, exclude patterns), in their order."""
    inc, exc = subset
    return [r for r in recipes if inc.fullmatch(r) and not (exc is not None and exc.fullmatch(r))]


def load(path: Path = DEFAULT) -> dict:
    """The pre-registration at ``path``, validated (``validate``); a PreregistrationError names the file and
    the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
        return validate(raw)
    except OSError as e:
        raise PreregistrationError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise PreregistrationError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
    except PreregistrationError as e:
        raise PreregistrationError(f"{path}: {e}") from None


def members(pre: dict) -> list[str]:
    """Every member of one domain's family: ``<recipe>_s<seed>`` for every drawn recipe and registered seed."""
    return [f"{r['name']}_s{s}" for r in pre["recipes"] for s in pre["design"]["seeds"]]

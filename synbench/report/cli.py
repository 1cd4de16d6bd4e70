"""``python -m synbench.report``: its options, checked before anything is read or written (a bad option is one
line, exit status 1), and the order of the work: runs, tables, correlations, plots, artifacts."""

from __future__ import annotations

import argparse
import re
import sys
from fnmatch import fnmatchcase
from pathlib import Path

from synbench.report.downstream_csv import read_downstream, unmatched
from synbench.report.messages import ERROR, NOTE
from synbench.report.names import CSV_TRUTH
from synbench.report.pairs import correlate
from synbench.report.plots import scatter_plots, summary_plots
from synbench.report.runs import connect, probe_notes, summarise, sweep_runs, vacuous_notes
from synbench.report.tables import CORR_COLUMNS, REPORT_COLUMNS, markdown, write_csv

DESCRIPTION = ("A sweep as tables people can read: ``python -m synbench.report --parent RUN_ID`` "
               "(or ``--experiment NAME``).")


def pattern(option: str, text: str | None, capture: bool) -> re.Pattern | None:
    """A model-name regex option compiled, or one line saying why it cannot be."""
    if text is None:
        return None
    try:
        compiled = re.compile(text)
    except re.error as e:
        raise SystemExit(f"{ERROR}{option} {text!r} is not a regular expression ({e})") from None
    if capture and compiled.groups < 1:
        raise SystemExit(f"{ERROR}{option} {text!r} has no capture group: a model's group is the first (...) of "
                         r"the pattern fullmatching its name, e.g. --group '(.+)_s\d+'")
    return compiled


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m synbench.report", description=DESCRIPTION,
                                epilog="Truth columns: the runs' downstream/accuracy and downstream/robust_accuracy/"
                                       "eps_* per synbench.dataset tag, plus 'csv: accuracy' from --downstream.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--parent", help="the sweep's parent run id (printed by the sweep, tag synbench.kind=sweep)")
    src.add_argument("--experiment", help="every FINISHED job run of this MLflow experiment")
    p.add_argument("--tracking-uri", default=f"sqlite:///{Path('outputs/mlflow/mlflow.db').resolve()}",
                   help="an existing MLflow store (never created): sqlite:///path/to/mlflow.db or http://host:port")
    p.add_argument("--downstream", type=Path,
                   help="CSV with columns model,accuracy: your own downstream numbers, one more truth column")
    p.add_argument("--out", type=Path, default=Path("outputs/reports"), help="files go to OUT/<parent or experiment>/")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the correlations (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the random permutations")
    p.add_argument("--group", metavar="REGEX",
                   help=r"a model's group (its recipe) is the first capture group of REGEX fullmatching its name, "
                        r"e.g. '(.+)_s\d+' for <recipe>_s<seed>; the bootstrap resamples groups and the p-value "
                        "permutes them; a model that does not match is its own group (default: every model)")
    p.add_argument("--untrained", metavar="REGEX",
                   help="models whose name fullmatches REGEX (e.g. 'random_.*') are untrained baselines: every "
                        "correlation is also computed without them (subset 'trained')")
    p.add_argument("--scatter", metavar="GLOB", default="*",
                   help="draw the scatter of the pairs whose truth column matches GLOB (default: every pair; e.g. "
                        "'*: downstream/accuracy' for accuracy only: a plot per pair is most of a large report's time)")
    args = p.parse_args(argv)
    if args.bootstrap < 1:
        raise SystemExit(f"{ERROR}--bootstrap {args.bootstrap}: need at least 1 resample (default 2000)")
    args.group_re = pattern("--group", args.group, capture=True)
    args.untrained_re = pattern("--untrained", args.untrained, capture=False)
    return args


def pattern_notes(args, models: set[str]) -> list[str]:
    """A pattern that matches no model is most likely a typo: said, since the report still runs without it."""
    notes = []
    if args.group_re is not None and not any(args.group_re.fullmatch(m) for m in models):
        notes.append(f"--group {args.group!r} matches none of the runs' models ({', '.join(sorted(models))}): "
                     "each model is its own group")
    if args.untrained_re is not None:
        if not any(args.untrained_re.fullmatch(m) for m in models):
            notes.append(f"--untrained {args.untrained!r} matches none of the runs' models "
                         f"({', '.join(sorted(models))}): the 'trained' rows repeat the 'all' rows")
    return notes


def main(argv=None) -> int:
    args = parse(argv)
    downstream, lines = read_downstream(args.downstream) if args.downstream is not None else (None, {})
    client = connect(args.tracking_uri)
    runs = sweep_runs(client, args.parent, args.experiment)
    if not runs:
        raise SystemExit(f"{ERROR}no FINISHED job runs in {args.parent or args.experiment!r}")
    rows, means, truth = summarise(runs)
    models = {r.data.tags.get("synbench.model", "?") for r in runs}
    notes = unmatched(args.downstream, lines, models)
    notes += vacuous_notes(runs)
    notes += probe_notes(runs)
    notes += pattern_notes(args, models)
    if downstream is not None:
        truth[CSV_TRUTH] = downstream
    corr, pair_notes = correlate(means, truth, args.bootstrap, args.seed, args.group_re, args.untrained_re)
    for c in corr:
        if not fnmatchcase(c["truth"], args.scatter):
            c["scatter"] = ""  # not drawn: --scatter
    notes += pair_notes
    for note in notes:
        print(f"{NOTE}{note}", file=sys.stderr)
    # an experiment's name is anyone's text: as a folder name it keeps its letters and never climbs out of --out
    out = args.out / (args.parent or re.sub(r"[^\w.-]+", "_", args.experiment).lstrip("."))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"{ERROR}--out {str(args.out)!r} cannot be written ({err.strerror}: {err.filename}); "
                         f"pass --out a writable folder") from None
    files = [write_csv(out / "report.csv", rows, REPORT_COLUMNS)]
    if truth:
        files.append(write_csv(out / "correlations.csv", corr, CORR_COLUMNS))
    (out / "report.md").write_text(markdown(rows, corr, notes, args.parent or args.experiment, bool(truth),
                                            args.group, args.untrained))
    files.append(out / "report.md")
    files += summary_plots(client, runs, rows, out)
    pairs = scatter_plots([c for c in corr if c["scatter"]], means, truth, out, args.untrained_re)
    if args.parent:
        for f in files:
            client.log_artifact(args.parent, str(f), "report")
        if pairs:
            client.log_artifacts(args.parent, str(out / "scatter"), "report/scatter")
    print(f"report of {len(runs)} runs ({len({(c['metric'], c['truth']) for c in corr})} correlated pairs): "
          f"{out / 'report.md'}")
    return 0

"""Does every timm architecture family run through the real SynBench job? One table answers it.

For one representative of every family (timm module) -- its smallest model by parameter count, tiny
``test_*`` models excluded -- run the job as a user would (``app.run``: build with random weights, embed,
probe, score, log to MLflow) at the model's own input size with a few scales and a small n, and record
model, family, input size, parameters, feature width, seconds and outcome:

- ``ok``: a finite SynBench score;
- ``refused``: a one-line error a user can act on (the job's own bad-input errors);
- ``crash``: anything else (its exception type): a bug to fix, the goal is none.

Resumable: rows already in the CSV are kept and their families skipped (``--redo`` runs them again).
The table is rewritten atomically after every family. Offline: random init only, nothing from the hub.

    python scripts/timm_conformance.py                       # every family; the table beside this script
    python scripts/timm_conformance.py --families vgg,levit  # some families again (with --redo)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from timm.models import get_pretrained_cfg  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from synbench import app, runner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["family", "model", "input_size", "params_m", "feature_width", "seconds", "outcome", "message"]
JOB = ["model=timm", "model.pretrained=false", "progress=false", "cache.enabled=false", "epsilon.grid=[0.0,0.5]",
       "mixture.direction=random",
       "metrics=[synbench]", "mixture.chunk_size=8", "embed.batch_size=8", "resume=false"]


def representatives(families: list[str]) -> dict[str, tuple[str, int]]:
    """family -> (its smallest non-test model, parameter count); counted on the meta device (no memory)."""
    out = {}
    for family in tqdm(families, desc="pick representatives", unit="family", disable=None):
        best = None
        for name in timm.list_models(module=family):
            if name.startswith("test_"):
                continue
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    params = sum(p.numel() for p in timm.create_model(name, num_classes=0).parameters())
            except Exception:  # a model that cannot even be built is not a good representative
                continue
            if best is None or params < best[1]:
                best = (name, params)
        if best is not None:
            out[family] = best
    return out


def run_family(family: str, model: str, params: int, n: int, scales: str, outputs: Path) -> dict:
    row = {"family": family, "model": model, "params_m": f"{params / 1e6:.2f}",
           "input_size": "x".join(map(str, get_pretrained_cfg(model).input_size))}
    overrides = [*JOB, f"model.name={model}", f"mixture.n_train={n}", f"mixture.n_test={n}",
                 f"mixture.scales=[{scales}]", f"paths.outputs={outputs}", f"tracking.run_name=conformance {model}"]
    with initialize_config_dir(config_dir=runner.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            summary = app.run(cfg, outputs / "jobs" / family)
    except runner.USER_ERRORS as err:
        row.update(outcome="refused", message=str(err))
    except Exception as err:
        row.update(outcome=f"crash: {type(err).__name__}", message=str(err).strip().splitlines()[0][:300])
    else:
        score = summary["scalars"]["synbench/score"]
        row.update(feature_width=summary["num_features"], input_size="x".join(map(str, summary["encoder"]["input_shape"])),
                   outcome="ok" if math.isfinite(score) else "crash: non-finite score", message=f"score={score:.4f}")
    row["seconds"] = f"{time.perf_counter() - t0:.1f}"
    return row


def write_table(path: Path, rows: dict[str, dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for family in sorted(rows):
            writer.writerow({k: rows[family].get(k, "") for k in COLUMNS})
    os.replace(tmp, path)


def summary_line(rows: dict[str, dict]) -> str:
    outcomes = [r["outcome"] for r in rows.values()]
    ok, refused = outcomes.count("ok"), outcomes.count("refused")
    return (f"{ok} of {len(outcomes)} families run end to end; {refused} refused with a clear reason; "
            f"{len(outcomes) - ok - refused} crashed")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, default=Path(__file__).with_suffix(".csv"))
    p.add_argument("--families", help="comma-separated timm modules (default: all of timm.list_modules())")
    p.add_argument("--redo", action="store_true", help="run families already in the table again")
    p.add_argument("--n", type=int, default=8, help="samples per split and scale")
    p.add_argument("--scales", default="0.5,1.5,2.5", help="mixture scales (must pass Phi^-1(0.99) = 2.33)")
    p.add_argument("--outputs", type=Path, default=ROOT / "outputs" / "conformance",
                   help="job folders and the MLflow store of the runs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the jobs' warnings (random weights) would bury the bar

    rows: dict[str, dict] = {}
    if args.table.is_file():
        with args.table.open() as f:
            rows = {r["family"]: r for r in csv.DictReader(f)}
    families = args.families.split(",") if args.families else timm.list_modules()
    unknown = sorted(set(families) - set(timm.list_modules()))
    if unknown:
        p.error(f"--families {','.join(unknown)}: not timm modules; valid: {', '.join(timm.list_modules())}")
    todo = [f for f in families if args.redo or f not in rows]
    print(f"{len(families) - len(todo)} families already in {args.table}; {len(todo)} to run", file=sys.stderr)
    picks = representatives(todo)
    bar = tqdm(sorted(picks), desc="conformance", unit="family", disable=None)
    for family in bar:
        model, params = picks[family]
        bar.set_postfix(model=model)
        rows[family] = run_family(family, model, params, args.n, args.scales, args.outputs)
        write_table(args.table, rows)
        if rows[family]["outcome"] != "ok":
            tqdm.write(f"{family} ({model}): {rows[family]['outcome']}: {rows[family]['message']}")
    print(summary_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

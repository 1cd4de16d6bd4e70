"""``python -m synbench.report.design [FILE]``: validate the validity study's pre-registration
(``conf/validity/preregistration.yaml``, loaded by ``synbench/preregistration.py``) and list the recipes its
sampler draws: the members ``synbench/encoders/family.py`` builds and ``scripts/train_family.py`` trains."""

from __future__ import annotations

import argparse
from pathlib import Path

from synbench.preregistration import DEFAULT, PreregistrationError, load, members
from synbench.report.mdtable import table

COLUMNS = ("name", "architecture", "objective", "feature_width", "steps", "learning_rate", "label_noise",
           "bottleneck", "augmentation", "temperature", "augmentation_strength", "projector_width")


def recipes_table(pre: dict) -> str:
    rows = [[r.get(c, "") if r.get(c) is not None else "" for c in COLUMNS] for r in pre["recipes"]]
    return table(COLUMNS, rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synbench.report.design", description=__doc__.split("\n\n")[0])
    p.add_argument("preregistration", nargs="?", type=Path, default=DEFAULT)
    args = p.parse_args(argv)
    try:
        pre = load(args.preregistration)
    except PreregistrationError as e:
        raise SystemExit(f"synbench.report.design: error: {e}") from None
    kinds = {k: sum(r["kind"] == k for r in pre["recipes"]) for k in ("space", "untrained", "sweep")}
    seeds = len(pre["design"]["seeds"])
    print(recipes_table(pre))
    print(f"\n{kinds['space']} trained recipes from the space, {kinds['untrained']} untrained inits, "
          f"{kinds['sweep']} SimCLR sweep configurations; x {seeds} seeds = {len(members(pre))} members per domain; "
          f"confirmatory family: {len(pre['family_ns'])} tests over {sorted(set(pre['family_ns']))} recipes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

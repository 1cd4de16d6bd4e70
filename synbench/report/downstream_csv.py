"""The user's own truth (``--downstream model,accuracy``). A bad row is refused by its line, never skipped, and a
model no run has is a note naming what it could have meant: a silently dropped model changes every correlation."""

from __future__ import annotations

import csv
import difflib
import math
from pathlib import Path

from synbench.report.messages import ERROR


def read_downstream(path: Path) -> tuple[dict[str, float], dict[str, int]]:
    """The user's accuracies and the line of each model."""
    where = f"--downstream {str(path)!r}"
    if not path.is_file():
        raise SystemExit(f"{ERROR}{where}: no such file; pass a CSV with columns model,accuracy")
    out, lines = {}, {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("model", "accuracy") if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{ERROR}{where} has no column {' or '.join(missing)} (its header: "
                             f"{','.join(reader.fieldnames or [])!r}); need columns model,accuracy")
        for row in reader:
            model, text = (row["model"] or "").strip(), (row["accuracy"] or "").strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not model:
                raise SystemExit(f"{ERROR}{where} line {reader.line_num}: empty model name")
            if not math.isfinite(value):
                raise SystemExit(f"{ERROR}{where} line {reader.line_num} (model {model!r}): accuracy {text!r} "
                                 "is not a finite number, e.g. 0.71")
            if model in out:
                raise SystemExit(f"{ERROR}{where} line {reader.line_num}: model {model!r} again (first on line "
                                 f"{lines[model]}); give each model one accuracy")
            out[model], lines[model] = value, reader.line_num
    return out, lines


def unmatched(path: Path, lines: dict[str, int], models: set[str]) -> list[str]:
    """A note per CSV row whose model no run has (a typo lowers the count behind every correlation), with the
    models of the runs it could have meant."""
    notes = []
    for model, line in sorted(lines.items(), key=lambda item: item[1]):
        if model not in models:
            close = difflib.get_close_matches(model, sorted(models), n=3, cutoff=0.5)
            notes.append(f"--downstream {str(path)!r} line {line}: model {model!r} matches no run, so it is left out"
                         + (f"; did you mean {' or '.join(map(repr, close))}?" if close else
                            f" (the runs' models: {', '.join(sorted(models)) or 'none'})"))
    return notes

"""Markdown tables that render: every cell escapes ``|`` (a score named ``-|alpha - 1|`` once split its row into
extra cells), and a parser that reads tables back the way a renderer splits them, so a test can check that each
row has the header's number of cells."""

from __future__ import annotations

import re


def escape(cell) -> str:
    """A cell's text with ``|`` escaped and line breaks flattened (either would end or split the cell)."""
    return re.sub(r"(?<!\\)\|", r"\\|", str(cell)).replace("\n", " ")


def row(cells) -> str:
    return "| " + " | ".join(escape(c) for c in cells) + " |"


def table(header, rows, align=None) -> str:
    """A markdown table: ``align`` per column (``---``, ``---:``, ``:---:``; default ``---``)."""
    header = list(header)
    align = list(align) if align is not None else ["---"] * len(header)
    if len(align) != len(header) or any(len(r) != len(header) for r in rows):
        raise ValueError(f"a table of {len(header)} columns got rows of {sorted({len(r) for r in rows})} cells "
                         f"and {len(align)} alignments")
    return "\n".join([row(header), "|" + "|".join(align) + "|", *(row(r) for r in rows)])


def cells(line: str) -> list[str]:
    """The cells of one table line as a renderer splits them: on every ``|`` not escaped by a backslash (inside
    code spans too, as GitHub does), the outer pipes dropped."""
    text = line.strip()
    text = text[1:] if text.startswith("|") else text
    text = text[:-1] if text.endswith("|") and not text.endswith("\\|") else text
    return [c.strip() for c in re.split(r"(?<!\\)\|", text)]


def tables(text: str) -> list[list[list[str]]]:
    """Every table of a markdown text (outside fenced code): a table is a line of cells followed by a delimiter
    line (``|---|---:|``) and the table lines after it; each table as its lines' cells, header first, the
    delimiter line kept (so a test can count its cells too)."""
    out, lines, fenced, i = [], text.splitlines(), False, 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            fenced = not fenced
        elif (not fenced and i + 1 < len(lines) and lines[i].lstrip().startswith("|")
              and re.fullmatch(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*", lines[i + 1])):
            block = [lines[i], lines[i + 1]]
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            out.append([cells(line) for line in block])
            continue
        i += 1
    return out


def ragged(text: str) -> list[str]:
    """Each table line whose cell count differs from its header's: '<header> | <line>' (empty: all render)."""
    bad = []
    for t in tables(text):
        width = len(t[0])
        bad += [f"{' | '.join(t[0])} || {' | '.join(line)}" for line in t[1:] if len(line) != width]
    return bad

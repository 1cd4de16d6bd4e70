"""Progress bars on every long loop (embedding, attacks, bootstraps): tqdm, drawn only when stderr is a
terminal (tqdm's ``disable=None``), so CI logs and Slurm output files stay clean; ``progress=false`` silences
them everywhere."""

from __future__ import annotations

from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def bar(items: Iterable[T], desc: str, unit: str, enabled: bool = True, total: int | None = None,
        leave: bool = False) -> Iterable[T]:
    return tqdm(items, desc=desc, unit=unit, total=total, leave=leave, disable=None if enabled else True)

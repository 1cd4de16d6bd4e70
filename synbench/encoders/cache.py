"""Content-addressed embedding store: the key is everything that determines the features.

Files are safetensors named by the sha256 of the canonical JSON key, written to a temp file then
``os.replace``d, so a crash never leaves a partial entry that a later job would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from synbench.files import replace_atomically

log = logging.getLogger(__name__)


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


class EmbeddingCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: dict) -> Path:
        digest = key_digest(key)
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get(self, key: dict, device: torch.device) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return load_file(path, device=str(device))
        except Exception as err:  # an unreadable entry is a miss, never a crash
            log.warning("ignoring unreadable cache entry %s (%s)", path, err)
            return None

    def put(self, key: dict, tensors: dict[str, torch.Tensor]) -> Path:
        return replace_atomically(self.path(key), lambda tmp: save_file(
            {k: v.contiguous() for k, v in tensors.items()}, tmp,
            metadata={"key": json.dumps(key, sort_keys=True, default=str)}))

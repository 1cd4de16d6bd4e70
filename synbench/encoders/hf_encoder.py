"""Hugging Face ``transformers`` vision backbones as ``Encoder``s (optional extra: ``pip install 'synbench[hf]'``).

``AutoModel`` from a local directory (``save_pretrained`` layout: config.json, weights, and optionally
preprocessor_config.json for the normalisation), or a hub id where there is network. The representation is
the pooler output, the CLS token, or the mean over tokens (``pooling``); the input size and channels come
from the model's config (``image_size``, ``num_channels``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from synbench.encoders.base import (IMAGENET_MEAN, IMAGENET_STD, NORMALIZE, Encoder, EncoderError, check_choice,
                                    first_line, normalisation)
from synbench.encoders.weights import file_sha256, load_or_random, seeded

POOLING = ("pooler", "cls", "mean")


class Pooled(nn.Module):
    """A transformers model reduced to one feature vector per input."""

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        if self.pooling == "pooler":
            if getattr(out, "pooler_output", None) is None:
                raise ValueError("this model has no pooler output; use model.pooling=cls or mean")
            return out.pooler_output.flatten(1)  # conv backbones pool to [B, C, 1, 1]
        hidden = out.last_hidden_state
        if hidden.dim() == 4:  # [B, C, H, W] feature map (conv backbones)
            if self.pooling == "cls":
                raise ValueError("a convolutional backbone has no CLS token; use model.pooling=pooler or mean")
            return hidden.mean((2, 3))
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(1)


def _weights_digest(directory: Path) -> str:
    """The weights part of the identity of a local directory: the hashes of its weight files."""
    files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    h = hashlib.sha256("".join(f"{p.name}:{file_sha256(p)};" for p in files).encode())
    return f"dir:sha256:{h.hexdigest()}"


def load_hf_encoder(name: str, path: str, pooling: str, normalize: str, pretrained: bool, init_seed: int) -> Encoder:
    """``pretrained``: the weights in ``path`` (every weight of the model must be there); false: the
    architecture of ``path``'s config with a seeded random init."""
    try:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel
    except ImportError as err:
        raise EncoderError("model=hf needs the transformers package: pip install 'synbench[hf]'") from err
    check_choice("model.pooling", pooling, POOLING)
    check_choice("model.normalize", normalize, NORMALIZE)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:
        raise EncoderError(f"model.path={path!r} is not a transformers model directory (or reachable hub id): "
                           f"{first_line(err)}") from err
    if pretrained:
        try:
            model, info = AutoModel.from_pretrained(path, output_loading_info=True)
        except Exception as err:
            raise EncoderError(f"model.path={path!r}: could not load its weights ({first_line(err)}); "
                               f"set model.pretrained=false for a random init of its architecture") from err
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise EncoderError(f"model.path={path!r} lacks {len(missing)} weights of its architecture "
                               f"(e.g. {missing[0]}); they would stay random")
        weights = _weights_digest(Path(path)) if Path(path).is_dir() else f"hf:{path}:{config._commit_hash}"
    else:
        with seeded(init_seed):
            model = AutoModel.from_config(config)
        weights = load_or_random(model, None, name, init_seed)
    try:
        processor = AutoImageProcessor.from_pretrained(path)
        own = processor.image_mean, processor.image_std
    except Exception:  # no preprocessor_config.json: ImageNet's, said in the identity
        own = IMAGENET_MEAN, IMAGENET_STD
    mean, std = normalisation(normalize, *own)
    size = config.image_size if isinstance(config.image_size, (list, tuple)) else (config.image_size,) * 2
    shape = (int(getattr(config, "num_channels", 3)), *(int(v) for v in size))
    identity = {"backend": "hf", "name": name, "path": str(path), "model_type": config.model_type,
                "weights": weights, "pooling": pooling, "input_shape": list(shape),
                "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return Encoder(Pooled(model, pooling), shape, mean, std, identity, value_range=(0.0, 1.0))

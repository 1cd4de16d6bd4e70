"""timm backbones as ``Encoder``s: hub weights, a local checkpoint, or a seeded random init (only when asked)."""

from __future__ import annotations

import difflib
import hashlib
import logging
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config
from timm.models import load_state_dict

from synbench.encoders.base import Encoder, EncoderError

log = logging.getLogger(__name__)

NORMALIZE = ("model", "imagenet")


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def check_timm_model(name: str, checkpoint: str | None = None, normalize: str = "model") -> None:
    """Cheap checks that run before any heavy work; each failure is one line naming the bad value."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `timm.list_models('*vit*')` lists names"
        raise EncoderError(f"model.name={name!r} is not a timm model{hint}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise EncoderError(f"model.checkpoint={checkpoint!r} does not exist (expected a .safetensors/.pth file)")
    if normalize not in NORMALIZE:
        raise EncoderError(f"model.normalize={normalize!r} is not supported; valid: {', '.join(NORMALIZE)}")


def load_timm_encoder(name: str, pretrained: bool, checkpoint: str | None, normalize: str,
                      init_seed: int) -> Encoder:
    """Build ``name`` with pooled features (``num_classes=0``) and its input normalisation.

    Weights: ``checkpoint`` (a local file) if given, else the timm hub when ``pretrained``; a random init only
    when ``pretrained`` is false, seeded by ``init_seed`` so it is reproducible. Failing to get weights is an
    error, never a silent fallback to random weights.
    """
    check_timm_model(name, checkpoint, normalize)
    if checkpoint is not None:
        path = Path(checkpoint).resolve()
        backbone = _seeded_model(name, init_seed)
        _load_strict(backbone, path, name)
        weights = f"file:sha256:{file_sha256(path)}"
    elif pretrained:
        try:
            backbone = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as err:  # hub/network/missing-weights errors come in many types
            raise EncoderError(
                f"could not load pretrained weights for model.name={name!r} from the timm hub ({_first_line(err)}); "
                f"pass a local file with model.checkpoint=/path/file.safetensors, "
                f"or set model.pretrained=false for a random init") from err
        cfg = backbone.pretrained_cfg
        weights = f"hub:{cfg.get('hf_hub_id') or cfg.get('url') or name}:{cfg.get('tag') or ''}"
    else:
        backbone = _seeded_model(name, init_seed)
        weights = f"random-init:seed={init_seed}"
        log.warning("model %s has RANDOM weights (model.pretrained=false)", name)

    data_cfg = resolve_model_data_config(backbone)
    if normalize == "model":
        mean, std = data_cfg["mean"], data_cfg["std"]
    else:
        mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    identity = {
        "backend": "timm",
        "timm": timm.__version__,
        "name": name,
        "weights": weights,
        "input_shape": list(data_cfg["input_size"]),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }
    return Encoder(backbone.eval(), data_cfg["input_size"], mean, std, backbone.num_features, identity)


def _seeded_model(name: str, init_seed: int) -> torch.nn.Module:
    """A random-init model whose weights depend on ``init_seed`` only (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return timm.create_model(name, pretrained=False, num_classes=0)


def _load_strict(backbone: torch.nn.Module, path: Path, name: str) -> None:
    """Load a timm-format state dict; every backbone key must match (classifier keys are dropped).

    timm's own pretrained path only warns on mismatched keys, which would leave a silently random model.
    """
    try:
        state = load_state_dict(str(path))
    except Exception as err:
        raise EncoderError(f"model.checkpoint={str(path)!r} is not a readable state dict: {_first_line(err)}") from err
    heads = backbone.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not any(k.startswith(h + ".") for h in heads)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if keys]
        raise EncoderError(f"model.checkpoint={str(path)!r} does not match architecture {name!r}: {'; '.join(parts)}")
    backbone.load_state_dict(state, strict=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

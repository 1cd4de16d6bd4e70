"""timm backbones as ``Encoder``s: hub weights, a local checkpoint, or a seeded random init (only when asked)."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import get_pretrained_cfg

from synbench.encoders.base import (NORMALIZE, Encoder, EncoderError, check_choice, check_input_size, first_line,
                                    normalisation)
from synbench.encoders.weights import describe, existing_file, load_or_random, seeded


def check_timm_model(name: str, checkpoint: str | None = None, normalize: str = "model",
                     input_size: int | None = None) -> Path | None:
    """Cheap checks that run before any heavy work; each failure is one line naming the bad value."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `timm.list_models('*vit*')` lists names"
        raise EncoderError(f"model.name={name!r} is not a timm model{hint}")
    check_choice("model.normalize", normalize, NORMALIZE)
    check_input_size(input_size)
    return existing_file(checkpoint)


def load_timm_encoder(name: str, pretrained: bool, checkpoint: str | None, normalize: str, init_seed: int,
                      input_size: int | None = None) -> Encoder:
    """Build ``name`` with pooled features (``num_classes=0``) and its input normalisation.

    Weights: ``checkpoint`` (a local file, timm format or the architecture's original published format) if
    given, else the timm hub when ``pretrained``; a random init only when ``pretrained`` is false, seeded by
    ``init_seed`` so it is reproducible. Failing to get weights is an error, never a silent fallback to
    random weights.

    ``input_size``: run at ``input_size`` x ``input_size`` instead of the model's own size. The model is built
    for that size (timm's ``img_size``: position embeddings, windows) where the architecture takes one, and
    otherwise must run at it as it is (global pooling); the input is never resized, as that would change the
    mixture. Where it cannot, the error names the size it does run at.
    """
    path = check_timm_model(name, checkpoint, normalize, input_size)
    own = tuple(get_pretrained_cfg(name).input_size)
    if input_size is not None and own[1:] == (input_size, input_size):
        input_size = None  # the model's own size: built exactly as without the knob
    try:
        backbone, weights = _backbone(name, pretrained, path, init_seed, input_size)
    except EncoderError:
        raise
    except Exception as err:  # an architecture that cannot be built (for the requested size)
        if input_size is None:
            raise EncoderError(f"model.name={name!r} cannot be built: {type(err).__name__}: {first_line(err)}") from err
        raise _size_error(name, input_size, own, err) from err
    data_cfg = resolve_model_data_config(backbone)
    mean, std = normalisation(normalize, data_cfg["mean"], data_cfg["std"])
    shape = data_cfg["input_size"] if input_size is None else (data_cfg["input_size"][0], input_size, input_size)
    identity = {
        "backend": "timm",
        "timm": timm.__version__,
        "name": name,
        "weights": weights,
        "input_shape": list(shape),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }
    try:
        return Encoder(backbone, shape, mean, std, identity, value_range=(0.0, 1.0))
    except EncoderError as err:
        if input_size is None or err.__cause__ is None:  # not a failed forward: no size to blame
            raise
        raise _size_error(name, input_size, own, err.__cause__) from err


def _backbone(name: str, pretrained: bool, path: Path | None, init_seed: int,
              input_size: int | None) -> tuple[torch.nn.Module, str]:
    """The backbone and a description of its weights (part of the encoder's identity)."""
    if path is not None:
        return _from_file(name, path, init_seed, input_size), describe(path)
    if pretrained:
        try:
            backbone = _create(name, input_size, pretrained=True)
        except Exception as err:  # hub/network/missing-weights errors come in many types
            raise EncoderError(
                f"could not load pretrained weights for model.name={name!r} from the timm hub "
                f"({first_line(err)}); pass a local file with model.checkpoint=/path/file.safetensors, "
                f"or set model.pretrained=false for a random init") from err
        cfg = backbone.pretrained_cfg
        return backbone, f"hub:{cfg.get('hf_hub_id') or cfg.get('url') or name}:{cfg.get('tag') or ''}"
    with seeded(init_seed):
        backbone = _create(name, input_size, pretrained=False)
    return backbone, load_or_random(backbone, None, name, init_seed)


def _from_file(name: str, path: Path, init_seed: int, input_size: int | None) -> torch.nn.Module:
    """Load a local file through timm's own path, so its per-architecture filter converts original
    published formats and resamples position embeddings to ``input_size``.

    That path loads non-strictly (the dropped classifier) and only logs what it skipped, which would leave a
    silently part-random model. So the model is built twice from two init seeds: every weight the file set
    is equal in both, and a weight that differs was never loaded.
    """
    def build(seed: int) -> torch.nn.Module:
        with seeded(seed):
            return _create(name, input_size, pretrained=True, pretrained_cfg_overlay={"file": str(path)})

    try:
        first, second = build(init_seed), build(init_seed + 1)
    except Exception as err:
        raise EncoderError(f"model.checkpoint={str(path)!r} does not match architecture {name!r}: timm's loader "
                           f"failed ({type(err).__name__}: {first_line(err)})") from err
    a, b = first.state_dict(), second.state_dict()
    random = [k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k])]
    if random:
        raise EncoderError(f"model.checkpoint={str(path)!r} does not match architecture {name!r}: {len(random)} of "
                           f"{len(a)} weights are not in it (e.g. {random[0]})")
    return first


def _size_error(name: str, size: int, own: tuple[int, ...], err: BaseException) -> EncoderError:
    side = "x".join(str(v) for v in own[1:])
    return EncoderError(f"model.input_size={size}: {name!r} cannot run at {size}x{size} ({type(err).__name__}: "
                        f"{first_line(err)}); it runs at its own size {side} (leave model.input_size unset, or "
                        f"pick a size its architecture allows)")


def _create(name: str, input_size: int | None, **kwargs) -> torch.nn.Module:
    """``timm.create_model`` with pooled features, built for ``input_size`` where the architecture takes one."""
    if input_size is not None:
        try:
            return timm.create_model(name, num_classes=0, img_size=input_size, **kwargs)
        except TypeError as err:  # no img_size: a size-agnostic (globally pooled) architecture, tried as it is
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, num_classes=0, **kwargs)

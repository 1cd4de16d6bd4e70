"""Your own ``nn.Module`` as an ``Encoder``: ``model=custom model.module._target_=my_pkg.MyNet``.

The contract (docs/encoders.md, "Your own model"):
- ``module``: a Hydra node whose ``_target_`` builds an ``nn.Module`` (a class or a function; its other keys
  are its arguments). It is built here under ``model.init_seed``, so a random init is reproducible, and
  put in eval mode.
- Its ``forward`` takes a batch of *normalised* inputs ``[batch, *input_shape]`` and returns pooled features
  ``[batch, width]``; the width is measured, so nothing declares it.
- ``input_shape`` (C x H x W images, C x L audio), ``value_range`` (the valid raw inputs; the mixture is
  centred on its middle) and ``mean``/``std`` (per channel: the encoder feeds ``(x - mean) / std``) declare
  what it takes.
- ``checkpoint``: optional weights file loaded strictly into the module.
The identity holds the whole ``module`` node and a hash of the module's state, so the embedding cache tells
apart any two architectures or sets of weights, even weights the module's constructor loaded itself.
"""

from __future__ import annotations

import hashlib

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from synbench.encoders.base import Encoder, EncoderError, first_line
from synbench.encoders.weights import describe, existing_file, load_strict, seeded


def state_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def wrap_module(name: str, module, input_shape, value_range, mean, std, checkpoint: str | None,
                init_seed: int) -> Encoder:
    path = existing_file(checkpoint)
    channels = int(input_shape[0]) if len(input_shape) else 0
    if len(input_shape) < 2 or any(int(v) <= 0 for v in input_shape):
        raise EncoderError(f"model.input_shape={list(input_shape)} must be [C, H, W] or [C, L] with positive sizes")
    for key, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise EncoderError(f"model.{key}={list(values)} needs 1 or {channels} values (one per channel)")
    if any(not float(s) > 0 for s in std):
        raise EncoderError(f"model.std={list(std)} must be > 0")
    with seeded(init_seed):
        try:
            net = instantiate(module)
        except Exception as err:
            cause = err.__cause__ or err
            raise EncoderError(f"model.module could not be built ({type(cause).__name__}: {first_line(cause)})") from err
    if not isinstance(net, nn.Module):
        raise EncoderError(f"model.module built a {type(net).__name__}, not a torch.nn.Module")
    if path is not None:
        load_strict(net, path, name)
    spec = OmegaConf.to_container(module, resolve=True) if isinstance(module, DictConfig) else dict(module)
    identity = {"backend": "custom", "name": name, "module": spec,  # its arguments shape the features too
                "weights": describe(path) if path else f"state:sha256:{state_sha256(net)}",
                "input_shape": [int(v) for v in input_shape]}
    means = [float(v) for v in mean] * (channels if len(mean) == 1 else 1)
    stds = [float(v) for v in std] * (channels if len(std) == 1 else 1)
    return Encoder(net, tuple(identity["input_shape"]), means, stds, {**identity, "mean": means, "std": stds},
                   value_range=tuple(value_range))

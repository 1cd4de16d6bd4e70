"""torchvision classification models as ``Encoder``s: the penultimate features (the input of the last Linear
layer, which is replaced by the identity), weights from a local file, torchvision's download, or a seeded
random init. Normalisation and input size come from the weights' own transforms (ImageNet mean/std, 224 px;
299 px for Inception v3)."""

from __future__ import annotations

import difflib

import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models

from synbench.encoders.base import (NORMALIZE, Encoder, EncoderError, check_choice, check_input_size, first_line,
                                    normalisation)
from synbench.encoders.weights import existing_file, load_or_random, seeded



def load_torchvision_encoder(name: str, pretrained: bool, checkpoint: str | None, normalize: str, init_seed: int,
                             input_size: int | None = None) -> Encoder:
    """``torchvision.models.get_model(name)`` without its classifier. ``checkpoint``: a state dict of the full
    model (its classifier may be in it or not; every other key must match). ``pretrained`` without a file
    downloads torchvision's default weights (needs network). ``input_size``: built for it where the model
    takes an ``image_size`` (ViT), else run at it as it is (globally pooled convnets)."""
    models = list_models(module=torchvision.models)
    if name not in models:
        close = difflib.get_close_matches(name, models, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(models)}"
        raise EncoderError(f"model.name={name!r} is not a torchvision classification model{hint}")
    check_choice("model.normalize", normalize, NORMALIZE)
    check_input_size(input_size)
    path = existing_file(checkpoint)
    transforms = get_model_weights(name).DEFAULT.transforms()  # metadata only: nothing is downloaded
    side = input_size or transforms.crop_size[0]
    kwargs = {} if input_size is None else {"image_size": input_size}

    if path is None and pretrained:
        try:
            model = _build(name, kwargs, weights="DEFAULT")
        except Exception as err:  # download/network errors come in many types
            raise EncoderError(f"could not download torchvision's weights for model.name={name!r} "
                               f"({first_line(err)}); pass a local file with model.checkpoint=/path/weights.pth, "
                               f"or set model.pretrained=false for a random init") from err
        head, weights = _last_linear(model, name), f"torchvision:{get_model_weights(name).DEFAULT}"
    else:
        with seeded(init_seed):
            model = _build(name, kwargs, weights=None)
        head = _last_linear(model, name)
        weights = load_or_random(model, path, name, init_seed, head=(head,))
    model.set_submodule(head, nn.Identity())
    mean, std = normalisation(normalize, transforms.mean, transforms.std)
    identity = {"backend": "torchvision", "torchvision": torchvision.__version__, "name": name,
                "weights": weights, "input_shape": [3, side, side], "head": head,
                "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return Encoder(model, (3, side, side), mean, std, identity, value_range=(0.0, 1.0))


def _build(name: str, kwargs: dict, weights) -> nn.Module:
    try:
        return get_model(name, weights=weights, **kwargs)
    except TypeError as err:  # no image_size: a size-agnostic architecture, run at the size as it is
        if not kwargs or "image_size" not in str(err):
            raise
        return get_model(name, weights=weights)


def _last_linear(model: nn.Module, name: str) -> str:
    """The classifier: the last ``nn.Linear`` registered (``fc``, ``classifier.6``, ``heads.head``, ...)."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise EncoderError(f"model.name={name!r} has no Linear classifier whose input could be the representation "
                           f"(its head is convolutional); wrap it yourself with model=custom")
    return linears[-1]


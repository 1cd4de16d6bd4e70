"""The encoder contract every model backend satisfies (timm, torchvision, transformers, packaged, your own).

An ``Encoder`` takes raw inputs (*pixel-space* images before any normalisation, or audio samples) and returns
pooled features. It declares what it takes: ``input_shape`` (C x H x W, or C x L for audio), ``value_range``
(the range of valid raw inputs, whose centre is the mixture's default mean: 0.5 for [0, 1] images, 0 for
[-1, 1] audio) and the normalisation ``(x - mean) / std`` applied inside ``forward``, so attacks and noise
paths (robustness bound, RMQM) differentiate from raw-input space through the whole model.
"""

from __future__ import annotations

import re
import sys
from enum import Enum

import torch
from torch import nn


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``, or a no-op context when ``dtype`` is None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class EncoderError(ValueError):
    """A model that cannot be built as configured (unknown name, missing or mismatched weights, an input size
    it cannot run at, an output that is not pooled features)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type when it has none), without terminal colour codes
    (torch's weights-only refusal carries some): errors here are one plain line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


NORMALIZE = ("model", "imagenet")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalisation(normalize: str, own_mean, own_std) -> tuple:
    """``model.normalize``: ``model``, the weights' own mean/std; ``imagenet``, ImageNet's for every model
    (what the SynBench authors' script did)."""
    check_choice("model.normalize", normalize, NORMALIZE)
    return (own_mean, own_std) if normalize == "model" else (IMAGENET_MEAN, IMAGENET_STD)


def check_choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise EncoderError(f"{key}={value!r} is not supported; valid: {', '.join(valid)}")


def check_input_size(input_size) -> None:
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0):
        raise EncoderError(f"model.input_size={input_size!r} must be a positive integer (pixels of a square side) "
                           f"or null for the model's own size")


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on CUDA, fp32 elsewhere
    fp32 = "fp32"
    bf16 = "bf16"

    @classmethod
    def parse(cls, value: str) -> "Precision":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"embed.precision={value!r} is not supported; valid: "
                             f"{', '.join(p.value for p in cls)}") from None

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        if self is Precision.fp32 or (self is Precision.auto and device.type != "cuda"):
            return None
        return torch.bfloat16


class Encoder(nn.Module):
    """``features = backbone((pixels - mean) / std)``, with mean/std as buffers that follow ``.to(device)``.

    ``num_features`` is *measured*: one forward pass of a tiny batch at construction, never a width a backbone
    declares. Declared widths lie (timm's ``num_features`` is the pre-head width, while ``num_classes=0``
    returns the pre-logits of MobileNetV3, VGG, ...), and every consumer sizes its buffers from this number.
    The same pass rejects, with one line, a backbone that cannot run at ``input_shape`` or does not return
    pooled features ``[batch, width]``.
    """

    def __init__(self, backbone: nn.Module, input_shape: tuple[int, ...], mean, std, identity: dict,
                 value_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.backbone = backbone.eval()
        self.input_shape = tuple(int(v) for v in input_shape)
        lo, hi = (float(v) for v in value_range)
        if not lo < hi:
            raise EncoderError(f"value_range={list(value_range)} of model {identity.get('name')!r} must be [lo, hi] "
                               f"with lo < hi")
        self.value_range = (lo, hi)
        #: everything that determines the features (name, weights, preprocessing); keys the embedding cache.
        self.identity = identity
        view = (1, self.input_shape[0]) + (1,) * (len(self.input_shape) - 1)  # per channel, any input rank
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(view))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(view))
        self.num_features = self._measure_width()

    @property
    def centre(self) -> float:
        """The middle of the valid input range: the mixture's default mean (the paper's 0.5 for images)."""
        return (self.value_range[0] + self.value_range[1]) / 2

    @property
    def name(self) -> str:
        return str(self.identity.get("name", type(self.backbone).__name__))

    @property
    def compiled(self) -> bool:
        """Whether the backbone runs ``torch.compile``'d now (an embedding plan's pass): other kernels compute other
        last bits, so the embedding cache keys it."""
        eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # never imported: nothing was compiled
        return eval_frame is not None and isinstance(self.backbone, eval_frame.OptimizedModule)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone((pixels - self.mean) / self.std)

    def _measure_width(self, batch: int = 2) -> int:
        shape = [batch, *self.input_shape]
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(self.mean.device)  # global RNG untouched
        try:
            with torch.inference_mode():
                out = self(x)
        except Exception as err:  # any failure of a foreign module's forward is this model's, said in one line
            raise EncoderError(f"model {self.name!r} cannot run on inputs of shape {shape}: "
                               f"{type(err).__name__}: {first_line(err)}") from err
        if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == batch
                and out.is_floating_point() and out.shape[1] > 0):
            got = (f"a {out.dtype} tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor)
                   else f"a {type(out).__name__}")
            raise EncoderError(f"model {self.name!r} returned {got} for inputs of shape {shape}; an encoder must "
                               f"return pooled float features of shape [batch, width], e.g. [{batch}, 768]")
        return int(out.shape[1])

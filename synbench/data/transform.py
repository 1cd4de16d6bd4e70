"""The one documented map from a dataset's pixels to an encoder's raw input, differentiable end to end.

``x`` in the dataset's pixel units ([0, 1], ``[B, C, H, W]``) becomes the encoder's input in three steps:
1. **channels**: grey to C channels by repetition; RGB to grey by ITU-R BT.601 luma
   (``0.299 R + 0.587 G + 0.114 B``); any other pair cannot be mapped and is refused;
2. **size**: bilinear resize with antialiasing (``F.interpolate(..., antialias=True, align_corners=False)``) to
   the encoder's H x W, when they differ (aspect ratio not kept);
3. **value range**: ``lo + (hi - lo) x`` onto the encoder's declared value range.
All three are linear, with non-negative weights that sum to one, so a pixel box [0, 1] maps into [lo, hi] and
an attack on ``x`` (radii in the dataset's units) differentiates through the transform into the model. The
transform is logged with the run (params ``dataset.transform.*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing of ``[B, C, H, W]`` (the dataset transform's and the readers' one)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)


@dataclass(frozen=True)
class InputTransform:
    source: tuple[int, int, int]  # the dataset's C, H, W
    target: tuple[int, int, int]  # the encoder's C, H, W
    value_range: tuple[float, float]  # the encoder's raw input range

    @classmethod
    def between(cls, source, target, value_range, what: str = "the encoder") -> "InputTransform":
        """The transform from dataset images of shape ``source`` to ``target``, or one line saying why none
        exists."""
        source, target = tuple(int(v) for v in source), tuple(int(v) for v in target)
        if len(target) != 3:
            raise ValueError(f"dataset images {list(source)} (C x H x W) cannot be brought to the input of {what}, "
                             f"which takes {list(target)} (not an image: C x L audio?); use an image encoder")
        c_in, c_out = source[0], target[0]
        if not (c_in == c_out or c_in == 1 or (c_in == 3 and c_out == 1)):
            raise ValueError(f"dataset images have {c_in} channels and {what} takes {c_out}: only grey -> any, "
                             f"RGB -> grey and equal counts can be mapped")
        return cls(source, target, (float(value_range[0]), float(value_range[1])))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c_in, c_out = self.source[0], self.target[0]
        if c_in == 3 and c_out == 1:
            x = (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = resize(x, self.target[1:])
        if c_in == 1 and c_out > 1:
            x = x.expand(-1, c_out, -1, -1)
        lo, hi = self.value_range
        return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo

    def describe(self) -> dict[str, str]:
        c_in, c_out = self.source[0], self.target[0]
        (h, w), (th, tw) = self.source[1:], self.target[1:]
        channels = ("as is" if c_in == c_out else f"grey -> {c_out} (repeat)" if c_in == 1
                    else "RGB -> grey (BT.601 luma)")
        size = "as is" if (h, w) == (th, tw) else f"{h}x{w} -> {th}x{tw} (bilinear, antialias)"
        return {"channels": channels, "resize": size, "value_range": f"[0, 1] -> [{self.value_range[0]:g}, "
                                                                          f"{self.value_range[1]:g}]"}

"""Real labelled images, the sibling of the synthetic mixture: what every reader (``data/readers.py``) returns.

A ``LabelledDataset`` holds the images as stored (``uint8`` or ``float32``, ``[N, C, H, W]``), their labels
``0..K-1``, the class names and a train/test split. Its *pixel units* are ``[0, 1]``: stored values are mapped
from the dataset's value range (``[0, 255]`` for integer images), and attack radii on it are in these units.
The split is the dataset's own where it has one, else a seeded one; ``n_train`` / ``n_test`` keep a seeded
subset. ``split_digest`` hashes each split's content (its pixels and labels, in order), so features are cached
by what the data are, not by where they lie or how the other split was subset; ``digest`` covers both. ``labelled`` checks everything a reader hands over and raises one line on bad data,
before any model loads or any run exists.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from synbench.data.mixture import Split, derive_seed

log = logging.getLogger(__name__)
MIN_PER_SPLIT = 4  # fewer samples than this in a split cannot fit, hold out or test anything


@dataclass(frozen=True, eq=False)
class LabelledDataset:
    name: str
    x: torch.Tensor  # [N, C, H, W] uint8 (0..255) or float32 (already in pixel units [0, 1])
    y: torch.Tensor  # [N] int64 in 0..K-1
    classes: tuple[str, ...]
    index: dict[Split, torch.Tensor]  # row indices of each split, in a fixed order
    split_source: str  # "dataset" (its own split) | "seeded" (test_fraction, split_seed)
    split_digest: dict[Split, str]  # the content of each split (its pixels and labels, in order): cache keys
    digest: str  # the whole dataset's: both splits and the class names

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_labels(self) -> bool:
        """False for unlabelled images (a folder without class folders): label-free metrics still read them."""
        return bool(self.classes)

    def count(self, split: Split) -> int:
        return len(self.index[split])

    def take(self, split: Split, positions, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of a split at ``positions`` (a slice or indices into the split): (pixels in [0, 1] float32 on
        ``device``, labels)."""
        rows = self.index[split][positions]
        x = self.x[rows].to(device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return x, self.y[rows].to(device)

    def stream(self, split: Split, batch_size: int, device, n: int | None = None
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``n`` (default all) rows of a split in batches; only one batch of pixels is on the device."""
        n = self.count(split) if n is None else min(n, self.count(split))
        for start in range(0, n, batch_size):
            yield self.take(split, slice(start, min(start + batch_size, n)), device)

    def splits(self) -> dict[str, tuple[str, int]]:
        """Each split's content digest and size, by name: what a run records as its dataset inputs."""
        return {s.value: (self.split_digest[s], self.count(s)) for s in Split}

    def params(self) -> dict:
        """``describe`` as run params: ``dataset.digest``, ``dataset.train_images``, ..."""
        return {f"dataset.{k}": v for k, v in self.describe().items()}

    def describe(self) -> dict:
        """What a run logs about the data it read (params ``dataset.<key>``, beside the config's own keys)."""
        return {"digest": self.digest, "shape": list(self.shape), "num_classes": self.num_classes,
                "train_images": self.count(Split.train), "test_images": self.count(Split.test),
                "split": self.split_source, "classes": " ".join(self.classes)[:500]}


def labelled(name: str, where: str, x: np.ndarray, y: np.ndarray | None, *, classes: list[str] | None = None,
             is_test: np.ndarray | None = None, value_range=None, test_fraction: float, split_seed: int,
             n_train: int | None = None, n_test: int | None = None) -> LabelledDataset:
    """Check a reader's arrays and build the dataset. ``x``: [N, C, H, W]; ``y``: [N] labels, integers (any
    values: mapped to 0..K-1 in sorted order, named by ``classes`` when given, else by the values) or strings
    (their own names, sorted), or None for unlabelled images;
    ``is_test``: the dataset's own split (bool per row) or None for a seeded one. ``where`` names the source
    in every error (``dataset.path=...``)."""
    if x.ndim != 4:
        raise ValueError(f"{where}: images of shape {list(x.shape)}; expected [N, C, H, W]")
    if len(x) == 0:
        raise ValueError(f"{where} holds no images (x has shape {list(x.shape)}); a dataset needs images")
    if y is None:  # unlabelled images: no class, every label -1 (only label-free metrics read them)
        classes, codes = [], np.full(len(x), -1, dtype=np.int64)
    elif len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} images but {len(y)} labels; every image needs exactly one label")
    else:
        classes, codes = _classes(np.asarray(y), classes, where)
    if y is not None and len(classes) < 2:
        raise ValueError(f"{where}: every image has the label {classes[0]!r}; a labelled dataset needs at least 2 "
                         f"classes")
    px = _to_pixels(x, value_range, where)
    index = _split(len(x), is_test, test_fraction, split_seed, where)
    for split, cap in ((Split.train, n_train), (Split.test, n_test)):
        if cap is not None:
            if int(cap) < MIN_PER_SPLIT:
                raise ValueError(f"dataset.n_{split.value}={cap} must be >= {MIN_PER_SPLIT} or null (all)")
            if int(cap) > len(index[split]):
                log.warning("dataset.n_%s=%d is more than the %d %s images of %s: all %d are used", split.value,
                            int(cap), len(index[split]), split.value, where, len(index[split]))
            keep = torch.randperm(len(index[split]), generator=torch.Generator().manual_seed(
                derive_seed("dataset-subset", split_seed, split.value)))[:int(cap)]
            index[split] = index[split][keep.sort().values]
    y_t = torch.as_tensor(codes.reshape(-1), dtype=torch.int64)
    if y is not None and len(torch.unique(y_t[index[Split.train]])) < 2:
        raise ValueError(f"{where}: the train split holds a single class; a probe needs at least 2")
    split_digest = {s: _digest(px[rows].numpy().tobytes(), y_t[rows].numpy().tobytes()) for s, rows in index.items()}
    return LabelledDataset(name=name, x=px, y=y_t, classes=tuple(classes), index=index,
                           split_source="dataset" if is_test is not None else "seeded", split_digest=split_digest,
                           digest=_digest(*(d.encode() for d in split_digest.values()), "\0".join(classes).encode()))


def _classes(y: np.ndarray, names, where: str) -> tuple[list[str], np.ndarray]:
    """Class names and codes 0..K-1 of the labels. Integer labels (floats holding integers too) are mapped in
    sorted order and named by ``names`` (indexed by label value) where given, else by their values; string
    labels ('cat', 'dog') name their own classes, in sorted order."""
    if y.ndim != 1:
        raise ValueError(f"{where}: labels of shape {list(y.shape)}; expected one label per image, shape [N]")
    if y.dtype.kind in "US":
        values, codes = np.unique(y.astype(str), return_inverse=True)
        if names is not None and set(map(str, names)) != set(values):
            raise ValueError(f"{where}: string labels name their own classes ({', '.join(values[:5])}"
                             f"{', ...' if len(values) > 5 else ''}), and the class names given differ; drop the "
                             f"names, or store integer labels indexing them")
        return [str(v) for v in values], codes.reshape(-1)
    if not (np.issubdtype(y.dtype, np.integer) or
            (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)))):
        raise ValueError(f"{where}: labels of dtype {y.dtype}; expected one integer class label per image "
                         f"(0..K-1), or a string label such as 'cat' (stored with dtype str: np.array(labels, "
                         f"dtype=str))")
    values, codes = np.unique(y.astype(np.int64), return_inverse=True)
    if names is not None and (values[0] < 0 or values[-1] >= len(names)):
        raise ValueError(f"{where}: labels run from {values[0]} to {values[-1]} but {len(names)} class names are "
                         f"given (names are indexed by label, 0..{len(names) - 1}); give one name per label value")
    classes = [str(v) for v in values] if names is None else [str(names[int(v)]) for v in values]
    return classes, codes.reshape(-1)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:32]


def _to_pixels(x: np.ndarray, value_range, where: str) -> torch.Tensor:
    """uint8 in 0..255 stays uint8 (4x less memory; /255 per batch); anything else becomes float32 in [0, 1].
    Default ranges: [0, 255] for integers, [0, 1] for floats and bools (a bool image is 0/1 by nature). Integer
    pixels that use under 1/255 of the range (0/1 masks read against [0, 255]) would reach the model almost
    black: that is said in a warning naming dataset.value_range."""
    integer = np.issubdtype(x.dtype, np.integer)
    if not (integer or x.dtype == np.bool_ or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{where}: images of dtype {x.dtype}; expected integer, bool or floating pixels")
    lo, hi = ((0.0, 255.0) if integer else (0.0, 1.0)) if value_range is None else \
        (float(value_range[0]), float(value_range[1]))
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"dataset.value_range={list(value_range)} must be [lo, hi], finite, with lo < hi")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.argwhere(bad.reshape(len(x), -1).any(1))[0, 0])
            raise ValueError(f"{where}: image {row} holds non-finite values (NaN or inf); every pixel must be finite")
    x_min, x_max = float(x.min()), float(x.max())
    if x_min < lo or x_max > hi:
        raise ValueError(f"{where}: pixel values span [{x_min:g}, {x_max:g}], outside dataset.value_range=[{lo:g}, "
                         f"{hi:g}]; set dataset.value_range to the range the pixels are stored in")
    if integer and x_max - x_min <= (hi - lo) / 255.0 and hi - lo >= 255.0:
        log.warning("%s: integer pixels span [%g, %g], under 1/255 of dataset.value_range=[%g, %g], so the images "
                    "reach the model almost uniform (brightest %.4f in [0, 1]); if they are masks or 0/1 images "
                    "set dataset.value_range=[%g, %g]", where, x_min, x_max, lo, hi, (x_max - lo) / (hi - lo),
                    x_min, x_max)
    if x.dtype == np.uint8 and (lo, hi) == (0.0, 255.0):
        return torch.from_numpy(np.ascontiguousarray(x))
    return torch.from_numpy(((x.astype(np.float64) - lo) / (hi - lo)).astype(np.float32))


def _split(n: int, is_test: np.ndarray | None, test_fraction: float, seed: int, where: str
           ) -> dict[Split, torch.Tensor]:
    if is_test is None:
        if not 0 < float(test_fraction) < 1:
            raise ValueError(f"dataset.test_fraction={test_fraction!r} must be in (0, 1)")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed("dataset-split", seed)))
        n_test = round(float(test_fraction) * n)
        index = {Split.train: perm[n_test:].sort().values, Split.test: perm[:n_test].sort().values}
        how = f"a test_fraction of {test_fraction:g}"
    else:
        is_test = torch.as_tensor(np.asarray(is_test, dtype=bool).reshape(-1))
        index = {Split.train: torch.nonzero(~is_test).flatten(), Split.test: torch.nonzero(is_test).flatten()}
        how = "its own split"
    for split, rows in index.items():
        if len(rows) < MIN_PER_SPLIT:
            raise ValueError(f"{where}: {n} images; {how} leaves {len(rows)} for {split.value}, and each split needs "
                             f"at least {MIN_PER_SPLIT} (add images, or change dataset.test_fraction)")
    return index

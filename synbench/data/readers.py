"""Readers of real labelled images from local files, one per ``dataset`` config option; each returns a checked
``LabelledDataset`` (``data/labelled.py``) and says in one line what is wrong with a file it cannot use.

- ``image_folder``: ``path/<class>/<image>``, or ``path/train/<class>/...`` + ``path/test/<class>/...`` for a
  split of its own; images with no class folder (``path/<image>``, or ``path/train/<image>`` + ``path/test/...``)
  are unlabelled, read by label-free metrics only. Images are told by extension; a class folder without one is
  refused. Grey images stay one channel; any other mode becomes RGB (alpha dropped), and a folder mixing grey and
  colour is read as RGB. 16- and 32-bit grey and float images are read at their depth (``DEEP_RANGES``). Images
  of different sizes need ``dataset.image_size``: each is then
  resized on load (squashed to a square) by the same bilinear, antialiased resize as the encoder transform.
- ``npz``: arrays ``x`` ([N, H, W], [N, C, H, W] or [N, H, W, C] with C in 1 or 3) and ``y``; optional
  ``split`` (``"train"``/``"test"`` per image) and ``classes`` (names indexed by label).
- ``idx``: the MNIST family's IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; MNIST, Fashion-MNIST, KMNIST), with their split.
- ``hf``: a Hugging Face ``datasets`` directory written by ``save_to_disk`` (extra ``synbench[datasets]``); its
  ``train`` and ``test`` splits where it has them.
"""

from __future__ import annotations

import gzip
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from synbench.data.labelled import LabelledDataset, labelled
from synbench.data.transform import resize

log = logging.getLogger(__name__)


def _existing(path: str, what: str, get: str | None = None) -> Path:
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ValueError(f"dataset.path={str(path)!r} does not exist; " +
                         (f"{get} writes it (dataset.get)" if get else f"give {what}"))
    return p


def _common(test_fraction, split_seed, n_train, n_test) -> dict:
    return {"test_fraction": test_fraction, "split_seed": split_seed, "n_train": n_train, "n_test": n_test}


def read_image_folder(name: str, path: str, test_fraction: float, split_seed: int, n_train: int | None = None,
                      n_test: int | None = None, image_size: int | None = None,
                      classes: list[str] | None = None, get: str | None = None) -> LabelledDataset:
    root = _existing(path, "a folder of images: one subfolder per class, or the images themselves (unlabelled)",
                     get)
    where = f"dataset.path={str(path)!r}"
    if classes is not None:
        raise ValueError(f"dataset.classes={list(classes)}: an image_folder's classes are its folder names; drop "
                         f"dataset.classes (it names integer labels, of npz, idx and hf data)")
    if not root.is_dir():
        raise ValueError(f"{where} is a file; an image_folder dataset is a folder of images (one subfolder per "
                         f"class, or the images themselves)")
    parts = [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]
    found = [[(d.name, f) for d in _subdirs(part) for f in sorted(d.iterdir()) if not f.name.startswith(".")]
             for part in parts]
    files = [[(c, f) for c, f in part if _is_image_file(f)] for part in found]
    loose = [[f for f in sorted(part.iterdir()) if f.is_file() and not f.name.startswith(".")] for part in parts]
    in_folders = [f"{c}/{f.name}" for part in found for c, f in part if not _is_image_file(f)]
    if not any(files) and any(map(_is_image_file, sum(loose, []))):  # images, no class folder: unlabelled
        _say_skipped(in_folders + [f.name for part in loose for f in part if not _is_image_file(f)], where)
        loose = [[f for f in part if _is_image_file(f)] for part in loose]
        x = _stack([_read_image(f, where) for part in loose for f in part], image_size, where)
        is_test = np.array([i == 1 for i, part in enumerate(loose) for _ in part]) if len(parts) == 2 else None
        return labelled(name, where, x, None, is_test=is_test, **_common(test_fraction, split_seed, n_train, n_test))
    _say_skipped(in_folders + [f.name for part in loose for f in part], where)  # files beside the class folders
    # a class folder of a part that holds no image (read from the listing above, not the disk again)
    empty = sorted({name for _, name in {(i, d.name) for i, part in enumerate(parts) for d in _subdirs(part)}
                    - {(i, c) for i, part in enumerate(files) for c, _ in part}})
    if empty and any(files):
        raise ValueError(f"{where}: class folder{'s' * (len(empty) > 1)} {', '.join(empty[:5])} "
                         f"hold{'s' * (len(empty) == 1)} no images; add images or remove "
                         f"{'them' if len(empty) > 1 else 'it'} (every class folder is a class)")
    classes = sorted({c for part in files for c, _ in part})
    if len(classes) < 2:
        raise ValueError(f"{where} holds {len(classes)} class folder{'s' if len(classes) != 1 else ''} "
                         f"({', '.join(classes) or 'none'}); an image_folder dataset needs one subfolder per class, "
                         f"at least 2, or only images (unlabelled, for label-free metrics)")
    images = [_read_image(f, where) for part in files for _, f in part]
    x = _stack(images, image_size, where)
    y = np.array([classes.index(c) for part in files for c, _ in part])
    is_test = np.array([i == 1 for i, part in enumerate(files) for _ in part]) if len(parts) == 2 else None
    return labelled(name, where, x, y, classes=classes, is_test=is_test,
                    **_common(test_fraction, split_seed, n_train, n_test))


def _is_image_file(path: Path) -> bool:
    """Images are told by extension, as torchvision's ImageFolder tells them: a README.txt or Thumbs.db in a
    class folder is skipped, never a reason to refuse the whole folder."""
    return path.is_file() and has_file_allowed_extension(path.name, IMG_EXTENSIONS)


def _say_skipped(names: list[str], where: str) -> None:
    if names:
        log.warning("%s: skipped %d file%s without an image extension (%s%s); images end in %s", where, len(names),
                    "s" * (len(names) > 1), ", ".join(names[:3]), ", ..." * (len(names) > 3), " ".join(IMG_EXTENSIONS))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _read_image(path: Path, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: an image that large is refused like a bomb
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return _chw(im, f"{where}: {path.parent.name}/{path.name}")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"{where}: cannot read {path.parent.name}/{path.name} as an image "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


# Modes deeper than 8 bits, read at their depth as float32 in [0, 1] from the mode's range (never clipped to 8
# bits: ``convert("L")`` turns every 16-bit value above 255 into white). Pillow opens 16-bit grey PNG and TIFF as
# I;16*, 32-bit integer TIFF as I (read over [0, 2**31 - 1]: negative values are refused) and float TIFF as F
# (taken as pixel units [0, 1]). Pillow has no 16-bit colour mode: 16-bit RGB arrives as 8-bit RGB (its high byte).
DEEP_RANGES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 2.0 ** 31 - 1, "F": 1.0}


def _chw(im, name: str = "image") -> np.ndarray:
    """A PIL image as [C, H, W]: 8-bit modes as uint8 (grey modes one channel, everything else RGB, alpha
    dropped); deeper grey modes as float32 in [0, 1] (``DEEP_RANGES``)."""
    if im.mode in DEEP_RANGES:
        a = np.asarray(im).astype(np.float64)
        top = DEEP_RANGES[im.mode]
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > top:
            raise ValueError(f"{name} (mode {im.mode}) holds values in [{a.min():g}, {a.max():g}], outside the "
                             f"mode's range [0, {top:g}]" + ("; float images must hold pixel units [0, 1] (or use "
                                                             "dataset=npz with dataset.value_range)"
                                                             if im.mode == "F" else ""))
        return (a / top).astype(np.float32)[None]
    a = np.asarray(im.convert("L") if im.mode in ("1", "L", "LA") else im.convert("RGB"))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _stack(images: list[np.ndarray], image_size: int | None, where: str) -> np.ndarray:
    """[N, C, H, W] of images read one by one: grey ones repeated to RGB where any is colour, all float32 in
    [0, 1] where any is deeper than 8 bits; with ``image_size`` each resized to a square of that side, else all
    must share one size."""
    if not images:
        raise ValueError(f"{where}: no images")
    colour = any(im.shape[0] == 3 for im in images)
    deep = any(im.dtype != np.uint8 for im in images)
    images = [np.repeat(im, 3, 0) if colour and im.shape[0] == 1 else im for im in images]
    if deep:
        images = [im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im for im in images]
        brightest = max(float(im.max()) for im in images)
        if brightest <= 1 / 255:
            log.warning("%s: the images deeper than 8 bits use under 1/255 of their mode's range (brightest %.2g "
                        "in [0, 1]): they reach the model almost black; save them over their mode's full range",
                        where, brightest)
    if image_size is not None:
        side = int(image_size)
        if side <= 0:
            raise ValueError(f"dataset.image_size={image_size!r} must be a positive integer or null")
        return np.stack([im if im.shape[1:] == (side, side) else _resize(im, side) for im in images])
    sizes = {im.shape[1:] for im in images}
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise ValueError(f"{where}: images differ in size ({a[0]}x{a[1]}, {b[0]}x{b[1]}, ...); set "
                         f"dataset.image_size=N to resize each to N x N on load")
    return np.stack(images)


def _resize(im: np.ndarray, side: int) -> np.ndarray:
    """One [C, H, W] image resized to side x side, in its own dtype (uint8 rounded, float32 in [0, 1])."""
    scale = 255.0 if im.dtype == np.uint8 else 1.0
    x = resize(torch.tensor(im, dtype=torch.float32)[None] / scale, (side, side))[0].clamp(0, 1)
    return (x * 255.0).round().to(torch.uint8).numpy() if im.dtype == np.uint8 else x.numpy()


def read_npz(name: str, path: str, test_fraction: float, split_seed: int, n_train: int | None = None,
             n_test: int | None = None, value_range=None, classes: list[str] | None = None,
             get: str | None = None) -> LabelledDataset:
    file = _existing(path, "an .npz file with arrays x (images) and y (labels)", get)
    where = f"dataset.path={str(path)!r}"
    arrays, key = {}, None
    try:
        with np.load(file, allow_pickle=False) as z:
            for key in z.files:
                arrays[key] = z[key]
    except ValueError as err:
        if key is None:  # numpy falls back to unpickling a file that is no zip archive: not an npz at all
            raise ValueError(f"{where}: cannot read it as an .npz file (it is not a zip archive of arrays; write it "
                             f"with numpy.savez)") from None
        if "allow_pickle" not in str(err):
            raise ValueError(f"{where}: cannot read it as an .npz file (ValueError: {str(err).splitlines()[0]})") from None
        # pickles are never loaded (they run code): an object array, such as a list of strings, is refused
        raise ValueError(f"{where}: array {key!r} holds Python objects, which are never unpickled; store it with a "
                         f"plain dtype: np.array(labels, dtype=str) for string labels, integers, or numbers") from None
    except Exception as err:
        raise ValueError(f"{where}: cannot read it as an .npz file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(f"{where} has no array {key!r} (it has: {', '.join(sorted(arrays)) or 'none'}); an npz "
                             f"dataset needs x (images) and y (integer labels), and may have split ('train'/'test')")
    x = _channels_first(arrays["x"], where)
    is_test = None
    if "split" in arrays:
        split = np.asarray(arrays["split"]).astype(str).reshape(-1)
        bad = sorted(set(split) - {"train", "test"})
        if bad or len(split) != len(x):
            raise ValueError(f"{where}: array 'split' must hold 'train' or 'test' for each of the {len(x)} images "
                             f"(got {len(split)} values{', e.g. ' + repr(bad[0]) if bad else ''})")
        is_test = split == "test"
    if classes is None and "classes" in arrays:
        classes = [str(c) for c in arrays["classes"]]
    return labelled(name, where, x, arrays["y"], classes=classes, is_test=is_test, value_range=value_range,
                    **_common(test_fraction, split_seed, n_train, n_test))


def _channels_first(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise ValueError(f"{where}: x has shape {list(x.shape)}; expected images [N, H, W], [N, C, H, W] or "
                     f"[N, H, W, C] with C = 1 (grey) or 3 (RGB)")


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
             ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}


def read_idx_file(path: Path) -> np.ndarray:
    """One IDX file (LeCun's format, optionally gzipped): magic ``0 0 type ndim``, big-endian int32 sizes, data.
    (torchvision's reader reads no .gz and asserts instead of saying what is wrong.)"""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or not 1 <= raw[3] <= 4:
        raise ValueError(f"{path.name} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_TYPES[raw[2]])
    want = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != want:
        raise ValueError(f"{path.name}: header says {dims} ({want} bytes of data), the file holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(name: str, path: str, test_fraction: float, split_seed: int, n_train: int | None = None,
             n_test: int | None = None, classes: list[str] | None = None, get: str | None = None) -> LabelledDataset:
    root = _existing(path, "a folder with the IDX files of MNIST, Fashion-MNIST or KMNIST", get)
    where = f"dataset.path={str(path)!r}"
    arrays = {}
    for key, stem in IDX_FILES.items():
        found = [root / f"{stem}{ext}" for ext in ("", ".gz") if (root / f"{stem}{ext}").is_file()]
        if not found:
            raise ValueError(f"{where} has no {stem}[.gz]; an idx dataset needs "
                             f"{', '.join(IDX_FILES.values())} (each optionally .gz)")
        try:
            arrays[key] = read_idx_file(found[0])
        except (OSError, EOFError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
    x = np.concatenate([arrays["train", "images"], arrays["test", "images"]])
    y = np.concatenate([arrays["train", "labels"], arrays["test", "labels"]])
    if x.ndim != 3:
        raise ValueError(f"{where}: the image files hold arrays of {x.ndim - 1} dimensions per item; expected H x W")
    if len(arrays["train", "images"]) != len(arrays["train", "labels"]):
        raise ValueError(f"{where}: {len(arrays['train', 'images'])} train images but "
                         f"{len(arrays['train', 'labels'])} train labels")
    is_test = np.arange(len(x)) >= len(arrays["train", "images"])
    return labelled(name, where, x[:, None], y, classes=classes, is_test=is_test,
                    **_common(test_fraction, split_seed, n_train, n_test))


def read_hf(name: str, path: str, test_fraction: float, split_seed: int, n_train: int | None = None,
            n_test: int | None = None, image_key: str = "image", label_key: str = "label",
            image_size: int | None = None, classes: list[str] | None = None,
            get: str | None = None) -> LabelledDataset:
    root = _existing(path, "a directory written by datasets' save_to_disk", get)
    where = f"dataset.path={str(path)!r}"
    try:
        import datasets
    except ImportError:
        raise ValueError("dataset=hf needs Hugging Face datasets: pip install 'synbench[datasets]'") from None
    try:
        ds = datasets.load_from_disk(str(root))
    except Exception as err:
        raise ValueError(f"{where}: not a save_to_disk directory ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds and "test" in ds:
            parts = [ds["train"], ds["test"]]
        elif len(ds) == 1:
            parts = list(ds.values())
        else:
            raise ValueError(f"{where} has splits {', '.join(ds)}; expected train and test, or a single split")
    else:
        parts = [ds]
    features = parts[0].features
    for key, what in ((image_key, "image_key"), (label_key, "label_key")):
        if key not in features:
            raise ValueError(f"{where} has no column {key!r} (dataset.{what}); its columns: {', '.join(features)}")
    label_feature = features[label_key]
    if classes is None and hasattr(label_feature, "names"):
        classes = list(label_feature.names)
    images, labels, is_test = [], [], []
    for i, part in enumerate(parts):
        for row in part:
            images.append(_hf_image(row[image_key], where))
            labels.append(row[label_key])
            is_test.append(i == 1)
    return labelled(name, where, _stack(images, image_size, where), np.asarray(labels), classes=classes,
                    is_test=np.array(is_test) if len(parts) == 2 else None,
                    **_common(test_fraction, split_seed, n_train, n_test))


def _hf_image(value, where: str) -> np.ndarray:
    """A PIL image or an array of a ``datasets`` row as [C, H, W] uint8."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return _chw(value)
    a = np.asarray(value)
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: images of dtype {a.dtype}; the hf reader takes 8-bit images (PIL or uint8 arrays)")
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

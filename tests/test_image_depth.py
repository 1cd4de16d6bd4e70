"""Images are read as they are: 16-bit, 32-bit integer and float images at their depth, never clipped to 8 bits;
pixels that use a sliver of their range are said, not silently read almost black; empty data are one line."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from synbench.data import Split
from synbench.data.readers import read_image_folder, read_npz

SPLIT = dict(test_fraction=0.25, split_seed=0)


def twin_folders(tmp_path, n=8, side=8):
    """The same grey images saved twice: 16-bit (full 0..65535 range) and 8-bit (each value rounded to 8 bits)."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for depth in (16, 8):
            (tmp_path / f"d{depth}" / c).mkdir(parents=True)
        for i in range(n):
            v16 = rng.integers(0, 65536, (side, side)).astype(np.uint16)
            Image.fromarray(v16).save(tmp_path / "d16" / c / f"{i}.png")
            Image.fromarray(np.round(v16 / 257.0).astype(np.uint8)).save(tmp_path / "d8" / c / f"{i}.png")
    return tmp_path / "d16", tmp_path / "d8"


def pixels(ds):
    return torch.cat([ds.take(s, slice(None), "cpu")[0] for s in Split])


def test_16_bit_images_are_read_at_their_depth_and_agree_with_their_8_bit_twin(tmp_path):
    d16, d8 = twin_folders(tmp_path)
    with Image.open(next(d16.glob("a/*.png"))) as im:
        assert im.mode == "I;16"  # the case that convert("L") binarised
    deep, flat = read_image_folder("d16", str(d16), **SPLIT), read_image_folder("d8", str(d8), **SPLIT)
    x16, x8 = pixels(deep), pixels(flat)
    assert x16.dtype == torch.float32 and 0 <= x16.min() and x16.max() <= 1
    assert len(torch.unique(x16)) > 300  # far more than the 2 values (0 and 255) of a clipped read
    # the same pictures: equal within half an 8-bit step (the 8-bit twin's rounding)
    assert (x16 - x8).abs().max() <= 0.5 / 255 + 1e-6
    # what an encoder sees moves within the same bound: a fixed random linear map, Lipschitz in the l-inf norm
    w = torch.randn(x16[0].numel(), 16, generator=torch.Generator().manual_seed(0))
    gap = (x16.flatten(1) @ w - x8.flatten(1) @ w).abs().max()
    assert gap <= 0.5 / 255 * w.abs().sum(0).max() + 1e-4


def test_32_bit_integer_and_float_images(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "i" / c).mkdir(parents=True)
        (tmp_path / "f" / c).mkdir(parents=True)
        for k in range(8):
            v = np.full((4, 4), (k % 4 + 1) * 2 ** 28, dtype=np.int32)
            Image.fromarray(v).save(tmp_path / "i" / c / f"{k}.tiff")
            Image.fromarray(np.full((4, 4), k % 4 / 4, dtype=np.float32)).save(tmp_path / "f" / c / f"{k}.tiff")
    xi = pixels(read_image_folder("i", str(tmp_path / "i"), **SPLIT))
    assert sorted(torch.unique(xi).tolist()) == pytest.approx([(k + 1) * 2 ** 28 / (2 ** 31 - 1) for k in range(4)])
    xf = pixels(read_image_folder("f", str(tmp_path / "f"), **SPLIT))
    assert sorted(torch.unique(xf).tolist()) == [0.0, 0.25, 0.5, 0.75]
    Image.fromarray(np.full((4, 4), 3.0, dtype=np.float32)).save(tmp_path / "f" / "a" / "0.tiff")
    with pytest.raises(ValueError, match=r"a/0\.tiff \(mode F\) holds values in \[3, 3\], outside .*\[0, 1\]") as err:
        read_image_folder("f", str(tmp_path / "f"), **SPLIT)
    assert "\n" not in str(err.value)


def test_masks_of_0_and_1_are_said_and_bools_read_as_0_and_1(tmp_path, caplog):
    y = np.arange(20) % 2
    masks = (np.random.default_rng(0).random((20, 4, 4)) > 0.5)
    np.savez(tmp_path / "int.npz", x=masks.astype(np.int64), y=y)
    with caplog.at_level(logging.WARNING):
        ds = read_npz("int", str(tmp_path / "int.npz"), **SPLIT)
    said = [r.getMessage() for r in caplog.records if "value_range" in r.getMessage()]
    assert len(said) == 1 and "set dataset.value_range=[0, 1]" in said[0] and "0.0039" in said[0]
    assert float(pixels(ds).max()) == pytest.approx(1 / 255)  # read as asked; the warning is the point
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fixed = read_npz("int", str(tmp_path / "int.npz"), value_range=[0, 1], **SPLIT)
    assert float(pixels(fixed).max()) == 1.0 and not caplog.records
    np.savez(tmp_path / "bool.npz", x=masks, y=y)
    assert torch.equal(pixels(read_npz("bool", str(tmp_path / "bool.npz"), **SPLIT)), pixels(fixed))


def test_empty_data_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=r"cannot read it as an \.npz file \(it is not a zip archive"):
        read_npz("text", str(tmp_path / "text.npz"), **SPLIT)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"holds no images \(x has shape \[0, 1, 28, 28\]\)"):
        read_npz("empty", str(tmp_path / "empty.npz"), **SPLIT)
    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(8):
            Image.fromarray(np.full((4, 4), k, np.uint8)).save(root / c / f"{k}.png")
    (root / "c").mkdir()
    with pytest.raises(ValueError, match=r"class folder c holds no images; add images or remove it"):
        read_image_folder("folder", str(root), **SPLIT)
    (root / "c").rmdir()
    for limit, kind in ((4, "DecompressionBombError"), (10, "DecompressionBombWarning")):
        # 16 pixels: over twice the limit (Pillow refuses), or between the limit and twice it (Pillow only warns)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ValueError, match=rf"cannot read a/0\.png as an image \({kind}: ") as err:
            read_image_folder("folder", str(root), **SPLIT)
        assert "\n" not in str(err.value)


def test_a_named_dataset_that_is_not_there_says_the_command_that_writes_it(tmp_path):
    from tests.conftest import make_cfg
    from synbench.config import build

    cfg = make_cfg(tmp_path, "dataset=mnist")
    with pytest.raises(ValueError) as err:
        build(cfg.dataset)
    assert str(err.value) == (f"dataset.path='{tmp_path}/data/mnist.npz' does not exist; python scripts/prepare_mnist.py "
                              f"--out {tmp_path}/data/mnist.npz writes it (dataset.get)")

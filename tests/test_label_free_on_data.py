"""Label-free metrics on the user's own images (issue: RMQM, RankMe and alpha-ReQ run where their papers do,
on data): a job with a dataset logs the mixture and the data versions side by side; the data versions never
read a label (a shuffled-label copy of the data gives the same bytes); the mixture versions are the numbers a
job without a dataset logs; an unlabelled image folder works for them and is refused by downstream."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from synbench import app
from synbench.config import build
from synbench.data import InputTransform, Split
from synbench.data.readers import read_image_folder
from synbench.metrics.spectrum import alpha_req, rankme

pytestmark = pytest.mark.slow
RMQM = ["metrics.rmqm.scale=1.5", "metrics.rmqm.n_points=6", "metrics.rmqm.batch_size=6",
        "metrics.rmqm.noise_levels=4", "metrics.rmqm.pgd_levels=4", "metrics.spectrum.scale=1.5"]
DATA_SIDE = ("rmqm/data/noise", "rmqm/data/pgd", "rmqm/data/noise/D_o", "rmqm/data/pgd/S_p",
             "spectrum/data/rankme", "spectrum/data/alpha_req")
MIXTURE_SIDE = ("rmqm/noise", "rmqm/pgd", "rmqm/noise/D_o", "rmqm/pgd/S_p", "spectrum/rankme", "spectrum/alpha_req")


def write_npz(path, labels):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (40, 10, 10), dtype=np.uint8), y=labels)
    return path


def test_a_job_with_a_dataset_logs_both_versions_and_reads_no_label(cfg_factory, tmp_path):
    labels = np.arange(40) % 4
    shuffled = np.random.default_rng(5).permutation(labels)
    assert (shuffled != labels).any()
    runs = {}
    for name, y in (("data", labels), ("shuffled", shuffled)):
        path = write_npz(tmp_path / f"{name}.npz", y)
        cfg = cfg_factory("metrics=[synbench,rmqm,spectrum]", *RMQM, "dataset=npz", f"dataset.path={path}",
                          "tracking.experiment=label-free-on-data")
        runs[name] = app.run(cfg, tmp_path / name)
    plain = app.run(cfg_factory("metrics=[synbench,rmqm,spectrum]", *RMQM, "tracking.experiment=label-free-on-data"),
                    tmp_path / "plain")["scalars"]
    s, t = runs["data"]["scalars"], runs["shuffled"]["scalars"]
    for key in DATA_SIDE + MIXTURE_SIDE:
        assert key in s and math.isfinite(s[key]), key
        assert s[key] == t[key], key  # labels shuffled, the same images: the same numbers, to the bit
    for key in MIXTURE_SIDE:  # the mixture's numbers do not depend on whether the job has a dataset
        assert s[key] == plain[key], key
    assert s["rmqm/data/noise"] != s["rmqm/noise"] and s["spectrum/data/rankme"] != s["spectrum/rankme"]
    # the data's RankMe and alpha-ReQ, computed here from the encoder on the train images, independently
    cfg = cfg_factory("dataset=npz", f"dataset.path={tmp_path / 'data.npz'}")
    data, encoder = build(cfg.dataset), build(cfg.model).eval()
    transform = InputTransform.between(data.shape, encoder.input_shape, encoder.value_range)
    x, _ = data.take(Split.train, slice(None), "cpu")
    with torch.no_grad():
        z = encoder(transform(x)).double()
    assert s["spectrum/data/rankme"] == pytest.approx(rankme(z, 1e-7), rel=1e-4)
    assert s["spectrum/data/alpha_req"] == pytest.approx(alpha_req(z, 1, None, 1e-10), rel=1e-4)
    saved = json.loads((tmp_path / "data" / "results.json").read_text())
    assert saved["metrics"]["spectrum"]["tables"]["data"]["n"] == data.count(Split.train)


def write_flat_folder(root, n=16):
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8), "L").save(root / f"img_{i:02d}.png")
    (root / "README.txt").write_text("field photos, no labels")
    return root


def test_an_unlabelled_image_folder(cfg_factory, tmp_path, caplog):
    root = write_flat_folder(tmp_path / "unlabelled")
    with caplog.at_level("WARNING"):
        ds = read_image_folder("unlabelled", str(root), test_fraction=0.25, split_seed=0)
    assert not ds.has_labels and ds.num_classes == 0 and len(ds.x) == 16
    assert ds.count(Split.train) == 12 and ds.count(Split.test) == 4 and bool((ds.y == -1).all())
    assert "skipped 1 file without an image extension (README.txt)" in caplog.text
    with pytest.raises(ValueError, match=r"metrics downstream need labels, and dataset\.path=.* holds unlabelled "
                                         r"images; put them in one subfolder per class") as err:
        app.run(cfg_factory("metrics=[downstream]", "dataset=image_folder", f"dataset.path={root}",
                            "dataset.test_fraction=0.25"), tmp_path / "refused")
    assert "\n" not in str(err.value)
    s = app.run(cfg_factory("metrics=[synbench,spectrum]", "metrics.spectrum.scale=1.5", "dataset=image_folder",
                            f"dataset.path={root}", "dataset.test_fraction=0.25",
                            "tracking.experiment=label-free-on-data"), tmp_path / "job")["scalars"]
    assert math.isfinite(s["spectrum/data/rankme"]) and s["spectrum/data/rankme"] >= 1

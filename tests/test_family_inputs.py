"""The family's bad inputs as a user meets them: ``scripts/train_family.py`` on small or wrong data and bad
settings, and ``python -m synbench model=family`` with a name, domain or checkpoint that is not there. Each ends
in one line naming the bad value and what is valid (exit status 1, no traceback), within a timeout."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synbench.encoders.family import DATA
from tests.test_job_inputs import synbench

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def images(path: Path, shape=(28, 28), n: int = 40, labels: bool = True) -> Path:
    """``n`` seeded uint8 images with labels 0..9; no split array, so 80% (32) train: under a batch of 64."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, (n, *shape), dtype=np.uint8)}
    if labels:
        arrays["y"] = np.arange(n) % 10
    np.savez(path, **arrays)
    return path


def train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "scripts/train_family.py", "--out", str(tmp_path / "out"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_train_split_smaller_than_a_batch_trains(tmp_path):
    """32 train images under batches of 64 (SimCLR: 64 pairs) used to loop forever: now one whole-split batch a
    step (a hang fails here as a timeout)."""
    data = images(tmp_path / "small.npz")
    proc = train(tmp_path, "--data", str(data), "--members", "space29_mlp_s0,simclr_sweep10_s0", "--steps-scale", "0.01")
    assert proc.returncode == 0, proc.stderr
    for member in ("space29_mlp_s0", "simclr_sweep10_s0"):
        assert (tmp_path / "out" / "mnist" / f"{member}.safetensors").is_file()


@pytest.mark.parametrize("scale", ["inf", "nan", "-inf"])
def test_a_non_finite_steps_scale_is_one_line(tmp_path, scale):
    data = images(tmp_path / "d.npz")
    line = one_line(train(tmp_path, "--data", str(data), "--members", "space29_mlp_s0", f"--steps-scale={scale}"))
    assert line.startswith(f"train_family: error: --steps-scale {scale} ") and "finite number > 0" in line


@pytest.mark.parametrize("kind, words", [
    ("no_y", ["has no array 'y'", "(it has: x)", "y (integer labels)"]),
    ("rgb", ["holds 3x28x28 images", "1x28x28 grey"]),
    ("32px", ["holds 1x32x32 images", "1x28x28 grey"]),
    ("missing", ["does not exist", "an .npz with x (images) and y (labels)"]),
    ("not_npz", ["is not an .npz file", "an .npz with x (images) and y (labels)"]),
])
def test_bad_data_is_one_line(tmp_path, kind, words):
    path = tmp_path / f"{kind}.npz"
    if kind == "no_y":
        images(path, labels=False)
    elif kind == "rgb":
        images(path, shape=(28, 28, 3))
    elif kind == "32px":
        images(path, shape=(32, 32))
    elif kind == "not_npz":
        path.write_text("not an archive\n")
    line = one_line(train(tmp_path, "--data", str(path), "--members", "space29_mlp_s0", "--steps-scale", "0.01"))
    assert line.startswith(f"train_family: error: --data {path} ")
    for word in words:
        assert word in line, line
    assert not (tmp_path / "out" / "mnist").exists()  # nothing trained, nothing written


def job_line(tmp_path: Path, *overrides: str) -> str:
    """The job's refusal, checked before any MLflow store exists (one would log its creation to stderr)."""
    line = one_line(synbench(tmp_path, "model=family", *overrides))
    assert not (tmp_path / "mlflow").exists()
    return line


def test_a_name_outside_the_family_lists_the_recipes(tmp_path):
    line = job_line(tmp_path, "model.name=resnet_s0")
    assert line.startswith("synbench: error: model.name='resnet_s0' is not a member of the family")
    assert all(r in line for r in ("space00_cnn to space35_mlp", "random_vit", "simclr_sweep00 to simclr_sweep23",
                                   "<recipe>_s<seed> with seed 0 or 1", "python -m synbench.report.design"))
    assert "does not exist" not in line  # not the checkpoint's generic message


def test_a_domain_outside_the_family_lists_the_domains(tmp_path):
    line = job_line(tmp_path, "model.module.domain=cifar10")
    assert line == ("synbench: error: model.module.domain='cifar10' is not a family's domain; valid: mnist, "
                    "fashion_mnist")


@pytest.mark.parametrize("domain", ["mnist", "fashion_mnist"])
def test_an_untrained_member_says_how_to_train_it(tmp_path, domain):
    line = job_line(tmp_path, "model.name=space13_cnn_s1", f"model.module.domain={domain}")
    checkpoint = tmp_path / "family" / domain / "space13_cnn_s1.safetensors"
    assert f"model.name='space13_cnn_s1' of the {domain} family is not trained yet" in line
    assert f"model.checkpoint='{checkpoint}' does not exist" in line
    assert f"python scripts/train_family.py --domain {domain} --out {tmp_path / 'family'} " in line
    assert "--members space13_cnn_s1" in line
    # the data step only where train_family.py's default data are missing
    prepare = "python scripts/prepare_mnist.py, then" if domain == "mnist" else "dataset-fashion-mnist, then"
    assert (prepare in line) == (not DATA[domain].exists()), line

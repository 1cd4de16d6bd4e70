"""The validity study's family is the pre-registered design (synbench/encoders/family.py, scripts/train_family.py):
every drawn recipe builds at its feature width, trains (each objective's loss falls on real MNIST), is seeded (the
same bytes twice), shares its untrained init across domains, and a checkpoint trained from anything else (an
older family, a shorter quick run) is retrained, never reused, and refused by a job in one line."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from synbench.data import Split
from synbench.encoders import family
from synbench.encoders.base import EncoderError
from synbench.preregistration import load, members
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parent.parent


def trainer():
    return load_script("train_family")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """MNIST as scripts/prepare_mnist.py writes it (the repository's copy when there is one)."""
    if family.DATA["mnist"].is_file():
        return family.DATA["mnist"]
    out = tmp_path_factory.mktemp("data") / "mnist.npz"
    subprocess.run([sys.executable, "scripts/prepare_mnist.py", "--out", str(out)], cwd=ROOT, check=True)
    return out


@pytest.fixture(scope="module")
def mnist(npz):
    """2,000 normalised MNIST training images and labels."""
    x, y = trainer().read_domain("mnist", npz).take(Split.train, slice(0, 2000), "cpu")
    return (x - 0.5) / 0.5, y


def test_the_family_is_the_registered_design():
    pre = load()
    assert list(family.RECIPES) == [r["name"] for r in pre["recipes"]]
    assert family.MEMBERS == members(pre) and family.SEEDS == tuple(pre["design"]["seeds"])
    for r in pre["recipes"]:
        recipe = family.RECIPES[r["name"]]
        assert (recipe.architecture, recipe.feature_width, recipe.objective) == (
            r["architecture"], r["feature_width"], r["objective"])
        assert recipe.steps == r["steps"] and recipe.bottleneck == r.get("bottleneck", 0)
        if r["kind"] == "sweep":
            assert (recipe.temperature, recipe.view_strength, recipe.projector_width) == (
                r["temperature"], r["augmentation_strength"], r["projector_width"])
        elif r["kind"] == "space":
            assert recipe.learning_rate == r["learning_rate"] and recipe.label_noise == r["label_noise"]
            assert recipe.view_strength == family.STRENGTH[r["augmentation"]]
    # every experiment that sweeps the family sweeps exactly its registered members
    for name in ("validity_mnist",):
        params = yaml.safe_load((ROOT / "conf" / "experiment" / f"{name}.yaml").read_text())["hydra"]["sweeper"]
        assert params["params"]["model.name"].split(",") == family.MEMBERS


@pytest.mark.parametrize("name", sorted(family.RECIPES))
def test_every_recipe_builds_at_its_width(name):
    recipe = family.RECIPES[name]
    net = recipe.build()
    out = net(torch.rand(3, *family.INPUT_SHAPE))
    assert out.shape == (3, recipe.feature_width) and (out >= 0).all()  # ReLU features
    if recipe.bottleneck:  # trunk, the bottleneck, the feature layer, ReLU: the features see rank <= b
        assert net[1].out_features == recipe.bottleneck == net[2].in_features
        pre = net.double()[:3](torch.rand(64, *family.INPUT_SHAPE, dtype=torch.float64))
        # centred: the bias adds no rank
        assert torch.linalg.matrix_rank(pre - pre.mean(0), rtol=1e-9) <= recipe.bottleneck


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet", "vit"])
@pytest.mark.parametrize("objective,strength", [("supervised", 0.5), ("simclr", 0.5), ("autoencoder", 0.0)])
def test_each_objective_trains_each_architecture(mnist, arch, objective, strength):
    """Its mini-batch loss falls (the last 10 steps' mean at least 10% below the first 10's: a wrong sign or a
    detached head would not) and the trunk moved from its init (the thrown-away head alone did not learn)."""
    x, y = mnist
    recipe = family.Recipe(arch, 32, objective, 200, 2e-3, view_strength=strength)
    net, losses = trainer().train("t", 0, recipe, 200, x, y, "mnist")
    assert len(losses) == 200 and all(map(math.isfinite, losses))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.9 * first, (first, last)
    init, _ = trainer().train("t", 0, recipe, 0, x, y, "mnist")
    assert not torch.equal(net[0].state_dict()[next(iter(init[0].state_dict()))],
                           init[0].state_dict()[next(iter(init[0].state_dict()))])


def test_training_is_seeded_and_inits_are_shared_across_domains(mnist):
    tf = trainer()
    x, y = mnist
    recipe = family.RECIPES["simclr_sweep10"]
    a, _ = tf.train("simclr_sweep10", 1, recipe, 5, x, y, "mnist")
    b, _ = tf.train("simclr_sweep10", 1, recipe, 5, x, y, "mnist")
    c, _ = tf.train("simclr_sweep10", 0, recipe, 5, x, y, "mnist")
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))
    u = {d: tf.train("random_vit", 0, family.RECIPES["random_vit"], 0, x, y, d)[0] for d in family.DOMAINS}
    assert all(torch.equal(p, q) for p, q in zip(u["mnist"].state_dict().values(),
                                                  u["fashion_mnist"].state_dict().values()))


def test_views_scale_with_strength():
    tf = trainer()
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1
    assert torch.equal(tf.views(x, 0.0, torch.Generator().manual_seed(0)), x)
    moved = [float((tf.views(x, s, torch.Generator().manual_seed(0)) - x).abs().mean()) for s in (0.1, 0.5, 1.0)]
    assert moved[0] < moved[1] < moved[2]


def run_trainer(tmp_path, npz, *args):
    return subprocess.run([sys.executable, "scripts/train_family.py", "--out", str(tmp_path), "--data", str(npz),
                           *args], cwd=ROOT, capture_output=True, text=True)


def test_a_checkpoint_from_another_recipe_or_scale_is_retrained_and_refused(tmp_path, npz):
    member = "random_cnn_s0"
    path = tmp_path / "mnist" / f"{member}.safetensors"
    path.parent.mkdir(parents=True)
    # an older family's random_cnn: width 8 channels, 64 features, no record of its recipe
    old = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1))
    save_file(old.state_dict(), str(path), metadata={"member": member})
    with pytest.raises(EncoderError) as err:
        family.load(member, {"member": member, "domain": "mnist"}, str(path))
    line = str(err.value)
    assert "\n" not in line and "was not trained from the registered recipe random_cnn" in line
    assert f"--members {member}" in line
    first = run_trainer(tmp_path, npz, "--members", member)
    assert first.returncode == 0, first.stderr
    assert f"| {member} | 0 |" in first.stdout and "(kept)" not in first.stdout
    record = family.checkpoint_recipe(path)
    assert record["architecture"] == "cnn" and record["steps_run"] == 0
    assert set(load_file(str(path))) == set(family.RECIPES["random_cnn"].build().state_dict())
    assert "(kept)" in run_trainer(tmp_path, npz, "--members", member).stdout  # the same record: kept
    # a quick run's shorter training is not the full recipe's: retrained at the full steps
    trained = "space29_mlp_s0"
    assert run_trainer(tmp_path, npz, "--members", trained, "--steps-scale", "0.1").returncode == 0
    assert family.checkpoint_recipe(tmp_path / "mnist" / f"{trained}.safetensors")["steps_run"] == 10
    again = run_trainer(tmp_path, npz, "--members", trained)
    assert "(kept)" not in again.stdout and f"| {trained} | 100 |" in again.stdout
    assert family.checkpoint_recipe(tmp_path / "mnist" / f"{trained}.safetensors")["steps_run"] == 100

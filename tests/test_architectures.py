"""Every architecture family runs the real job: the feature width is measured, not declared, and a model
that cannot run as asked is refused in one line before any MLflow run exists.

The parametrised list is a cheap CI guard of ``scripts/timm_conformance.py`` (which covers every family): small
members of different families, several of them at a reduced ``model.input_size`` to stay fast on 2 cores, and
at least five whose pooled width differs from timm's ``num_features`` (the pre-logits heads).
"""

import math

import pytest
import timm
import torch
from torch import nn

from synbench import app
from synbench.encoders import Encoder, EncoderError
from synbench.encoders.timm_encoder import load_timm_encoder

# (model, input_size or None for the model's own): one per family
ARCHITECTURES = [
    ("mobilenetv3_small_050", None),  # MobileNetV3: pre-logits 1024 != num_features 288
    ("lcnet_050", None),  # LCNet: pre-logits head
    ("ghostnet_050", None),  # GhostNet: pre-logits head
    ("vgg11", 64),  # VGG: ConvMlp pre-logits 4096 != 512
    ("hgnetv2_b0", 96),  # HGNet: pre-logits head
    ("efficientvit_b0", 96),  # EfficientViT (MIT)
    ("efficientvit_m0", None),  # EfficientViT (MSRA)
    ("convnext_atto", 64),  # ConvNeXt
    ("resnet18", 64),  # ResNet
    ("regnetx_002", 96),  # RegNet
    ("vit_tiny_patch16_224", 64),  # ViT, built for 64 px (img_size)
    ("vit_tiny_r_s16_p8_224", 64),  # ResNet-ViT hybrid
    ("mambaout_femto", 64),  # MambaOut: pre-logits head
    ("levit_128s", None),  # LeViT: runs at its own size only
    ("mobilevit_xxs", 64),  # MobileViT (conv-transformer hybrid)
    ("repghostnet_050", 64),  # RepGhost
]

JOB = ["model=timm", "model.pretrained=false", "mixture.n_train=16", "mixture.n_test=16", "mixture.chunk_size=16",
       "embed.batch_size=32", "mixture.direction=random", "metrics=[synbench]", "cache.enabled=false",
       "tracking.experiment=architectures"]


def width_of(name: str, input_size: int | None) -> int:
    """The pooled width by a direct forward of the bare timm model (an independent count)."""
    try:
        model = timm.create_model(name, num_classes=0, **({"img_size": input_size} if input_size else {}))
    except TypeError:  # architectures without img_size run at any size as they are
        model = timm.create_model(name, num_classes=0)
    side = input_size or timm.models.get_pretrained_cfg(name).input_size[-1]
    with torch.no_grad():
        return model.eval()(torch.zeros(1, 3, side, side)).shape[1]


@pytest.mark.slow
@pytest.mark.parametrize("name, input_size", ARCHITECTURES, ids=[a for a, _ in ARCHITECTURES])
def test_architecture_runs_the_real_job(cfg_factory, tmp_path, name, input_size):
    cfg = cfg_factory(*JOB, f"model.name={name}", f"model.input_size={input_size or 'null'}")
    summary = app.run(cfg, tmp_path / "job")
    assert math.isfinite(summary["scalars"]["synbench/score"])
    assert summary["num_features"] == width_of(name, input_size)
    if input_size is not None:
        assert summary["encoder"]["input_shape"] == [3, input_size, input_size]


def test_the_list_covers_models_whose_declared_width_is_wrong():
    differ = [name for name, _ in ARCHITECTURES if name in ("mobilenetv3_small_050", "lcnet_050", "ghostnet_050",
                                                             "vgg11", "hgnetv2_b0", "mambaout_femto")
              and timm.create_model(name, num_classes=0).num_features != width_of(name, None)]
    assert len(differ) >= 5, differ


def test_the_mobilenetv3_of_the_bug_report_gets_its_measured_width():
    enc = load_timm_encoder("mobilenetv3_small_050", False, None, "model", 0)
    assert enc.num_features == 1024 != enc.backbone.num_features
    with torch.no_grad():
        assert enc(torch.rand(3, *enc.input_shape)).shape == (3, 1024)


def test_input_size_builds_a_vit_for_that_size_and_changes_the_features():
    small = load_timm_encoder("test_vit", False, None, "model", 0, input_size=64)
    assert small.input_shape == (3, 64, 64) and small.identity["input_shape"] == [3, 64, 64]
    assert small.backbone.patch_embed.img_size == (64, 64)
    own = load_timm_encoder("test_vit", False, None, "model", 0, input_size=160)  # its own size: as without
    plain = load_timm_encoder("test_vit", False, None, "model", 0)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(own(x), plain(x))
    assert own.identity == plain.identity


def test_an_architecture_that_cannot_take_the_size_names_the_size_it_runs_at():
    with pytest.raises(EncoderError) as err:
        load_timm_encoder("levit_128s", False, None, "model", 0, input_size=100)
    msg = str(err.value)
    assert msg.startswith("model.input_size=100: 'levit_128s' cannot run at 100x100") and "224x224" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_bad_input_size_is_one_line(size):
    with pytest.raises(EncoderError, match=rf"model.input_size={size!r} must be a positive integer"):
        load_timm_encoder("test_vit", False, None, "model", 0, input_size=size)


class FeatureMap(nn.Module):
    def forward(self, x):
        return x[:, :2]  # [B, 2, H, W]: not pooled


class Pair(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\n(second line)")


@pytest.mark.parametrize("module, needle", [
    (FeatureMap(), "returned a torch.float32 tensor of shape [2, 2, 8, 8]"),
    (Pair(), "returned a tuple"),
    (Boom(), "cannot run on inputs of shape [2, 3, 8, 8]: RuntimeError: mat1 and mat2"),
])
def test_a_module_that_does_not_return_pooled_features_is_refused_in_one_line(module, needle):
    with pytest.raises(EncoderError) as err:
        Encoder(module, (3, 8, 8), [0.5] * 3, [0.5] * 3, {"name": "mine"})
    msg = str(err.value)
    assert needle in msg and "'mine'" in msg and "\n" not in msg


def test_measuring_the_width_leaves_the_global_rng_alone():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    enc = Encoder(net, (3, 2, 2), [0.0] * 3, [1.0] * 3, {"name": "lin"})
    assert torch.equal(torch.rand(3), expected) and enc.num_features == 5

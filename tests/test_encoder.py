"""timm encoders: weights only from where they were asked for, normalisation inside forward, clear errors."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from synbench.encoders import EncoderError
from synbench.encoders.timm_encoder import load_timm_encoder


def load(name="test_vit", pretrained=False, checkpoint=None, normalize="model", init_seed=0):
    return load_timm_encoder(name, pretrained, checkpoint, normalize, init_seed)


def pixels(n=2, seed=0):
    return torch.rand((n, 3, 160, 160), generator=torch.Generator().manual_seed(seed))


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load(init_seed=1)
    after = torch.rand(1)
    b, c = load(init_seed=1), load(init_seed=2)
    assert torch.equal(before, after)
    x = pixels()
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and not torch.allclose(a(x), c(x))
    assert a.identity["weights"] == "random-init:seed=1" and a.num_features == 64
    assert a.input_shape == (3, 160, 160)


def test_normalisation_is_inside_forward_and_selectable():
    enc = load()
    x = pixels()
    with torch.no_grad():
        assert torch.allclose(enc(x), enc.backbone((x - 0.5) / 0.5))
    imnet = load(normalize="imagenet")
    assert torch.allclose(imnet.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    with torch.no_grad():
        assert not torch.allclose(enc(x), imnet(x))


def test_gradients_reach_pixel_space():
    enc = load()
    x = pixels(1).requires_grad_()
    enc(x).norm().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_local_checkpoint_round_trip(tmp_path):
    source = timm.create_model("test_vit", pretrained=False, num_classes=10)
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    enc = load(pretrained=True, checkpoint=str(path))
    source.reset_classifier(0)
    x = pixels()
    with torch.no_grad():
        assert torch.allclose(enc(x), source.eval()((x - 0.5) / 0.5), atol=1e-6)
    assert enc.identity["weights"].startswith("file:sha256:")


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(EncoderError, match=r"model.name='test_vitt' is not a timm model; did you mean test_vit"):
        load("test_vitt")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match=r"model.checkpoint=.*does not exist"):
        load(pretrained=True, checkpoint=str(tmp_path / "nope.safetensors"))


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(path))
    with pytest.raises(EncoderError) as err:
        load(pretrained=True, checkpoint=str(path))
    assert "does not match architecture 'test_vit'" in str(err.value) and "\n" not in str(err.value)


def test_no_weights_offline_is_an_error_not_a_random_model():
    with pytest.raises(EncoderError) as err:
        load(pretrained=True)
    msg = str(err.value)
    assert "model.checkpoint=" in msg and "model.pretrained=false" in msg and "\n" not in msg


def test_bad_normalize_is_rejected():
    with pytest.raises(EncoderError, match="model.normalize='none'"):
        load(normalize="none")

"""The shared embedding pass and its content-addressed cache."""

import torch

from synbench.data import GaussianMixture, Split
from synbench.encoders import Precision, embed_mixture
from synbench.encoders.cache import EmbeddingCache
from synbench.encoders.timm_encoder import load_timm_encoder

N = {Split.train: 24, Split.test: 16}


def setup(init_seed=0):
    enc = load_timm_encoder("test_vit", False, None, "model", init_seed)
    mix = GaussianMixture(shape=enc.input_shape, prior=0.5, noise_std=1.0, mean=0.5, direction="ones",
                          direction_seed=0, lowfreq_res=4, chunk_size=8)
    return enc, mix


def embed(enc, mix, cache=None, batch=16, scales=(0.5, 2.0), seed=0):
    return embed_mixture(enc, mix, list(scales), N, seed, batch, torch.device("cpu"), Precision.auto,
                         cache=cache, progress=False)


def test_shapes_labels_and_batch_size_invariance():
    enc, mix = setup()
    a, b = embed(enc, mix, batch=16), embed(enc, mix, batch=5)
    assert a.z[Split.train].shape == (2, 24, 64) and a.y[Split.test].shape == (2, 16)
    assert torch.equal(a.y[Split.train], b.y[Split.train])
    assert torch.allclose(a.z[Split.train], b.z[Split.train], atol=1e-5)
    # features equal a direct forward of the same pixels
    x, _ = next(mix.stream(0.5, Split.test, 16, 0, 16, "cpu"))
    with torch.no_grad():
        assert torch.allclose(a.z[Split.test][0], enc(x), atol=1e-5)


def test_cache_hits_reuse_scales_and_return_the_same_features(tmp_path):
    enc, mix = setup()
    cache = EmbeddingCache(tmp_path)
    first = embed(enc, mix, cache)
    assert first.images_embedded == 2 * 40
    again = embed(enc, mix, cache)
    assert again.images_embedded == 0
    assert torch.equal(first.z[Split.train], again.z[Split.train])
    # the plan is part of the key: another batch size may compute other last bits, so it is not served these
    assert embed(enc, mix, cache, batch=3).images_embedded == 80
    grown = embed(enc, mix, cache, scales=(0.5, 1.0, 2.0))  # only the new scale is embedded
    assert grown.images_embedded == 40
    assert torch.equal(grown.z[Split.test][[0, 2]], first.z[Split.test])
    assert embed(enc, mix, cache, seed=1).images_embedded == 80
    other_weights, _ = setup(init_seed=5)
    assert embed(other_weights, mix, cache).images_embedded == 80


def test_corrupt_cache_entry_is_a_miss(tmp_path):
    enc, mix = setup()
    cache = EmbeddingCache(tmp_path)
    embed(enc, mix, cache, scales=(0.5,))
    [entry] = list(tmp_path.rglob("*.safetensors"))
    entry.write_bytes(b"garbage")
    redo = embed(enc, mix, cache, scales=(0.5,))
    assert redo.images_embedded == 40 and not list(tmp_path.rglob("*.tmp"))

"""The mixture: seeded bytes, batch-size invariance, the right means, directions and labels."""

import math

import pytest
import torch

from synbench.data import GaussianMixture, Split, mean_direction

SHAPE = (3, 8, 8)


def mixture(**kw):
    args = dict(shape=SHAPE, prior=0.5, noise_std=1.0, mean=0.5, direction="ones", direction_seed=0,
                lowfreq_res=2, chunk_size=16)
    args.update(kw)
    return GaussianMixture(**args)


def collect(mix, n, batch, seed=0, scale=1.0, split=Split.train):
    xs, ys = zip(*mix.stream(scale, split, n, seed, batch, "cpu"))
    return torch.cat(xs), torch.cat(ys)


def test_same_seed_same_bytes_and_batch_size_does_not_matter():
    mix = mixture()
    x1, y1 = collect(mix, 100, 32)
    x2, y2 = collect(mix, 100, 32)
    x3, y3 = collect(mix, 100, 7)  # batches straddle chunk boundaries
    x4, y4 = collect(mix, 100, 1000)  # one batch bigger than n
    assert x1.shape == (100, *SHAPE)
    for x, y in [(x2, y2), (x3, y3), (x4, y4)]:
        assert torch.equal(x1, x) and torch.equal(y1, y)


def test_batches_never_exceed_the_batch_size():
    sizes = [len(y) for _, y in mixture().stream(1.0, Split.train, 100, 0, 24, "cpu")]
    assert sum(sizes) == 100 and max(sizes) <= 24


def test_batches_inside_a_chunk_are_views_of_it():
    """A batch smaller than a chunk costs no copy: the batches cut from one chunk share its storage."""
    batches = [x for x, _ in mixture(chunk_size=16).stream(1.0, Split.train, 48, 0, 4, "cpu")]
    storage = [x.untyped_storage().data_ptr() for x in batches]
    assert len(batches) == 12 and len(set(storage)) == 3  # 4 batches per chunk, one storage each
    assert storage[0] == storage[3] != storage[4]


def test_seed_split_and_scale_each_change_the_draw():
    mix = mixture()
    x, _ = collect(mix, 32, 32)
    assert not torch.equal(x, collect(mix, 32, 32, seed=1)[0])
    assert not torch.equal(x, collect(mix, 32, 32, split=Split.test)[0])
    # another scale: noise is drawn afresh (scales are independent samples, as in the paper)
    other = collect(mix, 32, 32, scale=2.0)[0]
    assert not torch.allclose(x - other, (x - other)[0:1].expand_as(x))


def test_class_means_labels_and_noise_match_the_spec():
    s, n = 1.5, 6000
    mix = mixture(chunk_size=500)
    x, y = collect(mix, n, 1000, scale=s)
    mu = mean_direction("ones", SHAPE, 0, 2).double()
    proj = ((x.double() - 0.5) * mu).flatten(1).sum(1)  # (x - 0.5) . mu ~ N(+-s, 1)
    se = 4 / math.sqrt(n / 2)
    assert abs(proj[y == 1].mean() - s) < se and abs(proj[y == 0].mean() + s) < se
    assert abs(proj[y == 1].std() - 1) < 0.05
    assert abs(y.double().mean() - 0.5) < 4 * math.sqrt(0.25 / n)
    noise = x.double() - 0.5 - (2 * y - 1).double().view(-1, 1, 1, 1) * s * mu
    assert abs(noise.std() - 1) < 0.01 and abs(noise.mean()) < 0.01


def test_prior_and_noise_std_are_honoured():
    x, y = collect(mixture(prior=0.2, noise_std=0.5, chunk_size=500), 5000, 1000, scale=0.0)
    assert abs(y.double().mean() - 0.2) < 4 * math.sqrt(0.16 / 5000)
    assert abs((x.double() - 0.5).std() - 0.5) < 0.01


@pytest.mark.parametrize("kind", ["ones", "random", "lowfreq"])
def test_directions_are_unit_norm_and_seeded(kind):
    mu = mean_direction(kind, SHAPE, 3, 2)
    assert mu.shape == SHAPE and abs(mu.double().norm() - 1) < 1e-6
    assert torch.equal(mu, mean_direction(kind, SHAPE, 3, 2))
    if kind == "ones":
        assert torch.allclose(mu, torch.full(SHAPE, 1 / math.sqrt(math.prod(SHAPE))))
    else:
        assert not torch.equal(mu, mean_direction(kind, SHAPE, 4, 2))


def test_lowfreq_is_smoother_than_random():
    shape = (3, 32, 32)

    def roughness(m):
        return (m[:, 1:, :] - m[:, :-1, :]).pow(2).sum() + (m[:, :, 1:] - m[:, :, :-1]).pow(2).sum()

    assert roughness(mean_direction("lowfreq", shape, 0, 4)) < 0.05 * roughness(mean_direction("random", shape, 0, 4))


def test_unknown_direction_is_a_clear_error():
    with pytest.raises(ValueError, match="mixture.direction='stripes'.*ones, random, lowfreq"):
        mean_direction("stripes", SHAPE, 0, 2)

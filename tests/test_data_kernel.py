"""Data kernels, per-datum tests, the manifold of models, CKA and mutual k-NN (spec: shared/spec/data_kernel.md),
checked against brute-force computations, exact laws and the spec's checks."""

import math

import numpy as np
import pytest
import torch

from synbench.metrics import data_kernel as dk
from synbench.metrics.model_comparison import ComparisonSettings, check_embeddings, compare_embeddings
from synbench.metrics.similarity import linear_cka, mutual_knn


def settings(**kw) -> ComparisonSettings:
    base = dict(k=None, mutual_k=10, reference=None, augment_diagonal=True, d=None, max_dim=30, n_bootstrap=40,
                alpha=0.05, top_changed=5, hist_bins=10, seed=0)
    return ComparisonSettings(**{**base, **kw})


def low_rank(n=400, rank=8, width=48, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=g) @ torch.randn(rank, width, generator=g)


def test_knn_graph_keeps_the_nearest_neighbours():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(60, 5))
    k = 4
    nbrs = dk.nearest_neighbours(torch.as_tensor(y), k, block=16)  # several blocks
    unit = y / np.linalg.norm(y, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    brute = np.argsort(-sim, axis=1)[:, :k]
    np.testing.assert_array_equal(nbrs, brute)  # the k most similar, nearest first (not the farthest)
    a = dk.knn_graph(nbrs).toarray()
    assert (a == a.T).all() and (np.diag(a) == 0).all() and set(np.unique(a)) == {0.0, 1.0}
    assert (a.sum(axis=1) >= k).all()
    for i in range(len(y)):  # every edge is a kNN relation in at least one direction (the OR)
        for j in np.flatnonzero(a[i]):
            assert j in brute[i] or i in brute[j]


def test_augmented_diagonal_is_degree_over_n_minus_one():
    nbrs = dk.nearest_neighbours(low_rank(50), 3)
    a = dk.knn_graph(nbrs)
    aug = dk.augment_diagonal(a).toarray()
    np.testing.assert_allclose(np.diag(aug), a.toarray().sum(axis=1) / 49)
    np.testing.assert_array_equal(aug - np.diag(np.diag(aug)), a.toarray())


@pytest.mark.parametrize("heavy", [1.0, 4.0])
def test_rdpg_sampler_draws_exactly_the_clipped_inner_products(heavy):
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(10, 3))) * 0.25
    x[:2] *= heavy  # heavy=4: rows whose Cauchy-Schwarz bound is large take the exact row-by-row path
    p = np.clip(x @ x.T, 0, 1)
    np.fill_diagonal(p, 0)
    reps = 6000
    freq = sum(dk.sample_rdpg(x, rng).toarray() for _ in range(reps)) / reps
    sd = np.sqrt(p * (1 - p) / reps) + 1e-9
    assert (np.abs(freq - p) / sd).max() < 5
    a = dk.sample_rdpg(x, rng)
    assert (a != a.T).nnz == 0 and a.diagonal().sum() == 0 and set(a.data) <= {1.0}


def test_elbow_finds_the_planted_rank():
    rng = np.random.default_rng(3)
    for rank in (2, 3, 5):
        u, _ = np.linalg.qr(rng.normal(size=(200, rank)))
        v, _ = np.linalg.qr(rng.normal(size=(60, rank)))
        m = u @ np.diag(np.linspace(30, 20, rank)) @ v.T + 0.05 * rng.normal(size=(200, 60))
        assert dk.elbows(np.linalg.svd(m, compute_uv=False), 1) == [rank]
    two_levels = np.r_[[50, 48], [20, 19, 18, 17], rng.uniform(0.5, 1, 30)]
    assert dk.elbows(two_levels, 2) == [2, 6]  # the second elbow: d as the spec chooses it
    assert dk.elbows(np.array([5.0, 1.0]), 2) == [2]  # two singletons have no pooled variance: one group


def test_omnibus_blocks_share_one_frame():
    a = dk.prepare(dk.knn_graph(dk.nearest_neighbours(low_rank(120), 5)), True)
    z1, z2 = dk.omnibus([a, a], 4)
    np.testing.assert_allclose(z1, z2, atol=1e-8)  # the same graph: the same latent positions, no Procrustes
    z = dk.spectral_embedding(a, 4)  # and O = [[A, A], [A, A]] has eigenvalues 2 lambda: Z_i = Z_ASE(A)
    np.testing.assert_allclose(np.abs(z1), np.abs(z), atol=1e-8)


def test_the_omnibus_operator_is_the_omnibus_matrix():
    """Above DENSE_BELOW the omnibus matrix is an operator: its products, and the embedding from it, equal the
    explicit block matrix [[A_i if i == j else (A_i + A_j) / 2]]'s."""
    graphs = [dk.prepare(dk.knn_graph(dk.nearest_neighbours(low_rank(300, seed=s), 5)), True) for s in range(3)]
    built = np.block([[(gi + gj).toarray() / 2 if i != j else gi.toarray() for j, gj in enumerate(graphs)]
                      for i, gi in enumerate(graphs)])
    op = dk.omnibus_operator(graphs)
    v = np.random.default_rng(0).normal(size=(900, 2))
    np.testing.assert_allclose(op @ v[:, 0], built @ v[:, 0], atol=1e-12)
    np.testing.assert_allclose(op.matmat(v), built @ v, atol=1e-12)
    assert 900 >= dk.DENSE_BELOW  # the operator path is the one taken
    z = np.concatenate(dk.omnibus(graphs, 6))
    vals, vecs = np.linalg.eigh(built)
    top = np.argsort(-np.abs(vals))[:6]
    ref = vecs[:, top] * np.sqrt(np.abs(vals[top]))
    np.testing.assert_allclose(z @ z.T, ref @ ref.T, atol=1e-8)  # Z Z^T: free of each column's sign


def test_same_rotated_noisy_and_unrelated_embeddings():
    y = low_rank()
    q, _ = torch.linalg.qr(torch.randn(48, 48, generator=torch.Generator().manual_seed(5)))
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(6)) * y.std() * 0.5
    emb = {"y": y, "same": y.clone(), "rotated": 3.5 * y @ q, "noisy": y + noise,
           "random": torch.randn(400, 32, generator=torch.Generator().manual_seed(7))}
    c = compare_embeddings(emb, settings(reference="y"), progress=False)
    test = {t.other: t for t in c.tests}
    for twin in ("same", "rotated"):
        assert test[twin].distance < 1e-6 and test[twin].fraction_rejected <= 0.01
        assert c.cka[0, c.names.index(twin)] == pytest.approx(1.0, abs=1e-9)
        assert c.mutual_knn[0, c.names.index(twin)] == pytest.approx(1.0)
    assert test["random"].fraction_rejected > 0.5 and test["random"].distance > 0.3
    assert test["rotated"].distance < test["noisy"].distance < test["random"].distance
    assert test["rotated"].fraction_rejected <= test["noisy"].fraction_rejected < test["random"].fraction_rejected
    assert c.mutual_knn[0, c.names.index("random")] < 0.1
    # the matrices: symmetric, zero / one on the diagonal; MDS places the twins on y
    for matrix, diag in ((c.distance, 0.0), (c.cka, 1.0), (c.mutual_knn, 1.0)):
        np.testing.assert_allclose(matrix, matrix.T)
        np.testing.assert_allclose(np.diag(matrix), diag)
    assert np.linalg.norm(c.mds[0] - c.mds[c.names.index("rotated")]) < 1e-6
    # most-changed data come first by p-value
    worst = test["random"]
    assert all(worst.p[i] <= worst.p[j] for i, j in zip(worst.most_changed, worst.most_changed[1:]))
    assert sum(worst.hist_counts) == c.n


def test_p_values_are_not_anti_conservative_under_the_null():
    """H0 exactly: the second graph is a draw from the RDPG of the first's spectral embedding, as the bootstrap
    graphs are; the rejection rate over repeated seeds must stay at or below alpha (plus Monte Carlo slack)."""
    alpha, rates = 0.1, []
    for seed in range(6):
        a1 = dk.knn_graph(dk.nearest_neighbours(low_rank(250, seed=seed), 6))
        ref = dk.prepare(a1, True)
        d = 6
        a2 = dk.sample_rdpg(dk.spectral_embedding(ref, d), np.random.default_rng(100 + seed))
        z1, z2 = dk.omnibus([ref, dk.prepare(a2, True)], d)
        null = dk.bootstrap_null(a1, d, 39, True, seed, progress=False)
        rates.append((dk.p_values(dk.datum_distances(z1, z2), null) < alpha).mean())
    assert np.mean(rates) <= alpha + 0.04, rates


def test_the_threaded_bootstrap_and_comparison_give_the_bytes_of_one_thread():
    """The null's graphs are drawn in order on one thread and solved on several: the same seed must give the same
    bytes whatever the thread count (and the omnibus pairs the same distances)."""
    a = dk.knn_graph(dk.nearest_neighbours(low_rank(700, seed=3), 7))  # 2n over DENSE_BELOW: ARPACK, not eigh
    emb = {f"m{i}": low_rank(350, seed=i) for i in range(4)}
    threads = torch.get_num_threads()
    try:
        out = []
        for n in (1, 3):
            torch.set_num_threads(n)
            out.append((dk.bootstrap_null(a, 5, 7, True, 11, progress=False),
                        compare_embeddings(emb, settings(n_bootstrap=5), progress=False).distance))
    finally:
        torch.set_num_threads(threads)
    assert out[0][0].tobytes() == out[1][0].tobytes()
    assert out[0][1].tobytes() == out[1][1].tobytes()
    assert list(dk.ordered_map(lambda v: v * v, range(20), workers=3)) == [v * v for v in range(20)]


def test_p_values_formula():
    null = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 5.0]])
    np.testing.assert_allclose(dk.p_values(np.array([2.0, 0.5]), null), [3 / 4, 2 / 4])


def test_classical_mds_recovers_planar_points():
    pts = np.random.default_rng(2).normal(size=(6, 2))
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    coords = dk.classical_mds(dist)
    np.testing.assert_allclose(np.linalg.norm(coords[:, None] - coords[None], axis=-1), dist, atol=1e-9)


def test_cka_matches_the_kernel_form_and_its_invariances():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 7))
    y = x @ rng.normal(size=(7, 5)) + 0.3 * rng.normal(size=(80, 5))

    def hsic(k, m):  # Kornblith et al.'s kernel form with K = X X^T, an independent computation
        h = np.eye(len(k)) - 1 / len(k)
        return np.trace(k @ h @ m @ h)

    kx, ky = x @ x.T, y @ y.T
    expected = hsic(kx, ky) / math.sqrt(hsic(kx, kx) * hsic(ky, ky))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    assert linear_cka(x, 4.0 * x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 0.01 * y) == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert 0 < linear_cka(x, rng.normal(size=(80, 5))) < 0.3


def test_mutual_knn_is_about_k_over_n_for_unrelated_embeddings():
    n, k = 1000, 10
    a = dk.nearest_neighbours(torch.randn(n, 16, generator=torch.Generator().manual_seed(0)), k)
    b = dk.nearest_neighbours(torch.randn(n, 16, generator=torch.Generator().manual_seed(1)), k)
    assert mutual_knn(a, a, k) == 1.0
    assert mutual_knn(a, b, k) == pytest.approx(k / (n - 1), abs=0.006)


def test_fixed_d_and_the_same_seed_give_the_same_bytes():
    emb = {"a": low_rank(150), "b": low_rank(150, seed=1)}
    one = compare_embeddings(emb, settings(d=3, n_bootstrap=10), progress=False)
    two = compare_embeddings(emb, settings(d=3, n_bootstrap=10), progress=False)
    assert one.d == 3 and one.elbows == {}
    assert one.tests[0].p.tobytes() == two.tests[0].p.tobytes()
    assert one.distance.tobytes() == two.distance.tobytes()


@pytest.mark.parametrize("names, sizes, kw, message", [
    (["a"], [100], {}, "at least two models"),
    (["a", "b"], [100, 90], {}, "differ in n"),
    (["a", "b"], [100, 100], {"k": 100}, "compare.k=100"),
    (["a", "b"], [100, 100], {"reference": "c"}, "compare.reference='c'"),
    (["a", "b"], [100, 100], {"alpha": 1.5}, "alpha"),
])
def test_bad_input_is_one_line(names, sizes, kw, message):
    with pytest.raises(ValueError, match=message) as err:
        check_embeddings(names, sizes, settings(**kw))
    assert "\n" not in str(err.value)

"""Many models, the same inputs: data-kernel distances and per-datum tests, the manifold of models, and CKA and
mutual k-NN beside them. ``compare_embeddings`` takes named ``[n, D_m]`` embeddings (widths may differ) and
returns every number the comparison app logs; the maths lives in ``data_kernel`` and ``similarity``.

Cost: one kNN search per model (torch, blocked), one omnibus eigenproblem per pair (sparse, 2n x 2n), and
``n_bootstrap`` omnibus eigenproblems per reference graph, drawn once and reused for every model tested
against that reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from synbench.metrics.data_kernel import (bootstrap_null, choose_dimension, classical_mds, datum_distances,
                                          default_k, knn_graph, model_distance, nearest_neighbours, omnibus,
                                          ordered_map, p_values, prepare)
from synbench.metrics.similarity import centred_gram_norm, linear_cka, mutual_knn
from synbench.progress import bar


@dataclass
class ComparisonSettings:
    k: int | None  # data-kernel neighbours; None: ceil(log n)
    mutual_k: int  # neighbours for mutual k-NN alignment
    reference: str | None  # test every model against this one; None: every pair (the first name as reference)
    augment_diagonal: bool
    d: int | None  # embedding dimension; None: Zhu-Ghodsi (second elbow), the largest over the models
    max_dim: int  # eigenvalues the elbow search looks at
    n_bootstrap: int
    alpha: float
    top_changed: int  # how many most-changed data each test reports
    hist_bins: int
    seed: int


@dataclass
class PairTest:
    """The per-datum test of ``other`` against ``reference`` (H0_i: datum i keeps its latent position)."""

    reference: str
    other: str
    distance: float
    t: np.ndarray  # [n] per-datum statistic
    p: np.ndarray  # [n] bootstrap p-values
    fraction_rejected: float  # share of data with p < alpha
    most_changed: list[int]  # smallest p first, then largest T
    hist_counts: list[int]
    hist_edges: list[float]
    rejected_by_class: dict[str, float] = field(default_factory=dict)  # labelled inputs: the share per class

    def add_classes(self, labels: np.ndarray, classes: list[str], alpha: float) -> None:
        """On labelled inputs, the share of each class's data whose test rejects: which kinds of input moved."""
        labels = np.asarray(labels)
        self.rejected_by_class = {name: float((self.p[labels == c] < alpha).mean())
                                  for c, name in enumerate(classes) if (labels == c).any()}


@dataclass
class Comparison:
    names: list[str]
    n: int
    k: int
    d: int
    elbows: dict[str, list[int]]
    distance: np.ndarray  # M x M data-kernel distances
    cka: np.ndarray
    mutual_knn: np.ndarray
    mds: np.ndarray  # M x 2
    tests: list[PairTest]
    rank_correlation: dict[str, float]  # Spearman of each similarity with the distance, over pairs
    seconds: dict[str, float] = field(default_factory=dict)


def check_embeddings(names: list[str], sizes: list[int], s: ComparisonSettings) -> None:
    """One-line errors for what cannot be compared, before any work."""
    if len(names) < 2:
        raise ValueError(f"models={names}: a comparison needs at least two models; add one, "
                         f"e.g. +model@models.other=test_vit")
    if len(set(sizes)) != 1:
        raise ValueError("the models' embeddings differ in n ("
                         + ", ".join(f"{a}: {b}" for a, b in zip(names, sizes)) + "); every model must embed the same inputs")
    n = sizes[0]
    for key, k in (("k", s.k), ("mutual_k", s.mutual_k)):
        if k is not None and not 0 < k < n:
            raise ValueError(f"compare.{key}={k} must be in [1, n-1] with n={n} inputs")
    if s.reference is not None and s.reference not in names:
        raise ValueError(f"compare.reference={s.reference!r} is not one of the models {names}")
    if s.d is not None and not 0 < s.d < n:
        raise ValueError(f"compare.d={s.d} must be in [1, n-1] with n={n} inputs, or null for the elbow")
    if s.max_dim < 2 or s.n_bootstrap < 1 or not 0 < s.alpha < 1 or s.hist_bins < 1 or s.top_changed < 0:
        raise ValueError(f"compare: need max_dim >= 2 (got {s.max_dim}), n_bootstrap >= 1 ({s.n_bootstrap}), "
                         f"0 < alpha < 1 ({s.alpha}), hist_bins >= 1 ({s.hist_bins}), top_changed >= 0 "
                         f"({s.top_changed})")


def tested_pairs(names: list[str], reference: str | None) -> list[tuple[str, str]]:
    if reference is not None:
        return [(reference, m) for m in names if m != reference]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def compare_embeddings(embeddings: dict[str, torch.Tensor], s: ComparisonSettings,
                       progress: bool = True) -> Comparison:
    names = list(embeddings)
    check_embeddings(names, [len(z) for z in embeddings.values()], s)
    n = len(next(iter(embeddings.values())))
    k = s.k if s.k is not None else min(default_k(n), n - 1)
    clock = {}

    t0 = time.perf_counter()
    nbrs = {m: nearest_neighbours(z, max(k, s.mutual_k)) for m, z in bar(embeddings.items(), "kNN graphs", "model",
                                                                         progress, total=len(embeddings))}
    kernels = {m: knn_graph(v[:, :k]) for m, v in nbrs.items()}
    graphs = {m: prepare(a, s.augment_diagonal) for m, a in kernels.items()}
    clock["knn_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    elbows = {m: choose_dimension(g, s.max_dim)[1] for m, g in graphs.items()} if s.d is None else {}
    d = s.d if s.d is not None else max(e[-1] for e in elbows.values())
    clock["dimension_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    m_count = len(names)
    dist = np.zeros((m_count, m_count))
    blocks = {}
    pairs = tested_pairs(names, None)  # every pair
    tested = set(tested_pairs(names, s.reference))
    oriented = [(a, b) if (a, b) in tested else (b, a) for a, b in pairs]
    joint = ordered_map(lambda pair: omnibus([graphs[pair[0]], graphs[pair[1]]], d), oriented)
    for (ref, other), (z_ref, z_other) in bar(zip(oriented, joint), "omnibus pairs", "pair", progress,
                                              total=len(pairs)):
        i, j = names.index(ref), names.index(other)
        dist[i, j] = dist[j, i] = model_distance(z_ref, z_other)
        if (ref, other) in tested:
            blocks[(ref, other)] = datum_distances(z_ref, z_other)
    clock["omnibus_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    nulls = {}
    tests = []
    for ref, other in tested_pairs(names, s.reference):
        if ref not in nulls:  # the null depends on the reference graph only
            seed = int(np.random.SeedSequence([s.seed, names.index(ref)]).generate_state(1)[0])
            nulls[ref] = bootstrap_null(kernels[ref], d, s.n_bootstrap, s.augment_diagonal, seed, progress,
                                        label=f"bootstrap null of {ref}")
        t = blocks[(ref, other)]
        p = p_values(t, nulls[ref])
        counts, edges = np.histogram(p, bins=s.hist_bins, range=(0.0, 1.0))
        tests.append(PairTest(ref, other, float(dist[names.index(ref), names.index(other)]), t, p,
                              float((p < s.alpha).mean()), np.lexsort((-t, p))[:s.top_changed].tolist(),
                              counts.tolist(), edges.tolist()))
    clock["bootstrap_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    host = {m: z.double().cpu().numpy() for m, z in embeddings.items()}
    grams = {m: centred_gram_norm(x) for m, x in host.items()}
    cka = np.eye(m_count)
    mknn = np.eye(m_count)
    for a, b in pairs:
        i, j = names.index(a), names.index(b)
        cka[i, j] = cka[j, i] = linear_cka(host[a], host[b], grams[a], grams[b])
        mknn[i, j] = mknn[j, i] = mutual_knn(nbrs[a], nbrs[b], s.mutual_k)
    clock["similarity_seconds"] = time.perf_counter() - t0

    upper = np.triu_indices(m_count, 1)
    rank = {"cka_vs_distance": _spearman(cka[upper], dist[upper]),
            "mutual_knn_vs_distance": _spearman(mknn[upper], dist[upper])}
    return Comparison(names, n, k, d, elbows, dist, cka, mknn, classical_mds(dist), tests, rank, clock)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho over model pairs; NaN where it is undefined (fewer than 3 pairs' worth, or a constant)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    return float(stats.spearmanr(x, y)[0])

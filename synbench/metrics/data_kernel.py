"""Data kernels (Duderstadt, Helm & Priebe 2023): compare models by the kNN graphs of their embeddings of the
same inputs. Formulas: ``shared/spec/data_kernel.md``.

- ``knn_graph``: each datum joined to its k most cosine-similar others (nearest, self excluded), symmetrised by
  OR: binary, hollow, undirected, every degree >= k.
- ``omnibus``: the joint adjacency spectral embedding of M graphs (block (i, j) = (A_i + A_j) / 2, top-d
  eigenpairs by |lambda|, ``Z = U |Lambda|^1/2``); the per-graph blocks share one frame, so rows compare directly.
- ``bootstrap_null`` / ``p_values``: the per-datum test. The null depends only on the reference graph, so a
  comparison draws it once per reference. RDPG graphs are sampled sparsely (``sample_rdpg``): no n x n matrix.
- ``model_distance`` and ``classical_mds``: the population level, a manifold of models.
- ``elbows``: Zhu & Ghodsi's (2006) profile-likelihood elbows, which pick d.
All numpy/scipy on the host (sparse eigensolver; independent graphs on several threads); the kNN search runs
in torch on the embeddings' device.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from synbench.progress import bar

DENSE_BELOW = 600  # matrices smaller than this get a dense eigendecomposition (ARPACK pays off above)
HEAVY = 0.5  # sample_rdpg: pairs whose Cauchy-Schwarz bound exceeds this are drawn exactly, row by row
CANDIDATES = 1 << 20  # sample_rdpg: candidate pairs tested at a time (each holds two rows of x)


def default_k(n: int) -> int:
    """The spec's default neighbourhood size, ceil(log n)."""
    return max(1, math.ceil(math.log(n)))


def nearest_neighbours(y: torch.Tensor, k: int, block: int = 2048) -> np.ndarray:
    """``[n, k]`` indices of each row's k most cosine-similar other rows, nearest first.

    The similarity matrix is symmetric, so each block of it is made once: rows ``I`` against every column from
    ``I`` on serve both ``I``'s rows and, read down its columns, the later rows' (merged into their running top
    k). Half the matrix products of the full matrix; memory stays ``block x n`` whatever n is."""
    n = len(y)
    if not 0 < k < n:
        raise ValueError(f"k={k} neighbours need 0 < k < n={n} inputs")
    y = torch.nn.functional.normalize(y.float(), dim=1)
    best = torch.full((n, k), -math.inf, device=y.device)
    index = torch.zeros((n, k), dtype=torch.long, device=y.device)

    def merge(rows: slice, sim: torch.Tensor, cols: torch.Tensor) -> None:
        vals, pos = torch.cat([best[rows], sim], 1).topk(k, dim=1)
        index[rows] = torch.cat([index[rows], cols], 1).gather(1, pos)
        best[rows] = vals

    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = y[start:stop] @ y[start:].T
        rows = torch.arange(stop - start, device=y.device)
        sim[rows, rows] = -math.inf  # never one's own neighbour
        vals, cols = sim.topk(min(k, sim.shape[1]), dim=1)
        merge(slice(start, stop), vals, cols + start)
        if stop < n:  # the later rows' similarities to this block: its columns
            vals, cols = sim[:, stop - start:].topk(min(k, stop - start), dim=0)
            merge(slice(stop, n), vals.T, cols.T + start)
    return index.cpu().numpy()


def knn_graph(neighbours: np.ndarray) -> sp.csr_matrix:
    """The data kernel: binary, symmetric (OR of the directed kNN lists), hollow."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((np.ones(n * k), (rows, neighbours.ravel())), shape=(n, n))
    a = a.maximum(a.T).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    a.data[:] = 1.0
    return a


def augment_diagonal(a: sp.csr_matrix) -> sp.csr_matrix:
    """``diag(A) = deg / (n - 1)``: the missing self-loop filled with its expected value (the spec's switch)."""
    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).ravel()
    return (a + sp.diags(deg / (n - 1))).tocsr()


def prepare(a: sp.csr_matrix, augment: bool) -> sp.csr_matrix:
    return augment_diagonal(a) if augment else a


def top_eigen(m: sp.spmatrix, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The d eigenpairs of a symmetric matrix largest in |lambda|, in that order. ARPACK's start vector is
    fixed, so the same matrix gives the same bytes."""
    size = m.shape[0]
    if not 0 < d < size:
        raise ValueError(f"d={d} eigenpairs need 0 < d < {size} (the matrix size)")
    if size < DENSE_BELOW:
        vals, vecs = np.linalg.eigh(m.toarray() if sp.issparse(m) else m)
    else:
        v0 = np.random.default_rng(0).standard_normal(size)
        vals, vecs = eigsh(m, k=d, which="LM", v0=v0)
    order = np.argsort(-np.abs(vals), kind="stable")[:d]
    return vals[order], vecs[:, order]


def spectral_embedding(m: sp.spmatrix, d: int) -> np.ndarray:
    """Adjacency spectral embedding ``U |Lambda|^1/2`` (n x d)."""
    vals, vecs = top_eigen(m, d)
    return vecs * np.sqrt(np.abs(vals))


def omnibus(graphs: list[sp.csr_matrix], d: int) -> list[np.ndarray]:
    """Joint embedding of M graphs on the same vertices: one n x d block per graph, all in one frame."""
    n, m = graphs[0].shape[0], len(graphs)
    if m * n < DENSE_BELOW:
        blocks = [[(gi + gj) / 2 if i != j else gi for j, gj in enumerate(graphs)] for i, gi in enumerate(graphs)]
        z = spectral_embedding(sp.bmat(blocks, format="csr"), d)
    else:
        z = spectral_embedding(omnibus_operator(graphs), d)
    return [z[i * n:(i + 1) * n] for i in range(m)]


def omnibus_operator(graphs: list[sp.csr_matrix]) -> LinearOperator:
    """The Mn x Mn omnibus matrix as an operator, never built: its block row i times ``v = (v_1 .. v_M)`` is
    ``A_i v_i + sum_{j != i} (A_i + A_j) v_j / 2 = (A_i S + T) / 2`` with ``S = sum_j v_j`` and
    ``T = sum_j A_j v_j``. One product costs 2M sparse products; the matrix would hold about 3M^2/2 graphs' worth
    of entries, built anew for every pair and every bootstrap graph."""
    n, m = graphs[0].shape[0], len(graphs)

    def product(v: np.ndarray) -> np.ndarray:
        blocks = v.reshape(m, n)
        total = blocks.sum(0)
        shared = sum(g @ b for g, b in zip(graphs, blocks))
        return np.concatenate([(g @ total + shared) / 2 for g in graphs])

    return LinearOperator((m * n, m * n), matvec=product, dtype=np.float64)


def datum_distances(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """The per-datum statistic ``T_i = ||Z_1,i - Z_2,i||``."""
    return np.linalg.norm(z1 - z2, axis=1)


def model_distance(z1: np.ndarray, z2: np.ndarray) -> float:
    """``||Z_1 - Z_2||_F / ||(Z_1 + Z_2) / 2||_F``: 0 for the same graph, scale-free."""
    return float(np.linalg.norm(z1 - z2) / np.linalg.norm((z1 + z2) / 2))


def elbows(values: np.ndarray, count: int = 2) -> list[int]:
    """Zhu & Ghodsi's profile-likelihood elbows of a spectrum: the first splits the sorted |values| into two
    normal groups with a pooled variance at the split that maximises the likelihood; each further elbow repeats
    this on the values after the last one. Returns 1-based sizes (the number of values kept), increasing.
    Checked against the reference library's select_dimension on random and planted spectra (same elbows)."""
    d = np.sort(np.abs(np.asarray(values, dtype=np.float64)))[::-1]
    found, start = [], 0
    while len(found) < count and len(d) - start >= 2:
        start += _first_elbow(d[start:])
        found.append(start)
    return found or [1]


def _first_elbow(d: np.ndarray) -> int:
    """The split q in 1..p maximising the profile likelihood (q = p: one group, no elbow in these values)."""
    p = len(d)
    best, best_q = -math.inf, p
    for q in range(1, p + 1):
        g1, g2 = d[:q], d[q:]
        ss = ((g1 - g1.mean()) ** 2).sum() + (((g2 - g2.mean()) ** 2).sum() if q < p else 0.0)
        dof = p - 2 if q < p else p - 1  # one mean per group
        if dof == 0:
            continue  # two singletons: no variance to speak of
        var = max(ss / dof, 1e-12 * max(d[0] ** 2, 1e-300))  # pooled, floored: equal values still compare
        ll = -0.5 * (p * math.log(2 * math.pi * var) + ss / var)
        if ll > best:
            best, best_q = ll, q
    return best_q


def choose_dimension(graph: sp.csr_matrix, max_dim: int) -> tuple[int, list[int]]:
    """d for a graph: the last of two Zhu-Ghodsi elbows of its top ``max_dim`` |eigenvalues| (the reference
    library's choice); returns (d, elbows)."""
    vals, _ = top_eigen(graph, min(max_dim, graph.shape[0] - 1))
    found = elbows(vals, 2)
    return found[-1], found


def sample_rdpg(x: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """One graph with independent edges ``P(i ~ j) = clip(x_i . x_j, 0, 1)``: symmetric, hollow, binary,
    exactly that law, drawn in O(n + edges) work without an n x n matrix.

    By Cauchy-Schwarz ``p_ij <= u_ij = w_i w_j`` with ``w_i = ||x_i||``. Candidates come from a Poisson process of
    intensity ``s u_ij`` per pair: product form, so drawn as independent endpoint pairs with probability
    proportional to w, with no pair enumerated. Each candidate is kept with probability
    ``r_ij = -log(1 - p_ij) / (s u_ij)``, so a pair ends with no kept candidate with probability
    ``exp(-s u_ij r_ij) = 1 - p_ij``; ``s = -log(1 - u_max) / u_max`` makes ``r_ij <= 1``. For the
    diagonal-augmented kernels here ``w_i^2`` is about deg_i / n, so candidates are within a small factor of the
    edges. Rows whose bound exceeds HEAVY are drawn exactly, pair by pair.
    """
    n = len(x)
    w = np.linalg.norm(x, axis=1)
    heavy = w * w.max() > HEAVY
    rows, cols = [], []
    for i in np.flatnonzero(heavy):  # exact Bernoulli over the row, each pair with a heavy end drawn once
        others = np.flatnonzero(~heavy | (np.arange(n) > i))
        others = others[others != i]
        p = np.clip(x[others] @ x[i], 0.0, 1.0)
        hit = others[rng.random(len(others)) < p]
        rows.append(np.full(len(hit), i))
        cols.append(hit)
    light = np.flatnonzero(~heavy)
    wl = w[light]
    total = wl.sum()
    if len(light) > 1 and total > 0:
        u_max = float(wl.max()) ** 2  # <= HEAVY, since every light row has w_i * max(w) <= HEAVY
        s = -math.log1p(-u_max) / u_max if u_max > 0 else 1.0
        # ordered pairs, each (i, j) with intensity s u_ij / 2: row i has Poisson(s w_i total / 2) of them, each
        # with a partner j drawn in proportion to w_j
        starts = np.repeat(light, rng.poisson(s * wl * total / 2))
        cdf = np.cumsum(wl)
        for at in range(0, len(starts), CANDIDATES):  # a bounded slice of candidates at a time: bounded memory
            i = starts[at:at + CANDIDATES]
            j = light[np.minimum(np.searchsorted(cdf, rng.random(len(i)) * total, side="right"), len(light) - 1)]
            i, j = i[i != j], j[i != j]
            p = np.clip(np.einsum("ij,ij->i", x[i], x[j]), 0.0, HEAVY)  # p <= u_ij <= HEAVY; clip guards rounding
            accept = rng.random(len(p)) * (s * w[i] * w[j]) < -np.log1p(-p)
            rows.append(i[accept])
            cols.append(j[accept])
    r, c = np.concatenate(rows or [np.empty(0, int)]), np.concatenate(cols or [np.empty(0, int)])
    a = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    a = (a + a.T).tocsr()  # both orders of a pair, and repeated candidates, merge into one edge
    a.data[:] = 1.0
    return a


def bootstrap_null(reference: sp.csr_matrix, d: int, n_boot: int, augment: bool, seed: int,
                   progress: bool = True, label: str = "bootstrap") -> np.ndarray:
    """``[B, n]`` null statistics of the per-datum test for one reference graph: ``X = ASE(A_ref)``, then per
    bootstrap ``A_b ~ RDPG(X X^T)`` and ``||Z_ref,i - Z_b,i||`` from the omnibus of [A_ref, A_b]. The graphs are
    drawn and solved on ``ordered_map``'s threads (sampling and sparse products release the GIL)."""
    ref = prepare(reference, augment)
    x = spectral_embedding(ref, d)

    def statistic(stream: np.random.SeedSequence) -> np.ndarray:
        z_ref, z_b = omnibus([ref, prepare(sample_rdpg(x, np.random.default_rng(stream)), augment)], d)
        return datum_distances(z_ref, z_b)

    # a stream of its own per graph: the same seed gives the same graphs whatever the threads
    streams = np.random.SeedSequence(seed).spawn(n_boot)
    null = np.empty((n_boot, reference.shape[0]))
    for b, row in enumerate(bar(ordered_map(statistic, streams), label, "graph", progress, total=n_boot)):
        null[b] = row
    return null


def ordered_map(fn: Callable, items: Iterable, workers: int | None = None) -> Iterator:
    """``map(fn, items)`` on ``workers`` threads (default: torch's intra-op threads, this process's CPU budget),
    results in order, at most two items per worker drawn ahead (memory stays bounded: each item may be a graph).
    The eigensolves here are sparse products and ARPACK steps, which release the GIL; one thread would leave
    every other core idle."""
    workers = workers or torch.get_num_threads()
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def p_values(t: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``p_i = (1 + #{b : null_b,i >= T_i}) / (B + 1)``: never 0, valid (super-uniform) under H0."""
    return (1 + (null >= t[None, :]).sum(axis=0)) / (len(null) + 1)


def classical_mds(dist: np.ndarray, dims: int = 2) -> np.ndarray:
    """Torgerson's classical MDS: coordinates whose Euclidean distances best match ``dist`` (M x dims; axes
    with no positive eigenvalue are 0)."""
    m = len(dist)
    j = np.eye(m) - 1.0 / m
    b = -0.5 * j @ (np.asarray(dist, dtype=np.float64) ** 2) @ j
    vals, vecs = np.linalg.eigh((b + b.T) / 2)
    order = np.argsort(vals)[::-1][:dims]
    coords = vecs[:, order] * np.sqrt(np.clip(vals[order], 0, None))
    if coords.shape[1] < dims:
        coords = np.pad(coords, ((0, 0), (0, dims - coords.shape[1])))
    return coords

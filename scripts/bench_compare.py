#!/usr/bin/env python
"""Benchmark of the model comparison (data kernels, bootstrap tests, CKA, mutual k-NN) at scale.

    python scripts/bench_compare.py                       # n = 2,000 and 20,000; 10 models; B = 100
    python scripts/bench_compare.py --rows 20000:10:100 --device cuda

Each row runs in a fresh process (so peak memory is that row's own) on synthetic embeddings of ten related
"models": one shared 32-d latent, a random linear map per model to ``--width`` features and a model-specific
amount of noise, so that distances and rejections are graded, not trivial. Models embed nothing here: the
embedding pass has its own benchmark (bench_embed.py). Every model is tested against the first one
(``compare.reference``), so there is one bootstrap null of B graphs; all M(M-1)/2 pairs get distances, CKA and
mutual k-NN. Prints one table: n, M, B, seconds per stage and in total, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def synthetic(n: int, models: int, width: int, device: str, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 32, generator=g)
    out = {}
    for m in range(models):
        proj = torch.randn(32, width, generator=g)
        z = latent @ proj
        z = z + (0.1 + 0.25 * m) * z.std() * torch.randn(n, width, generator=g)
        out[f"model_{m}"] = z.to(device)
    return out


def one_row(n: int, models: int, boot: int, width: int, device: str) -> dict:
    from synbench.metrics.model_comparison import ComparisonSettings, compare_embeddings

    emb = synthetic(n, models, width, device)
    s = ComparisonSettings(k=None, mutual_k=10, reference="model_0", augment_diagonal=True, d=None, max_dim=30,
                           n_bootstrap=boot, alpha=0.05, top_changed=20, hist_bins=20, seed=0)
    t0 = time.perf_counter()
    comp = compare_embeddings(emb, s, progress=False)
    total = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    return {"n": n, "M": models, "B": boot, "k": comp.k, "d": comp.d, "seconds": total, "peak_mb": peak_mb,
            **comp.seconds, "rejected_last": comp.tests[-1].fraction_rejected,
            "distance_first_last": float(comp.distance[0, -1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=["2000:10:100", "20000:10:100"], help="n:M:B per row")
    ap.add_argument("--width", type=int, default=256, help="features per model")
    ap.add_argument("--device", default="cpu", help="where the kNN search runs (cpu | cuda)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one row in this process, print JSON
    args = ap.parse_args()
    if args.one:
        n, m, b = map(int, args.one.split(":"))
        print(json.dumps(one_row(n, m, b, args.width, args.device)))
        return
    results = []
    for row in args.rows:
        proc = subprocess.run([sys.executable, __file__, "--one", row, "--width", str(args.width), "--device",
                               args.device], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"row {row} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    import torch

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    print(f"\nModel comparison, synthetic {args.width}-d embeddings, {where}, {torch.get_num_threads()} threads")
    head = ("n", "M", "B", "k", "d", "kNN s", "elbow s", "omnibus s", "bootstrap s", "CKA+mkNN s", "total s",
            "peak MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        print(f"| {r['n']:,} | {r['M']} | {r['B']} | {r['k']} | {r['d']} | {r['knn_seconds']:.1f} | "
              f"{r['dimension_seconds']:.1f} | {r['omnibus_seconds']:.1f} | {r['bootstrap_seconds']:.1f} | "
              f"{r['similarity_seconds']:.1f} | {r['seconds']:.1f} | {r['peak_mb']:,.0f} |")


if __name__ == "__main__":
    main()

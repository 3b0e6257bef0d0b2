#!/usr/bin/env bash
# Download, here (PyPI reachable), the wheels benchmarks/gpu_check.sh installs on a Linux x86_64
# machine without network. The device copy carries at most 64 MiB of ignored paths, so by default
# this fetches only what fits: mlx (no backend), mlx-lm and their pure/small dependencies, for
# the Python versions in PYVERS. The CUDA backend cannot fit (mlx-cuda-12 alone is ~89 MB, its
# NVIDIA libraries ~2.9 GB): with CUDA=1 it is fetched too, for machines where size is no limit.
#
#   scripts/gpu_wheelhouse.sh [DEST]        # DEST defaults to runs/gpu-wheelhouse (git-ignored)
#   PYVERS="3.10 3.11 3.12" CUDA=1 scripts/gpu_wheelhouse.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/runs/gpu-wheelhouse}"
PYVERS="${PYVERS:-3.11}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
PIP="$PY -m pip"
# The versions of the environment this runs in (the ones the tests pass with), else these.
version() { "$PY" -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null || echo "$2"; }
MLX="${MLX:-$(version mlx 0.32.4)}"
MLX_LM="${MLX_LM:-$(version mlx-lm 0.32.2)}"
WANT=("mlx==$MLX" "mlx-lm==$MLX_LM" "pydantic>=2.7,<3" "tokenizers>=0.20" "numpy>=1.26")
[ "${CUDA:-0}" = 1 ] && WANT+=("mlx[cuda12]==$MLX")
mkdir -p "$DEST"
for v in $PYVERS; do
  echo "== wheels for CPython $v (manylinux x86_64)"
  $PIP download --quiet --only-binary=:all: --implementation cp --python-version "$v" \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${WANT[@]}"
done
size_mib() { du -sm "$DEST" | cut -f1; }
echo "wheelhouse $DEST: $(ls "$DEST" | wc -l) wheels, $(size_mib) MiB (the device carries at most 64 MiB)"
ls -S "$DEST" | head -5 | while read -r f; do echo "  largest: $f ($(du -m "$DEST/$f" | cut -f1) MiB)"; done

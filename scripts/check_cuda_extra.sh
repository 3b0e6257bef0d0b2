#!/usr/bin/env bash
# Does `pip install "recipe[cuda]"` resolve on Linux x86_64? A dry run in a throwaway venv (needs
# PyPI; CI runs it on its Linux runner). Prints the CUDA packages pip would install; exit 1 if it
# does not resolve or pulls no MLX CUDA backend.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$VENV")"' EXIT
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
REPORT="$(dirname "$VENV")/report.json"
"$VENV/bin/pip" install --dry-run --quiet --ignore-installed --report "$REPORT" "$ROOT[${EXTRA:-cuda}]"
"$VENV/bin/python" - "$REPORT" "${EXTRA:-cuda}" <<'PY'
import json, sys
names = sorted(i["metadata"]["name"].lower() for i in json.load(open(sys.argv[1]))["install"])
cuda = [n for n in names if n.startswith("mlx-cuda") or n.startswith("nvidia-")]
print(f"recipe[{sys.argv[2]}] resolves:", len(names), "packages; CUDA ones:", ", ".join(cuda))
sys.exit(0 if any(n.startswith("mlx-cuda") for n in names) else 1)
PY

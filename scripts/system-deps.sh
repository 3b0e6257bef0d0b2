#!/usr/bin/env bash
# System packages: OpenBLAS makes MLX's CPU matmuls ~40x faster on Linux (see ../shared/FACTS.md).
# Installed only where we can (Debian/Ubuntu as root); elsewhere this prints the fix and goes on.
set -euo pipefail
[ "$(uname -s)" = "Linux" ] || exit 0
lib=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
[ -e "$lib" ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libopenblas0-pthread >/dev/null
else
  echo "note: install libopenblas0-pthread (apt) for fast CPU training; continuing without it" >&2
fi

#!/usr/bin/env bash
# The GPU check in one prepared run (docs/gpu_check.md). A thin wrapper: the work is in gpu_check.py,
# which needs only Python's standard library, so it runs on the GPU machine before any install.
#   tools/gpu_check.sh prepare                 # here (PyPI reachable): wheels -> .gpu/parts, prints the calls
#   tools/gpu_check.sh stash                   # there, each call but the last
#   tools/gpu_check.sh run --out "$OUT"        # there, the last call
#   tools/gpu_check.sh run --dry-run --out DIR # here, on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" tools/gpu_check.py "$@"

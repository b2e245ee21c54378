#!/usr/bin/env bash
# The GPU proof of issue 13 in one command (bench/gpu.py says what it measures); < 8 minutes
# on one H200. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 "${PYTHON:-python3}" bench/gpu.py "$@"

#!/usr/bin/env bash
# Attention benchmark: speed, memory, decoding and bf16 error of RFA against softmax attention.
# Usage: scripts/benchmark_attention.sh [--quick] [--lengths ...] [--out DIR]  (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m benchmarks.attention "$@"

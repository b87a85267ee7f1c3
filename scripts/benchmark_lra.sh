#!/usr/bin/env bash
# Harness training speed and memory per attention mechanism and length (LRA Table 2 protocol).
# Usage: scripts/benchmark_lra.sh [--attentions ...] [--lengths ...] [--out DIR]  (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m benchmarks.harness "$@"

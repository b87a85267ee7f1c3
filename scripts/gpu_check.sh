#!/usr/bin/env bash
# One-shot GPU check: kernels (fp32, bf16), the LRA harness, decoding, a short ListOps training run
# and, where `import torch, fla` works, PyTorch's SDPA and flash-linear-attention's chunk kernels at
# the same shapes. Writes benchmarks/results/gpu/<device>/results.{json,md} in at most ~8 minutes.
# Usage: scripts/gpu_check.sh [--quick] [--out DIR] [--time-budget-s 480] [--skip-torch]  (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
# JAX may take most of the device memory (the PyTorch part runs first, in its own process).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
for arg in "$@"; do
  if [[ "$arg" == --quick ]]; then
    # Tiny sizes measure nothing: skip XLA's slow optimisation passes, compilation dominates.
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  fi
done
exec "${PYTHON:-.venv/bin/python}" -m benchmarks.gpu_check "$@"

#!/usr/bin/env bash
# One-shot GPU check (benchmarks/gpu_check.py): the targets' rows first, then the harness, the other
# kernel rows, PyTorch's other rows, short training runs and float32, each step in its own process.
# DIR/results.json and DIR/results.md are rewritten after every measurement and the whole log goes
# to DIR/gpu_check.log, so a kill at any moment keeps what was measured.
# Wheels in .whl/ (scripts/gpu_wheels.sh) are installed without network into a temporary folder on
# PYTHONPATH: nothing of the machine's own environment (JAX, PyTorch, numpy) is replaced.
# Runs .venv/bin/python if there is one, else python3 ($PYTHON overrides).
# Usage: scripts/gpu_check.sh --out DIR [--quick] [--time-budget-s 420] [--skip-torch]  (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
out=""
previous=""
for arg in "$@"; do
  [[ "$previous" == --out ]] && out="$arg"
  [[ "$arg" == --out=* ]] && out="${arg#--out=}"
  previous="$arg"
done
if [[ -z "$out" ]]; then
  echo "gpu_check.sh: give --out DIR, the folder for results.json, results.md and the log" >&2
  exit 2
fi
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
trap '' PIPE  # a kill ends tee too: the clean-up below must not die writing to it
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
echo "gpu_check.sh: $(date -u +%FT%TZ), $python ($("$python" --version 2>&1))"
shopt -s nullglob
wheels=(.whl/*.whl)
if (( ${#wheels[@]} )); then
  site="$(mktemp -d)/site"
  trap 'rm -rf "${site%/site}"' EXIT
  trap 'exit 143' TERM INT
  if "$python" -m pip install --quiet --no-index --no-deps --target "$site" "${wheels[@]}"; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check.sh: ${#wheels[@]} wheels from .whl/ in $site"
  else
    echo "gpu_check.sh: installing .whl/ failed; the steps that need those packages record why"
  fi
fi
# JAX may take most of the device memory (each step runs in its own process).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
for arg in "$@"; do
  if [[ "$arg" == --quick ]]; then
    # Tiny sizes measure nothing and compilation dominates: skip XLA's slow optimisation passes and
    # use the CPU's older fusion emitters, which compile faster unoptimised.
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true --xla_cpu_use_fusion_emitters=false"
  fi
done
"$python" -m benchmarks.gpu_check "$@"

#!/usr/bin/env bash
# Rehearses scripts/gpu_check.sh on this machine as it would run on the GPU machine: a Python 3.12
# virtual environment holding only the packages that machine has (CPU JAX here), the tracked tree at
# HEAD plus .whl/ copied to a fresh folder, plain `python3` first on PATH. Runs the check with
# --quick to the end, then again killed after 20 s, and shows what each left in results.json.
# Usage: scripts/gpu_rehearsal.sh [ROOT]   (default /tmp/rfa-gpu-rehearsal; ROOT/venv is reused;
#        PYTHON312=python3.12 by default; needs network for the first environment and for .whl/)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(realpath -m "${1:-/tmp/rfa-gpu-rehearsal}")"
venv="$root/venv"
# The GPU machine's packages (docs/gpu.md); its JAX is the CUDA build of this version.
MACHINE=(jax==0.11.2 jaxlib==0.11.2 flax optax orbax-checkpoint chex absl-py einops tqdm matplotlib
         pillow pyarrow psutil protobuf pytest numpy)
if [[ ! -x "$venv/bin/python3" ]]; then
  "${PYTHON312:-python3.12}" -m venv "$venv.partial"
  "$venv.partial/bin/python3" -m pip install --quiet "${MACHINE[@]}"
  # PyTorch for the CPU, where an index serves it; without it the PyTorch part records why it skipped.
  "$venv.partial/bin/python3" -m pip install --quiet --timeout 20 --retries 1 torch --index-url \
    https://download.pytorch.org/whl/cpu || echo "rehearsal: no CPU PyTorch for Python 3.12 here"
  mv "$venv.partial" "$venv"
fi
[[ -n "$(ls .whl/*.whl 2>/dev/null)" ]] || scripts/gpu_wheels.sh
tree="$root/tree"
rm -rf "$tree" "$root/complete" "$root/killed"
mkdir -p "$tree"
git archive HEAD | tar -x -C "$tree"
cp -r .whl "$tree/.whl"
export PATH="$venv/bin:$PATH"
unset PYTHON PYTHONPATH VIRTUAL_ENV XLA_FLAGS JAX_PLATFORMS
cd "$tree"
echo "rehearsal: $(command -v python3), $(python3 --version), tree $(git -C "$OLDPWD" rev-parse --short HEAD)"
scripts/gpu_check.sh --quick --out "$root/complete"
status=0
timeout 20 scripts/gpu_check.sh --quick --out "$root/killed" || status=$?
echo "rehearsal: the run killed after 20 s exited with $status"
python3 - "$root" <<'PY'
import json, pathlib, sys
for run in ("complete", "killed"):
  path = pathlib.Path(sys.argv[1]) / run / "results.json"
  if not path.exists():
    sys.exit(f"rehearsal FAILED: {path} is missing")
  results = json.loads(path.read_text())
  print(f"{run}: {path}")
  for name, step in results["steps"].items():
    print(f"  step {name}: {step['status']}")
  measured = lambda rows: sum("median_s" in r or "steps_per_sec" in r for r in rows)
  for dtype, part in results.get("kernels", {}).items():
    print(f"  kernels {dtype}: {measured(part['rows'])} rows, {measured(part['decode'])} decoding")
  torch = results.get("torch", {})
  print(f"  torch: {measured(torch.get('rows', []))} rows; {torch.get('skipped', '')}")
  print(f"  harness: {measured(results.get('harness', {}).get('rows', []))} cells; "
        f"training: {measured(results.get('training', []))} runs")
  print("  targets: " + "; ".join(f"({c['item']}) {c['status']}" for c in results["targets"]))
PY

#!/usr/bin/env bash
# Downloads into .whl/ the Python 3.12 manylinux x86_64 wheels that the GPU check needs and a GPU
# machine with JAX, PyTorch and Flax installed (docs/gpu.md, "The GPU machine") lacks; no
# dependencies are resolved: the list is explicit and pinned. Needs network; any Python with pip.
# scripts/gpu_check.sh installs them on the GPU machine without network.
# Usage: scripts/gpu_wheels.sh   (PYTHON=python3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  fla-core==0.6.0         # the PyTorch part: flash-linear-attention's Triton chunk kernels
  ml-collections==1.1.0   # the harness and training parts: task configs
  tensorboardX==2.6.5     # the training part: TensorBoard event files
  grain==0.2.18           # the training part: the data pipeline
  array-record==0.8.6     # grain's dependencies that the machine lacks
  cloudpickle==3.1.3
  portpicker==1.6.0
)
mkdir -p .whl
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --dest .whl "${WHEELS[@]}"
ls -l .whl/*.whl
echo "total: $(du -cb .whl/*.whl | tail -1 | cut -f1) bytes in $(ls .whl/*.whl | wc -l) wheels"

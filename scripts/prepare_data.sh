#!/usr/bin/env bash
# Downloads and prepares the LRA data under DATA_DIR (default: data/):
#   data/lra_release/lra_release/{listops-1000,tsv_data,pathfinder32,pathfinder128}  (the LRA release as
#   the tarball unpacks it, ~7 GB; --config.data_dir=data/lra_release, the inner folder or the task's
#   own folder all work)
#   data/tfds/{imdb_reviews,cifar10}                                       (array_record, read without TF)
# Preparing the tfds datasets needs TensorFlow once; it goes into a separate venv (.venv-prepare) so the
# training environment stays TensorFlow-free. Usage: scripts/prepare_data.sh [lra|tfds|all]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${DATA_DIR:-data}"
what="${1:-all}"
mkdir -p "$DATA_DIR"

if [[ "$what" == lra || "$what" == all ]]; then
  if [[ ! -d "$DATA_DIR/lra_release" ]]; then
    curl -fL --retry 3 -o "$DATA_DIR/lra_release.gz.partial" \
      https://storage.googleapis.com/long-range-arena/lra_release.gz
    mv "$DATA_DIR/lra_release.gz.partial" "$DATA_DIR/lra_release.gz"
    tar xzf "$DATA_DIR/lra_release.gz" -C "$DATA_DIR"
    rm "$DATA_DIR/lra_release.gz"
  fi
  echo "LRA release in $DATA_DIR/lra_release: train with --config.data_dir=$DATA_DIR/lra_release"
fi

if [[ "$what" == tfds || "$what" == all ]]; then
  if [[ ! -x .venv-prepare/bin/tfds ]]; then
    python3 -m venv .venv-prepare
    .venv-prepare/bin/pip install -q tensorflow-cpu tensorflow-datasets==4.9.10 array_record
  fi
  for name in imdb_reviews cifar10; do
    .venv-prepare/bin/tfds build "$name" --file_format=array_record --data_dir="$DATA_DIR/tfds"
  done
  echo "tensorflow-datasets in $DATA_DIR/tfds"
fi

#!/usr/bin/env bash
# Runs one LRA training job on every host of a Cloud TPU VM pod slice (each host a JAX process; the
# processes find each other through the TPU metadata, see lra/parallelism.py).
# Usage: scripts/train_tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#   e.g. scripts/train_tpu_pod.sh my-v4-32 us-central2-b configs/text.py:rfa_gaussian /mnt/shared/text_rfa
# WORKDIR must be one directory that every host sees (checkpoints are written by all processes
# together): an NFS/Filestore mount or a bucket mounted with gcsfuse at the same path on each host.
# config.data_dir must be readable at the same path on every host.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n 2,8p "$0"; exit 2
fi
tpu="$1" zone="$2" config="$3" workdir="$4"; shift 4
cd "$(dirname "$0")/.."
archive="$(mktemp -d)/rfa-jax.tar.gz"
git archive --format=tar.gz -o "$archive" HEAD  # this checkout's committed code goes to every host
gcloud compute tpus tpu-vm scp "$archive" "$tpu":rfa-jax.tar.gz --zone="$zone" --worker=all
setup="mkdir -p rfa-jax && tar xzf rfa-jax.tar.gz -C rfa-jax && cd rfa-jax \
  && python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]==0.10.2'"
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$setup \
  && LRA_MULTIHOST=1 .venv/bin/python -m lra.train --config=$config --workdir=$workdir $*"

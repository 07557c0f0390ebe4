#!/usr/bin/env bash
# Launch blockvid_jax on a Cloud TPU VM or pod slice (every worker runs the same command;
# `jax.distributed.initialize()` finds the other hosts by itself on TPU).
#
#   launch/tpu_vm.sh TPU_NAME ZONE train --config configs/wan_1_3b_causal.py --workdir gs://BUCKET/run1
#   launch/tpu_vm.sh TPU_NAME ZONE sample --config configs/dit.py:wan_1_3b --checkpoint DIR ...
#
# Env: REPO_DIR (path of this repository on the workers, default ~/blockvid_jax), SETUP=1 to
# install it on every worker first (jax[tpu] of the pinned version + the package).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE (train|sample|evaluate) [ARGS...]" >&2
  exit 2
fi
tpu="$1"; zone="$2"; cmd="$3"; shift 3
case "$cmd" in train|sample|evaluate) ;; *) echo "error: unknown command $cmd" >&2; exit 2;; esac
repo="${REPO_DIR:-~/blockvid_jax}"
jax_version=$(grep -E '^jax==' "$(dirname "$0")/../requirements.txt" | cut -d= -f3)
setup=""
if [[ "${SETUP:-0}" == "1" ]]; then
  setup="cd $repo && python3 -m pip install -q -r requirements.txt && python3 -m pip install -q 'jax[tpu]==$jax_version' -e . &&"
fi
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "$setup cd $repo && BLOCKVID_DISTRIBUTED=1 python3 -m blockvid_jax.$cmd$args"

#!/usr/bin/env bash
# Launch blockvid_jax on a Cloud TPU VM or pod slice (every worker runs the same command;
# `jax.distributed.initialize()` finds the other hosts by itself on TPU).
#
#   launch/tpu_vm.sh TPU_NAME ZONE train --config configs/wan_1_3b_causal.py --workdir /mnt/bucket/run1
#   launch/tpu_vm.sh TPU_NAME ZONE sample --config configs/dit.py:wan_1_3b --checkpoint DIR ...
#
# Env:
#   CREATE=ACCELERATOR  create the TPU VM / pod slice first (e.g. v5p-16, v5litepod-8), with
#                       VERSION (runtime image, default tpu-ubuntu2204-base) and SPOT=1 (spot VMs)
#   COPY=1              copy this repository to every worker (REPO_DIR) first
#   SETUP=1             install it on every worker (requirements + jax[tpu] of the pinned version)
#   REPO_DIR            path of the repository on the workers (default ~/blockvid_jax)
#   DRY_RUN=1           print the commands instead of running them
# Checkpoints, metrics, TensorBoard logs and exported params go to --workdir: a path every worker
# sees (e.g. a bucket mounted with gcsfuse; gs:// URLs are not supported yet), where every worker
# writes its own shards. After a preemption, run the same command again: training resumes from the
# newest checkpoint in the work directory.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE (train|sample|evaluate) [ARGS...]" >&2
  exit 2
fi
tpu="$1"; zone="$2"; cmd="$3"; shift 3
case "$cmd" in train|sample|evaluate) ;; *) echo "error: unknown command $cmd (train|sample|evaluate)" >&2; exit 2;; esac
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="${REPO_DIR:-~/blockvid_jax}"
jax_version=$(grep -E '^jax==' "$here/requirements.txt" | cut -d= -f3)

run() {  # run (or print, under DRY_RUN=1) one command
  if [[ "${DRY_RUN:-0}" == "1" ]]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

if [[ -n "${CREATE:-}" ]]; then
  spot=(); [[ "${SPOT:-0}" == "1" ]] && spot=(--spot)
  run gcloud compute tpus tpu-vm create "$tpu" --zone "$zone" --accelerator-type "$CREATE" \
    --version "${VERSION:-tpu-ubuntu2204-base}" "${spot[@]}"
fi
if [[ "${COPY:-0}" == "1" ]]; then
  run gcloud compute tpus tpu-vm scp --recurse "$here" "$tpu:$repo" --zone "$zone" --worker=all
fi
setup=""
if [[ "${SETUP:-0}" == "1" ]]; then
  setup="cd $repo && python3 -m pip install -q -r requirements.txt && python3 -m pip install -q 'jax[tpu]==$jax_version' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html -e . &&"
fi
args=$(printf ' %q' "$@")
run gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "$setup cd $repo && BLOCKVID_DISTRIBUTED=1 python3 -m blockvid_jax.$cmd$args"

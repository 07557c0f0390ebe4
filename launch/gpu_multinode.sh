#!/usr/bin/env bash
# Launch blockvid_jax on GPU hosts: run this script on EVERY host with the same arguments.
#
#   COORDINATOR=host0:1234 NUM_PROCESSES=2 PROCESS_ID=0 launch/gpu_multinode.sh train \
#       --config configs/wan_1_3b_causal.py --workdir /shared/run1
#
# A single host needs none of the variables (all local GPUs form the mesh). Under SLURM,
# jax.distributed.initialize() reads the SLURM variables itself: set BLOCKVID_DISTRIBUTED=1 only.
# --workdir must be shared by all hosts (NFS, or a bucket mounted with gcsfuse); after a failure, run the same command
# again on every host: training resumes from the newest checkpoint. DRY_RUN=1 prints the command.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 (train|sample|evaluate) [ARGS...]" >&2
  exit 2
fi
cmd="$1"; shift
case "$cmd" in train|sample|evaluate) ;; *) echo "error: unknown command $cmd (train|sample|evaluate)" >&2; exit 2;; esac
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
if [[ -n "${COORDINATOR:-}" ]]; then
  export BLOCKVID_DISTRIBUTED=1
  export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="${NUM_PROCESSES:?NUM_PROCESSES is required with COORDINATOR}" \
         JAX_PROCESS_ID="${PROCESS_ID:?PROCESS_ID is required with COORDINATOR}"
fi
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  env | grep -E '^(BLOCKVID_DISTRIBUTED|JAX_COORDINATOR_ADDRESS|JAX_NUM_PROCESSES|JAX_PROCESS_ID|XLA_PYTHON_CLIENT_MEM_FRACTION)=' | sort | sed 's/^/+ export /'
  printf '+ python3 -m blockvid_jax.%s' "$cmd"; printf ' %q' "$@"; printf '\n'
  exit 0
fi
exec python3 -m "blockvid_jax.$cmd" "$@"

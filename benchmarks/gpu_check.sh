#!/bin/bash
# The accelerator check of issue 10 (one short script, < 10 minutes on an H100/H200):
# attention kernel parity (forward + gradients, fp32 and bf16) and the wan_1_3b per-chunk sampling
# time at 480x832 with random weights. Run from the repository root on the device machine:
#   bash benchmarks/gpu_check.sh            # table on stdout, JSON in benchmarks/results/gpu_check.json
#   SMOKE=1 bash benchmarks/gpu_check.sh    # toy sizes, any backend (what CI-less machines can run)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import jax; print('backend:', jax.default_backend(), jax.devices())"
if [ -n "${SMOKE:-}" ]; then
  python benchmarks/gpu_check.py --smoke --out "${OUT:-benchmarks/results}/gpu_check_smoke.json"
else
  python benchmarks/gpu_check.py --out "${OUT:-benchmarks/results}/gpu_check.json"
fi

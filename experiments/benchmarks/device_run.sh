#!/usr/bin/env bash
# The device run, prepared for a lent GPU (Python 3.12 with JAX for CUDA, flax, optax,
# orbax, chex, absl; no network). Before the call, here:
#   bash experiments/benchmarks/device_wheels.sh      # ml_collections into .whl/ (ignored)
# then: run(command="bash experiments/benchmarks/device_run.sh", carry=[".whl"], timeout_s=540)
# and commit $OUT's device_run.json to docs/results/device/.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 experiments/benchmarks/device.py --scale=1b --out="${OUT:-/tmp}/device_run.json"

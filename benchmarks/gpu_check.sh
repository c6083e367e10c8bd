#!/usr/bin/env bash
# The whole GPU check in one prepared run, for a lent GPU machine (see ../shared/GPU.md):
#
#   here, once:    bash benchmarks/gpu_wheels.sh        (fills the git-ignored .whl/)
#   device run:    bash benchmarks/gpu_check.sh         (carry .whl; about four minutes on an H200)
#
# It stops at once, non-zero, where there is no NVIDIA GPU or KvikIO does not import. What it
# runs and what comes back (summary.md and one archive under $OUT): benchmarks/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /dev/nvidia0 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: cannot run here: no NVIDIA GPU (no /dev/nvidia0, no nvidia-smi); this check is for a GPU machine" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1
export GDSLAB_CHECKPOINTS=${GDSLAB_CHECKPOINTS:-/tmp/gdslab-checkpoints}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "gpu_check: no wheels in .whl/ (make them with benchmarks/gpu_wheels.sh and carry .whl)" >&2
  export PYTHONPATH=$PWD
fi
exec python3 benchmarks/gpu_check.py "$@"

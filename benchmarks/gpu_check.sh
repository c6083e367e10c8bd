#!/usr/bin/env bash
# The whole GPU check in one prepared run (see ../shared/GPU.md), for a lent GPU machine:
#
#   device run:  bash benchmarks/gpu_check.sh        (carry .whl with the KvikIO wheels)
#
# 1. `gdslab env` with KvikIO installed: GPU, PCIe link, KvikIO's resolved mode, GDS verdict;
# 2. the `gpu`-marked tests;
# 3. every path against the floors: read floor, pinned and pageable H2D ceilings, cold and warm;
# 4. fill curves (event curve beside sampled device memory) for every available path;
# 5. one rank through torchrun with NCCL, slice and share modes.
# Logs and tables land under $OUT (default results/gpu-check); the short table prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu-check}
SIZE=${SIZE:-4GiB}
mkdir -p "$OUT"
export GDSLAB_CHECKPOINTS=${GDSLAB_CHECKPOINTS:-/tmp/gdslab-checkpoints}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
PY=${PY:-python3}
status=0
step() {  # step NAME COMMAND...: run, keep the log, remember a failure, go on
  local name=$1; shift
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1 || { echo "   failed (exit $?), see $OUT/$name.log"; status=1; }
  tail -n 3 "$OUT/$name.log"
}

step env $PY -m gdslab.cli env --dir "$GDSLAB_CHECKPOINTS"
step gpu-tests $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_loader.py tests/test_profile.py \
  tests/test_dist.py tests/test_verify.py tests/test_probe.py
step floors $PY benchmarks/floor.py --device cuda:0 --size "$SIZE" --shards 4 --repeats 3 --out "$OUT/gpu.md"
step fill-curves $PY benchmarks/fill_curves.py --device cuda:0 --size 2GiB --cache cold --out "$OUT/fill-curves"
CKPT=$($PY -c "from gdslab.synthetic import cached_checkpoint; print(cached_checkpoint('$SIZE', 4))")
step torchrun-nccl $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m gdslab.dist "$CKPT" \
  --modes slice,share --backend nccl --json "$OUT/torchrun.json"

echo
cat "$OUT/env.log" | head -n 40
echo
cat "$OUT/gpu.md" 2>/dev/null
exit $status

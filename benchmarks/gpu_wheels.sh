#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what the GPU machine lacks, for `benchmarks/gpu_check.sh` there
# (see ../shared/GPU.md: it has Python 3.12, CUDA torch, cupy-cuda13x, the cuFile library, numpy,
# matplotlib, safetensors, tqdm and pytest, and no network). Carry `.whl` to the run.
#
# Everything KvikIO 26.10 imports on a clean Python 3.12: kvikio-cu13 and libkvikio-cu13 (from
# ../shared/wheels), rapids-logger (libkvikio loads librapids_logger.so first) and cuda-pathfinder
# (libkvikio's loader finds libcufile with `cuda.pathfinder`; without it, rapids_logger's library
# is never loaded and libkvikio.so fails to load) — numpy and packaging are the machine's. Then
# the notebook stack nbval runs on (nbval, ipykernel, ipywidgets, nvidia-ml-py and their
# pure-Python or manylinux dependencies), downloaded here for CPython 3.12 on x86_64.
# It ends non-zero, naming what is missing, when a wheel KvikIO needs is not there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/wheels/cu13-py312}
mkdir -p .whl
cp "$SHARED"/*.whl .whl/ 2>/dev/null || echo "gpu_wheels: no wheels in $SHARED" >&2
"$PY" -m pip download -q --dest .whl --python-version 3.12 --implementation cp --only-binary=:all: \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  nbval ipykernel ipywidgets nvidia-ml-py "cuda-pathfinder>=1.0" \
  || echo "gpu_wheels: pip download failed (no network to PyPI?): the checks below say what is missing" >&2
# the machine's own pytest stays: drop the copies pip brought along as nbval's dependencies
rm -f .whl/pytest-*.whl .whl/pluggy-*.whl .whl/iniconfig-*.whl .whl/packaging-*.whl
missing=0
for need in "kvikio_cu13-26.10:the kvikio package itself ($SHARED)" \
            "libkvikio_cu13-26.10:libkvikio.so, which kvikio loads at import ($SHARED)" \
            "rapids_logger-:librapids_logger.so, loaded before libkvikio.so ($SHARED)" \
            "cuda_pathfinder-:cuda.pathfinder, with which libkvikio's loader finds libcufile (PyPI: cuda-pathfinder)"; do
  prefix=${need%%:*}
  if ! ls .whl/"$prefix"*.whl >/dev/null 2>&1; then
    echo "gpu_wheels: MISSING ${prefix%-}: ${need#*:}" >&2
    missing=1
  fi
done
ls .whl | wc -l
du -sh .whl
if [ "$missing" != 0 ]; then
  echo "gpu_wheels: KvikIO will not import on the GPU machine without the wheels named above" >&2
  exit 1
fi

#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what the GPU machine lacks, for `benchmarks/gpu_check.sh` there
# (see ../shared/GPU.md: it has Python 3.12, CUDA torch, numpy, matplotlib, safetensors, tqdm and
# pytest, and no network): the KvikIO wheels for CUDA 13 from ../shared/wheels, and the notebook
# stack nbval runs on (nbval, ipykernel, ipywidgets, nvidia-ml-py and their pure-Python or
# manylinux dependencies), downloaded here for CPython 3.12 on x86_64. Carry `.whl` to the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .whl
cp ../shared/wheels/cu13-py312/*.whl .whl/
"$PY" -m pip download -q --dest .whl --python-version 3.12 --implementation cp --only-binary=:all: \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  nbval ipykernel ipywidgets nvidia-ml-py
# the machine's own pytest stays: drop the copies pip brought along as nbval's dependencies
rm -f .whl/pytest-*.whl .whl/pluggy-*.whl .whl/iniconfig-*.whl .whl/packaging-*.whl
ls .whl | wc -l
du -sh .whl

"""Stress: a few hundred randomized loads, every one bit-exact against safetensors.torch.load_file.

Random small checkpoints (random dtypes, scalars, zero-size tensors, odd sizes; one file,
a folder of shards, or shards with an HF index), loaded by every data path this machine's
CPU runs, with random io_size and threads, some of them only a random subset of the
tensors, some with verify=True, and a quarter of them two at a time from two threads.
GDSLAB_SOAK=1 runs 5000 loads over 40 checkpoints, from a fresh seed (printed, to replay a failure
with GDSLAB_STRESS_SEED).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gdslab import Checkpoint, LoadError, datapaths
from gdslab.checkpoint import INDEX_NAME
from gdslab.datapaths.base import TensorRead
from gdslab.loader import load

SOAK = os.environ.get("GDSLAB_SOAK", "") not in ("", "0")
LOADS = 5000 if SOAK else 600
CHECKPOINTS = 40 if SOAK else 12
SEED = int(os.environ.get("GDSLAB_STRESS_SEED", time.time_ns() % 2**31 if SOAK else 20260808))
CPU_PATHS = [info.name for info in datapaths.available("cpu") if info.available]
# Peers and the safetensors library load whole files by name: they take whole tensors only.
SUBSET_PATHS = {"pageable-bounce", "pinned-bounce", "host-direct", "safetensors"}
DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2, torch.complex64,
    torch.uint64, torch.uint32, torch.uint16,
]
# What a peer refuses, with a clear LoadError (checked), instead of loading.
UNSUPPORTED = {"fastsafetensors": {torch.complex64}}
IO_SIZES = [61, 509, 4096, 4099, 65536, 1 << 20]
THREADS = [1, 2, 3, 8]


def random_tensor(rng: random.Random, dtype: torch.dtype) -> torch.Tensor:
    kind = rng.random()
    if kind < 0.1:
        shape: tuple[int, ...] = ()
    elif kind < 0.2:
        shape = tuple(rng.choice([0, rng.randint(1, 9)]) for _ in range(rng.randint(1, 3))) + (0,)
    elif kind < 0.25:  # a bigger one: many io_size chunks, several threads busy
        shape = (rng.randint(100, 700), rng.randint(100, 300))
    else:
        shape = tuple(rng.randint(1, 37) for _ in range(rng.randint(1, 3)))
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = 1
    for d in shape:
        numel *= d
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).to(torch.bool)
    raw = torch.randint(0, 256, (numel * itemsize,), dtype=torch.uint8, generator=g)
    return raw.view(dtype).reshape(shape)


@dataclass
class Sample:
    source: Path
    reference: dict[str, torch.Tensor]


def write_random_checkpoint(rng: random.Random, root: Path) -> Sample:
    tensors = {f"t{k}.{rng.randint(0, 999)}": random_tensor(rng, rng.choice(DTYPES)) for k in range(rng.randint(1, 12))}
    layout = rng.choice(["file", "folder", "index"])
    names = list(tensors)
    rng.shuffle(names)
    if layout == "file":
        path = root.with_suffix(".safetensors")
        save_file(tensors, str(path))
        return Sample(path, load_file(str(path)))
    root.mkdir()
    count = rng.randint(1, min(3, len(names)))
    weight_map, reference = {}, {}
    for k in range(count):
        part = names[k::count]
        shard = f"model-{k + 1:05d}-of-{count:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(root / shard))
        weight_map.update({n: shard for n in part})
        reference.update(load_file(str(root / shard)))
    if layout == "index":
        (root / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return Sample(root, reference)


def raw(tensor: torch.Tensor) -> bytes:
    flat = tensor.reshape(-1) if tensor.dim() else tensor.reshape(1)
    return flat.view(torch.uint8).numpy().tobytes()


def one_load(rng: random.Random, sample: Sample) -> None:
    datapath = rng.choice(CPU_PATHS)
    nbytes = sum(t.nbytes for t in sample.reference.values())
    io_size = rng.choice([n for n in IO_SIZES if nbytes // n < 20_000])  # bounded task count
    threads = rng.choice(THREADS)
    plan = Checkpoint.open(sample.source)
    reads = None
    if datapath in SUBSET_PATHS and rng.random() < 0.2:
        reads = [TensorRead.whole(e) for e in plan.tensors if rng.random() < 0.5]
    knobs = dict(threads=threads, io_size=io_size, reads=reads, verify=rng.random() < 0.2)
    where = f"{datapath} {sample.source.name} io_size={io_size} threads={threads} subset={reads is not None}"
    if UNSUPPORTED.get(datapath, set()) & {t.dtype for t in sample.reference.values()}:
        with pytest.raises(LoadError, match="C64"):
            load(plan, datapath, "cpu", **knobs)
        return
    result = load(plan, datapath, "cpu", **knobs)
    expected = {r.name for r in reads} if reads is not None else set(sample.reference)
    assert set(result.tensors) == expected, where
    for name in expected:
        got, ref = result.tensors[name], sample.reference[name]
        assert (got.dtype, got.shape, got.device.type) == (ref.dtype, ref.shape, "cpu"), f"{where}: {name}"
        assert raw(got) == raw(ref), f"{where}: {name} differs"


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    rng = random.Random(SEED)
    base = tmp_path_factory.mktemp("stress")
    return [write_random_checkpoint(rng, base / f"ckpt{k}") for k in range(CHECKPOINTS)]


def test_randomized_loads_are_bit_exact(samples):
    print(f"stress: {LOADS} loads over {len(samples)} checkpoints, seed {SEED} (GDSLAB_STRESS_SEED)")
    rng = random.Random(SEED + 1)
    threads_before = threading.active_count()
    fds_before = len(os.listdir("/proc/self/fd"))
    done = 0
    while done < LOADS:
        if rng.random() < 0.25:  # two loads at once, from two threads
            pair = [(random.Random(rng.getrandbits(32)), rng.choice(samples)) for _ in range(2)]
            errors: list[BaseException] = []

            def run(args) -> None:
                try:
                    one_load(*args)
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    errors.append(e)

            workers = [threading.Thread(target=run, args=(args,)) for args in pair]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if errors:
                raise errors[0]
            done += 2
        else:
            one_load(rng, rng.choice(samples))
            done += 1
    assert threading.active_count() == threads_before
    assert not [t.name for t in threading.enumerate() if t.name.startswith("gdslab-")]
    assert len(os.listdir("/proc/self/fd")) == fds_before

"""Peer loaders (Run:ai Model Streamer, fastsafetensors) under our protocol, and the comparison benchmark.

Each peer is tested where its package is installed (skipped with the reason otherwise):
bit-exact against `safetensors.torch.load_file` on every dtype, on a mixed file whose
tensors sit at odd offsets and on a multi-shard checkpoint; every tensor owns its memory.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gdslab
from gdslab import datapaths
from gdslab.checkpoint import Checkpoint
from gdslab.datapaths.base import TensorRead
from gdslab.datapaths.peers import owns_memory, package_status
from gdslab.errors import LoadError
from gdslab.synthetic import write_checkpoint

PEERS = ("runai-streamer", "fastsafetensors")


def _info(name: str):
    return {i.name: i for i in datapaths.available("cpu")}[name]


@pytest.fixture(params=PEERS)
def peer(request) -> str:
    info = _info(request.param)
    if not info.available:
        pytest.skip(f"{request.param} unavailable here: {info.reason}")
    return request.param


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """One file, every dtype, sizes that are not multiples of 4 KiB, a scalar and an empty tensor."""
    g = torch.Generator().manual_seed(7)
    tensors = {
        "a.bf16": torch.randn(33, 17, generator=g).to(torch.bfloat16),
        "b.fp16": torch.randn(1001, generator=g).to(torch.float16),
        "c.fp32": torch.randn(3, 5, 7, generator=g),
        "d.int8": torch.randint(-128, 127, (999,), generator=g, dtype=torch.int8),
        "e.int64": torch.randint(0, 1 << 40, (13,), generator=g),
        "f.bool": torch.rand(77, generator=g) > 0.5,
        "g.scalar": torch.tensor(3.5),
        "h.empty": torch.empty(0, 4),
        "i.fp8": torch.randn(129, generator=g).to(torch.float8_e4m3fn),
        "j.uint8": torch.randint(0, 255, (4097,), generator=g, dtype=torch.uint8),
    }
    path = tmp_path_factory.mktemp("mixed") / "mixed.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("sharded"), size="2MiB", shards=3, seed=3)


def _reference(source: Path) -> dict[str, torch.Tensor]:
    files = sorted(source.glob("*.safetensors")) if source.is_dir() else [source]
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _assert_bit_exact(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, expected in want.items():
        tensor = got[name]
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape, name
        assert tensor.device.type == "cpu"
        assert tensor.reshape(-1).view(torch.uint8).tolist() == expected.reshape(-1).view(torch.uint8).tolist() \
            if expected.numel() else tensor.numel() == 0, name


def test_peer_bit_exact_every_dtype(peer, mixed):
    result = gdslab.load(mixed, peer, device="cpu", threads=2, io_size="1MiB")
    _assert_bit_exact(result.tensors, _reference(mixed))
    assert all(owns_memory(t) for t in result.tensors.values())
    assert result.effective.startswith(peer.split("-")[0]) and "cpu" in result.effective


def test_peer_bit_exact_sharded(peer, sharded):
    result = gdslab.load(sharded, peer, device="cpu", threads=3, io_size="2MiB")
    _assert_bit_exact(result.tensors, _reference(sharded))
    assert len(result.files) == 3
    assert all(owns_memory(t) for t in result.tensors.values())
    # each tensor is its own allocation: writing one leaves every other as loaded
    first, second = list(result.tensors.values())[:2]
    before = second.clone()
    first.zero_()
    assert torch.equal(second, before)


def test_peer_loads_a_subset_by_name(peer, sharded):
    ckpt = Checkpoint.open(sharded)
    chosen = [ckpt.tensors[0], ckpt.tensors[-1], ckpt.tensors[len(ckpt.tensors) // 2]]
    result = gdslab.load(ckpt, peer, device="cpu", reads=[TensorRead.whole(e) for e in chosen])
    want = _reference(sharded)
    _assert_bit_exact(result.tensors, {e.name: want[e.name] for e in chosen})


def test_peer_refuses_slices(peer, sharded):
    entry = max(Checkpoint.open(sharded).tensors, key=lambda e: e.nbytes)
    half = entry.nbytes // 2
    sliced = TensorRead(entry.name, entry.file, "uint8", (half,), ((entry.offset, half // 2), (entry.offset + half, half - half // 2)))
    with pytest.raises(LoadError, match="whole tensors"):
        gdslab.load(sharded, peer, device="cpu", reads=[sliced])


def test_runai_gets_our_knobs(sharded):
    if not _info("runai-streamer").available:
        pytest.skip(_info("runai-streamer").reason)
    result = gdslab.load(sharded, "runai-streamer", device="cpu", threads=3, io_size="3MiB")
    assert f"concurrency 3, fs chunk {3 << 20} B" in result.effective
    assert "RUNAI_STREAMER_CONCURRENCY" not in os.environ  # the settings were restored after the load


def test_missing_package_is_unavailable_with_the_reason():
    ok, why = package_status("gdslab_no_such_module", "gdslab-no-such-package")
    assert not ok and "not installed" in why and "pip install gdslab-no-such-package" in why
    listed = {i.name: i for i in datapaths.available("cpu")}
    installed = {"runai-streamer": package_status("runai_model_streamer", "runai-model-streamer")[0],
                 "fastsafetensors": package_status("fastsafetensors", "fastsafetensors")[0]}
    for name, ok in installed.items():
        assert listed[name].available == ok
        assert ok or "not installed" in listed[name].reason


def test_compare_benchmark_tiny(tmp_path):
    """The comparison benchmark end to end at 2 MiB: every contender measured and checked bit-exact."""
    from gdslab.compare import DIRECT, DIRECT_FLOOR, FLOOR, add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "compare.md"
    args = parser.parse_args(["--size", "2MiB", "--shards", "2", "--repeats", "1", "--threads", "2",
                              "--io-size", "1MiB", "--root", str(tmp_path / "ck"), "--out", str(out),
                              "--records", str(tmp_path / "runs.jsonl"), "--no-peer-defaults"])
    assert run(args, "test") == 0
    page = out.read_text()
    assert "Command: `test`" in page and "## Targets" in page
    rows = [line for line in page.splitlines() if line.startswith("| ") and "GB/s" not in line]
    measured = [r for r in rows if r.split("|")[1].strip() in (FLOOR, DIRECT_FLOOR, "host-direct", DIRECT,
                                                                  "safetensors", *PEERS)]
    assert {r.split("|")[1].strip() for r in measured} >= {FLOOR, DIRECT_FLOOR, "host-direct", DIRECT}, page
    for row in measured:
        cells = [c.strip() for c in row.split("|")]
        if cells[1] not in (FLOOR, DIRECT_FLOOR) and "not measured" not in row:
            assert cells[7] == "bit-exact", row
    assert "O_DIRECT 100% of bytes" in page  # the direct contender says O_DIRECT really ran
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) >= 2 * 3

"""KV blocks spilled to storage and restored: bit-exact, timed, and every way a file can be wrong named."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from gdslab import kvspill
from gdslab.errors import DatapathUnavailable
from gdslab.kvcache import Attention
from gdslab.kvspill import BlockShape, KVSpillError, random_blocks, restore, spill

HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")

SMALL = BlockShape(tokens=16, layers=4, kv_heads=2, head_dim=64)  # 32 KiB: whole 4 KiB blocks
ODD = BlockShape(tokens=3, layers=2, kv_heads=1, head_dim=10)  # 240 B: nothing aligned


def test_a_block_is_what_paged_attention_allocates():
    shape = BlockShape.of_model(Attention.of_preset("llama-3.1-405b"), tp=8)
    assert shape.dims == (126, 2, 16, 1, 128)
    assert shape.nbytes == 126 * 2 * 16 * 1 * 128 * 2


@pytest.mark.parametrize("shape", [SMALL, ODD], ids=["aligned", "odd"])
@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "o_direct"])
def test_round_trip_is_bit_exact(tmp_path, shape, direct):
    blocks = random_blocks(shape, 9, seed=3)
    trip = kvspill.round_trip(blocks, tmp_path / "kv.bin", threads=3, direct=direct)
    assert trip.bit_exact
    assert trip.spill.nbytes == trip.cold.nbytes == 9 * shape.nbytes
    assert trip.spill.seconds > 0 and trip.cold.gbps > 0
    assert os.listdir(tmp_path) == ["kv.bin"]
    if direct and shape is SMALL:  # O_DIRECT ran, all of it, or the record says why not
        assert trip.cold.details["direct_share"] == 1.0 or trip.cold.details["direct_note"]
    if shape is ODD:  # unaligned blocks cannot go by O_DIRECT: they go buffered, and say so
        assert trip.cold.details["direct_share"] == 0.0


def test_fp8_blocks_come_back_as_fp8(tmp_path):
    blocks = random_blocks(BlockShape(16, 2, 2, 64, torch.float8_e4m3fn), 4)
    spill(blocks, tmp_path / "kv.bin")
    back = restore(tmp_path / "kv.bin").tensor
    assert back.dtype == torch.float8_e4m3fn and back.shape == blocks.shape
    assert torch.equal(back.view(torch.uint8), blocks.view(torch.uint8))


def test_a_file_cut_short_is_refused_before_reading(tmp_path):
    path = tmp_path / "kv.bin"
    spill(random_blocks(SMALL, 4), path)
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises(KVSpillError, match=r"kv\.bin: cut short: \d+ bytes, its header promises \d+"):
        restore(path)


def test_a_changed_block_is_named(tmp_path):
    path = tmp_path / "kv.bin"
    spill(random_blocks(SMALL, 4), path)
    layout = kvspill.Layout.read(path)
    with open(path, "r+b") as f:
        f.seek(layout.offset(2) + 77)
        byte = f.read(1)
        f.seek(layout.offset(2) + 77)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(KVSpillError, match=r"kv\.bin: block 2 changed since it was spilled"):
        restore(path)
    assert restore(path, verify=False).tensor is not None  # what is read is still handed back when asked


@pytest.mark.parametrize("content, reason", [
    (b"", "not a gdslab KV spill file"),
    (b"PK\x03\x04 a zip, say", "not a gdslab KV spill file"),
    (b"GDSLABKV" + (40).to_bytes(8, "little") + b"{", "header cut short or damaged"),
    (b"GDSLABKV" + (5).to_bytes(8, "little") + b"{oops", "header damaged"),
])
def test_a_file_that_is_not_a_spill_is_named(tmp_path, content, reason):
    path = tmp_path / "kv.bin"
    path.write_bytes(content)
    with pytest.raises(KVSpillError, match=reason):
        restore(path)


def test_a_failed_spill_leaves_nothing_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "kv.bin"
    old = random_blocks(SMALL, 3, seed=1)
    spill(old, path)
    calls = []
    real = os.pwrite

    def full_disk(fd, data, offset):
        calls.append(offset)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(KVSpillError, match=r"kv\.bin: spill failed, nothing kept: No space left on device"):
        spill(random_blocks(SMALL, 8, seed=2), path)
    monkeypatch.setattr(os, "pwrite", real)
    assert os.listdir(tmp_path) == ["kv.bin"]  # no .partial left behind
    assert torch.equal(restore(path).tensor.view(torch.uint8), old.view(torch.uint8))


def test_an_interrupted_spill_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        spill(random_blocks(SMALL, 2), tmp_path / "kv.bin")
    assert os.listdir(tmp_path) == []


def test_o_direct_refused_falls_back_and_says_so(tmp_path, monkeypatch):
    real = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    blocks = random_blocks(SMALL, 4)
    out = spill(blocks, tmp_path / "kv.bin", direct=True)
    back = restore(tmp_path / "kv.bin", direct=True)
    assert "O_DIRECT refused" in out.effective and "O_DIRECT refused" in back.effective
    assert back.details["direct_share"] == 0.0
    assert torch.equal(back.tensor.view(torch.uint8), blocks.view(torch.uint8))


def test_device_paths_say_why_not_here(tmp_path):
    if HAS_CUDA:
        pytest.skip("a GPU is here")
    blocks = random_blocks(SMALL, 2)
    for datapath in ("kvikio", "pinned-bounce"):
        with pytest.raises(DatapathUnavailable, match="needs a CUDA device"):
            spill(blocks, tmp_path / "kv.bin", datapath=datapath)
    with pytest.raises(DatapathUnavailable, match="unknown KV data path"):
        spill(blocks, tmp_path / "kv.bin", datapath="carrier-pigeon")
    assert os.listdir(tmp_path) == []


def test_records_say_what_ran_and_how_cold(tmp_path):
    from conftest import require_eviction

    require_eviction(tmp_path)
    trip = kvspill.round_trip(random_blocks(SMALL, 4), tmp_path / "kv.bin")
    record = trip.cold.record()
    assert record["direction"] == "restore" and record["cache"] == "cold" and record["resident_before"] < 0.05
    assert trip.warm.cache == "warm"  # a buffered restore fills the page cache
    assert record["nbytes"] == 4 * SMALL.nbytes and "host pread" in record["effective"]
    assert "spill 4 blocks" in str(trip.spill)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("datapath", ["kvikio", "pinned-bounce"])
def test_device_round_trip_is_bit_exact(tmp_path, datapath):
    ok, why = kvspill.available(datapath, torch.device("cuda:0"))
    if not ok:
        pytest.skip(f"{datapath}: {why}")
    blocks = random_blocks(SMALL, 16, device="cuda:0")
    trip = kvspill.round_trip(blocks, tmp_path / "kv.bin", datapath=datapath)
    assert trip.bit_exact and trip.cold.device.startswith("cuda")
    if datapath == "kvikio":  # KvikIO's counters account for every byte, each way
        for transfer in (trip.spill, trip.cold):
            assert transfer.details["gds_bytes"] + transfer.details["posix_bytes"] == transfer.nbytes
            assert transfer.details["gds_kind"] in transfer.effective
            assert transfer.details["allow_compat_mode"] in (True, False)


class _Future:
    """Stands for a KvikIO future (the waiting logic is tested, not KvikIO): `get` records that it was waited for."""

    def __init__(self, log: list, k: int, nbytes: int, fails: bool = False):
        self.log, self.k, self.nbytes, self.fails = log, k, nbytes, fails

    def get(self) -> int:
        self.log.append(self.k)
        if self.fails:
            raise RuntimeError("cuFile said no")
        return self.nbytes


def test_every_kvikio_future_is_waited_for_before_the_handle_can_close(tmp_path):
    kvikio = pytest.importorskip("kvikio", reason="KvikIO is not installed")
    layout = kvspill.Layout(4, SMALL.nbytes, SMALL.dims, "bf16")
    waited: list = []

    class Handle:
        def pread(self, buf, nbytes, offset):
            k = len(issued)
            issued.append(k)
            return _Future(waited, k, nbytes, fails=k == 1)

    issued: list = []
    with pytest.raises(RuntimeError, match="cuFile said no"):
        kvspill._kvikio_io(Handle(), {}, kvikio.SummaryMonitor(), tmp_path / "kv.bin", random_blocks(SMALL, 4),
                           layout, write=False)
    assert issued == [0, 1, 2, 3] and set(waited) == {0, 1, 2, 3}  # the failure did not leave 2 and 3 running

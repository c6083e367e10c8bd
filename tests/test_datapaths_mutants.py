"""The data paths' shared pieces where mutmut found them unchecked (issue #29).

- `DirectFiles` (O_DIRECT reads): what `describe` and `record` say for every mix of direct and
  buffered bytes (all, none, a share, refused at open or at a read, not asked for); one bounce
  block per reading thread, counted in the ledger and given back; a read that the kernel fills
  whole is one syscall, short reads are continued, the end of the file stops the loop.
  O_DIRECT is simulated so these run on any file system (tmpfs included): `os.open` drops
  the flag and remembers the descriptor, and `os.preadv` on it enforces open(2)'s O_DIRECT
  rule (offset, length and buffer address in whole 4 KiB blocks, else EINVAL). The oracle is
  the file's own bytes (`Path.read_bytes`).
- `LoadJob`: a caller's destinations checked field by field (device, dtype, shape, contiguity;
  exact messages), a coalesced group's shared allocation (8-byte words, its file and what it
  holds in the log and in the allocation error), `gpu_seconds` in seconds, `TensorRead.whole`.
- `Datapath.info`, `pinned_block_bytes` (PyTorch's power-of-two rounding, by hand), a fresh `_Pool`.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import gdslab
from gdslab.checkpoint import TensorEntry
from gdslab.datapaths import base
from gdslab.datapaths.base import Datapath, DatapathInfo, LoadJob, TensorRead, aligned_host
from gdslab.datapaths.direct_io import DirectFiles
from gdslab.datapaths.pinned_bounce import _Pool, pinned_block_bytes
from gdslab.errors import LoadError
from gdslab.hostmem import Ledger
from gdslab.profile import EventLog

BLOCK = 4096  # open(2): O_DIRECT transfers in whole logical blocks; 4 KiB is always enough
pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this OS")


# --- simulated O_DIRECT -------------------------------------------------------------------


class FakeDirect:
    """`os.open(..., O_DIRECT)` opens buffered and remembers the descriptor; `os.preadv` on it
    enforces the O_DIRECT alignment rule, counts calls, and can be told to refuse (EINVAL) or
    to return short reads. A read loop that spins is stopped by a call budget."""

    def __init__(self, monkeypatch, budget: int = 200):
        self.fds: set[int] = set()
        self.calls: list[tuple[int, int]] = []  # (offset, length) of every preadv on a direct descriptor
        self.refuse = False
        self.cap: list[int] = []  # per direct call, in order: at most this many bytes
        self.budget = budget
        real_open, real_preadv = os.open, os.preadv

        def open_(path, flags, *rest):
            if flags & os.O_DIRECT:
                fd = real_open(path, flags & ~os.O_DIRECT, *rest)
                self.fds.add(fd)
                return fd
            return real_open(path, flags, *rest)

        def preadv(fd, buffers, offset, *rest):
            if fd not in self.fds:
                return real_preadv(fd, buffers, offset, *rest)
            (buf,) = buffers
            length = len(buf)
            self.calls.append((offset, length))
            if len(self.calls) > self.budget:
                raise AssertionError(f"{len(self.calls)} preadv calls: a read loop that does not advance")
            if not self.refuse and offset >= os.fstat(fd).st_size:
                return 0  # at or past the end a read returns 0 before any alignment check (as ext4 does)
            address = np.frombuffer(buf, dtype=np.uint8).ctypes.data if length else 0
            if self.refuse or offset % BLOCK or length % BLOCK or address % BLOCK:
                raise OSError(errno.EINVAL, "Invalid argument")
            if self.cap:
                buf = buf[:self.cap.pop(0)]
            return real_preadv(fd, [buf], offset, *rest)

        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "preadv", preadv)


@pytest.fixture
def blob(tmp_path) -> tuple[Path, bytes]:
    """A file of 6 blocks and 100 bytes, random bytes."""
    data = np.random.default_rng(29).integers(0, 256, 6 * BLOCK + 100, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return path, data


def dest_for(offset: int, n: int) -> np.ndarray:
    """A destination whose address agrees with `offset` modulo 4 KiB (what the loader allocates)."""
    return aligned_host(n, offset % BLOCK).numpy()


def test_a_read_with_head_middle_and_tail_is_three_syscalls_and_bit_exact(blob, monkeypatch):
    path, data = blob
    fake = FakeDirect(monkeypatch)
    with DirectFiles([path], True) as files:
        offset, n = 100, 3 * BLOCK  # head [100, 4096), middle [4096, 12288), tail [12288, 12388)
        dest = dest_for(offset, n)
        files.read(dest, offset, path)
        assert dest.tobytes() == data[offset:offset + n]
        # The middle straight in, then the head's block and the tail's block through the bounce:
        # each filled whole by one call, none after it.
        assert fake.calls == [(BLOCK, 2 * BLOCK), (0, BLOCK), (3 * BLOCK, BLOCK)]
        assert (files.direct_bytes, files.buffered_bytes) == (n, 0)


def test_one_bounce_block_per_thread_counted_in_the_ledger_and_given_back(blob, monkeypatch):
    path, data = blob
    FakeDirect(monkeypatch)
    ledger = Ledger("test")
    files = DirectFiles([path], True, ledger)
    for offset, n in ((100, BLOCK), (5000, 300)):  # both need the bounce block; the second reuses it
        dest = dest_for(offset, n)
        files.read(dest, offset, path)
        assert dest.tobytes() == data[offset:offset + n]
    assert files.bounce_bytes == 2 * BLOCK and ledger.held == 2 * BLOCK  # aligned_host: a block more, to align

    def other() -> None:
        dest = dest_for(9000, 50)
        files.read(dest, 9000, path)
        assert dest.tobytes() == data[9000:9050]

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert files.bounce_bytes == 4 * BLOCK and ledger.held == 4 * BLOCK  # a second thread, a second block
    files.close()
    assert files.bounce_bytes == 0 and ledger.held == 0


def test_describe_and_record_for_a_share_of_direct_bytes(blob, monkeypatch):
    path, data = blob
    FakeDirect(monkeypatch)
    with DirectFiles([path], True) as files:
        dest = dest_for(0, 3 * BLOCK)
        files.read(dest, 0, path)  # O_DIRECT
        shifted = aligned_host(BLOCK + 1, 1).numpy()[1:]  # address 2 mod 4096 for offset 0: buffered
        files.read(shifted, 0, path)
        assert shifted.tobytes() == data[:BLOCK] and dest.tobytes() == data[:3 * BLOCK]
        assert (files.direct_bytes, files.buffered_bytes) == (3 * BLOCK, BLOCK)
        assert files.describe() == "O_DIRECT 75% of bytes"
        assert files.record() == {"direct_bytes": 3 * BLOCK, "direct_share": 0.75, "direct_note": ""}


def test_refused_at_a_later_read_says_the_share_and_why(blob, monkeypatch):
    path, data = blob
    fake = FakeDirect(monkeypatch)
    with DirectFiles([path], True) as files:
        first = dest_for(0, BLOCK)
        files.read(first, 0, path)
        fake.refuse = True  # a FUSE or network mount may take the first reads and refuse a later one
        second = dest_for(BLOCK, BLOCK)
        files.read(second, BLOCK, path)
        assert first.tobytes() + second.tobytes() == data[:2 * BLOCK]
        why = "O_DIRECT refused at the first read of blob.bin (EINVAL): buffered reads"
        assert files.refused == why and not files.active
        assert files.describe() == f"O_DIRECT 50% of bytes ({why})"
        assert files.record() == {"direct_bytes": BLOCK, "direct_share": 0.5, "direct_note": why}


def test_read_superset_refused_falls_back_to_the_range_itself(blob, monkeypatch):
    path, data = blob
    fake = FakeDirect(monkeypatch)
    fake.refuse = True
    with DirectFiles([path], True) as files:
        staging = aligned_host(300 + 2 * BLOCK).numpy()
        at = files.read_superset(staging, 5000, 300, path)
        assert at == 0 and staging[:300].tobytes() == data[5000:5300]
        assert files.describe() == "buffered reads; O_DIRECT refused at the first read of blob.bin (EINVAL): buffered reads"


def test_nothing_read_yet_and_not_asked_for_say_plain_buffered_reads(blob, monkeypatch):
    path, data = blob
    FakeDirect(monkeypatch)
    with DirectFiles([path], True) as files:  # O_DIRECT open, nothing read: no share to divide
        assert files.active and files.refused is None
        assert files.describe() == "buffered reads"
        assert files.record() == {"direct_bytes": 0, "direct_share": 0.0, "direct_note": ""}
    with DirectFiles([path], False) as files:
        assert files.record() == {"direct_bytes": 0, "direct_share": 0.0, "direct_note": "not asked for"}
        dest = dest_for(0, BLOCK)
        files.read(dest, 0, path)
        assert dest.tobytes() == data[:BLOCK]
        assert files.describe() == "buffered reads"  # "not asked for" is no refusal to report
        assert files.record() == {"direct_bytes": 0, "direct_share": 0.0, "direct_note": "not asked for"}


def test_refused_at_open_is_said_after_buffered_reads(blob, monkeypatch):
    path, data = blob
    real = os.open

    def open_(p, flags, *rest):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # tmpfs on older kernels
        return real(p, flags, *rest)

    monkeypatch.setattr(os, "open", open_)
    with DirectFiles([path], True) as files:
        dest = dest_for(0, 10)
        files.read(dest, 0, path)
        assert dest.tobytes() == data[:10]
        assert files.describe() == "buffered reads; O_DIRECT refused when opening blob.bin (EINVAL): buffered reads"
        assert files.record()["direct_share"] == 0.0


def test_a_short_read_is_continued_and_the_end_of_the_file_stops_the_loop(blob, monkeypatch):
    path, data = blob
    fake = FakeDirect(monkeypatch)
    fake.cap = [BLOCK]  # the first call returns one block of the three asked for
    with DirectFiles([path], True) as files:
        dest = dest_for(BLOCK, 3 * BLOCK)
        files.read(dest, BLOCK, path)
        assert dest.tobytes() == data[BLOCK:4 * BLOCK]
        assert fake.calls == [(BLOCK, 3 * BLOCK), (2 * BLOCK, 2 * BLOCK)]
        fake.calls.clear()
        end = len(data)  # the file's last 100 bytes: the bounce block reads past the end, then gets 0
        tail = dest_for(end - 100, 100)
        files.read(tail, end - 100, path)
        assert tail.tobytes() == data[-100:]
        assert fake.calls == [(6 * BLOCK, BLOCK), (6 * BLOCK + 100, BLOCK - 100)]
        assert files.refused is None


def test_a_file_shorter_than_the_read_is_truncated(blob, monkeypatch):
    path, _ = blob
    FakeDirect(monkeypatch)
    with DirectFiles([path], True) as files:
        dest = dest_for(5 * BLOCK, 2 * BLOCK)
        with pytest.raises(LoadError, match=r"blob\.bin: truncated: needed 8192 bytes at byte 20480"):
            files.read(dest, 5 * BLOCK, path)


# --- LoadJob -----------------------------------------------------------------------------

CPU = torch.device("cpu")


def job(reads, **kw) -> LoadJob:
    return LoadJob(reads, CPU, 1, 1 << 20, kw.pop("log", None) or EventLog(), threading.Event(), **kw)


READS = [TensorRead("w", Path("a.safetensors"), "F32", (2, 3), ((0, 24),)),
         TensorRead("b", Path("a.safetensors"), "BF16", (4,), ((24, 8),))]


def test_tensor_read_whole_takes_every_field_of_the_entry():
    entry = TensorEntry("model.w", Path("x.safetensors"), 136, 24, "F32", (2, 3))
    read = TensorRead.whole(entry)
    assert tuple(read) == ("model.w", Path("x.safetensors"), "F32", (2, 3), ((136, 24),))
    assert read.nbytes == 24 and read.dtype == torch.float32


def test_provided_destinations_are_kept_as_given():
    mine = torch.empty(2, 3, dtype=torch.float32)
    j = job(READS, provided=[mine, None])
    assert j.destinations[0] is mine and j.destinations[1] is None


def test_provided_destinations_count_must_match():
    with pytest.raises(ValueError, match="^1 destinations for 2 reads$"):
        job(READS, provided=[None])


@pytest.mark.parametrize("tensor, says", [
    (torch.empty(2, 3, dtype=torch.float32, device="meta"), "torch.float32 [2, 3] on meta"),
    (torch.empty(2, 3, dtype=torch.float16), "torch.float16 [2, 3] on cpu"),
    (torch.empty(3, 2, dtype=torch.float32), "torch.float32 [3, 2] on cpu"),
    (torch.empty(3, 2, dtype=torch.float32).t(), "torch.float32 [2, 3] on cpu, not contiguous"),
], ids=["device", "dtype", "shape", "contiguity"])
def test_a_provided_destination_differing_in_one_way_is_refused_by_name(tensor, says):
    with pytest.raises(ValueError) as caught:
        job(READS, provided=[tensor, None])
    assert str(caught.value) == (f"destination for 'w' is {says}; the read needs torch.float32 [2, 3] on cpu, "
                                 "contiguous")


@pytest.fixture
def small(tmp_path) -> Path:
    """Three float32 tensors back to back: 12 + 12 + 4 = 28 bytes, one coalesced group."""
    path = tmp_path / "small.safetensors"
    save_file({"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([4.0, 5.0, 6.0]), "c": torch.tensor([7.0])},
              str(path))
    return path


def test_a_coalesced_group_is_one_allocation_of_whole_words_logged_with_its_file(small):
    log = EventLog()
    ckpt = gdslab.Checkpoint.open(small)
    j = job(TensorRead.all_of(ckpt.tensors), coalesce_below=1024, log=log)
    assert len(j.groups) == 1 and j.groups[0].nbytes == 28
    first = j.destination(0)
    assert first.untyped_storage().nbytes() == 32  # 28 bytes in whole 8-byte words
    assert all(t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr() for t in j.destinations)
    (alloc,) = [e for e in log.events if e.stage == "alloc"]
    assert alloc.nbytes == 32 and alloc.file == str(small)


def test_a_coalesced_group_that_cannot_be_allocated_says_what_and_where(small, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no memory left\nsecond line")

    monkeypatch.setattr(base, "empty_host", refuse)
    ckpt = gdslab.Checkpoint.open(small)
    j = job(TensorRead.all_of(ckpt.tensors), coalesce_below=1024)
    with pytest.raises(LoadError, match=r"small\.safetensors: cannot allocate 3 coalesced tensors \(32 bytes\) "
                                        r"on cpu: no memory left$"):
        j.destination(1)


def test_gpu_seconds_are_the_origin_event_s_milliseconds_over_1000():
    mark = object()

    class Origin:
        def elapsed_time(self, event):
            assert event is mark
            return 2500.0  # milliseconds, as torch.cuda.Event.elapsed_time gives them

    j = job([])
    j.cuda_origin = Origin()
    assert j.gpu_seconds(mark) == 2.5


def test_info_is_name_availability_reason_and_description():
    class Toy(Datapath):
        name, description = "toy", "a toy path"

        def availability(self, device):
            return False, f"not on {device}"

    assert Toy().info(CPU) == DatapathInfo("toy", False, "not on cpu", "a toy path")


# --- pinned-bounce ----------------------------------------------------------------------


@pytest.mark.parametrize("nbytes, held", [(0, 0), (1, 1), (2, 2), (3, 4), (4096, 4096), (4097, 8192),
                                          ((1 << 20) + 1, 2 << 20)])
def test_pinned_block_bytes_round_up_to_a_power_of_two(nbytes, held):
    # PyTorch's CachingHostAllocator rounds a pinned request up to the next power of two
    # (c10::llvm::PowerOf2Ceil); nothing is allocated for nothing.
    assert pinned_block_bytes(nbytes) == held


def test_a_fresh_pool_reuses_its_memory_and_gives_a_busy_device_its_own():
    pool = _Pool()
    memory, reused, pooled = pool.take(CPU, 5000)
    assert memory.numel() == 5000 and (reused, pooled) == (False, True)
    other, reused, pooled = pool.take(CPU, 100)  # busy: memory of its own, not pooled
    assert other.data_ptr() != memory.data_ptr() and (reused, pooled) == (False, False)
    pool.give_back(CPU)
    again, reused, pooled = pool.take(CPU, 4000)
    assert again.data_ptr() == memory.data_ptr() and (reused, pooled) == (True, True)
    assert pool.release(CPU) == 0  # still busy: nothing freed
    pool.give_back(CPU)
    assert pool.release(CPU) == 5000


# --- pageable-bounce: the read tasks that cover a file (cache helper's section, issue #29) ---
# mutmut's run 1 timed out on three mutants of PageableBounce.run's task list (a range with its
# start, stop or step dropped: no tasks, one byte apart, or `piece` of them); at a small io_size
# they fail at once instead. Oracle: the file's size on disk and the io size, by hand.


def test_pageable_bounce_reads_each_io_size_piece_of_the_file_once(tmp_path):
    from safetensors.torch import load_file

    g = torch.Generator().manual_seed(29)
    tensors = {"a": torch.randn(1000, 3, generator=g),  # 12000 bytes
               "b": torch.randint(0, 255, (7001,), dtype=torch.uint8, generator=g),
               "c": torch.randn(2500, generator=g).double()}  # 20000 bytes
    path = tmp_path / "three.safetensors"
    save_file(tensors, str(path))
    size = path.stat().st_size  # header under 4 KiB: the bytes to read start at block 0 and end at EOF
    assert size > 8 * 4096 and size % 4096
    result = gdslab.load(path, datapath="pageable-bounce", device="cpu", threads=1, io_size=4096)
    reads = [(e.nbytes, e.file) for e in result.events if e.stage == "read"]
    assert sorted(n for n, _ in reads) == sorted([4096] * (size // 4096) + [size % 4096])
    assert {f for _, f in reads} == {str(path)}
    want = load_file(str(path))
    assert set(result.tensors) == set(want)
    for name, tensor in want.items():
        assert torch.equal(result.tensors[name], tensor), name


# --- the reader pool must run: a load whose workers never start fails here, instead of hanging ---------


@pytest.mark.parametrize("threads", [1, 3])
def test_a_load_finishes_on_its_worker_threads(tmp_path, threads):
    tensors = {f"t{i}": torch.arange(i * 100, i * 100 + 300, dtype=torch.float32) for i in range(6)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    out: dict = {}

    def load():
        out["result"] = gdslab.load(tmp_path, datapath="host-direct", device="cpu", threads=threads,
                                    io_size="4KiB")

    runner = threading.Thread(target=load, daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "the load did not finish in 60 s: its reader threads never took a task"
    for name, expected in tensors.items():
        assert torch.equal(out["result"].tensors[name], expected), name


# --- the bounce paths' record: what each event says, the effective text, the staging held (run F) -------
# Oracles: the file's own header length word (struct, by hand), the tensors' sizes from safetensors,
# and the texts as the lab documents them.


def _wide_header_checkpoint(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """One file whose header is longer than 4 KiB: its tensor bytes start past the first block."""
    g = torch.Generator().manual_seed(29)
    tensors = {f"model.layers.{i}.self_attn.a_rather_long_projection_name.weight": torch.randn(37 + i, generator=g)
               for i in range(60)}
    path = folder / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def _data_start(path: Path) -> int:
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("datapath", ["pageable-bounce", "pinned-bounce"])
def test_a_bounce_load_logs_reads_to_the_host_and_copies_that_land_on_the_device(tmp_path, monkeypatch, datapath,
                                                                                 direct):
    path, tensors = _wide_header_checkpoint(tmp_path)
    start, size = _data_start(path), path.stat().st_size
    assert start > BLOCK  # the data's first block is not the file's first
    fake = FakeDirect(monkeypatch, budget=1000)
    result = gdslab.load(path, datapath=datapath, device="cpu", threads=1, io_size="4KiB", direct=direct)
    assert bool(fake.fds) == direct  # O_DIRECT opened when asked for, and only then
    waits = [e for e in result.events if e.stage == "wait"]
    if datapath == "pinned-bounce":  # each chunk first takes a ring buffer: a wait, however short, on the device
        assert len(waits) == len([e for e in result.events if e.stage == "read"])
        assert {(e.nbytes, e.file, e.device, e.landed) for e in waits} == {(0, "", "cpu", False)}
    for name, tensor in tensors.items():
        assert torch.equal(result.tensors[name], tensor), name
    reads = [e for e in result.events if e.stage == "read"]
    copies = [e for e in result.events if e.stage == "copy"]
    assert reads and copies
    assert {(e.file, e.device, e.landed) for e in reads} == {(str(path), "host", False)}
    assert {(e.file, e.device, e.landed) for e in copies} == {(str(path), "cpu", True)}
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    assert sum(e.nbytes for e in copies) == weights == size - start
    if datapath == "pageable-bounce":
        low = start // BLOCK * BLOCK
        assert sorted(e.nbytes for e in copies) == sorted(t.numel() * t.element_size() for t in tensors.values())
        assert sum(e.nbytes for e in reads) == size - low and min(e.nbytes for e in reads) > 0
        # one buffer for the file, from the block holding its first tensor byte to the end, in whole blocks,
        # and the block more that aligning it costs
        assert result.details["host_overhead_bytes"] == -(-size // BLOCK) * BLOCK - low + BLOCK
        want = "pageable-bounce analogue (read to a host buffer, then memcpy: two copies"
    else:
        assert sum(e.nbytes for e in reads) == weights
        want = "pinned-bounce analogue (staging ring + memcpy; no page-locked memory without CUDA"
    if direct:
        assert result.effective.startswith(want + "; ") and result.effective.endswith(")")
        assert "direct_share" in result.details
    else:
        assert result.effective == want + ")"
        assert "direct_share" not in result.details


def test_pageable_bounce_skips_a_file_with_nothing_to_read_and_goes_on_to_the_next(tmp_path):
    """A shard holding only zero-element tensors has no bytes to read: the next shard must still be read."""
    empty = {"a.empty": torch.zeros(0, 4), "b.empty": torch.zeros(3, 0)}
    full = {"c.weight": torch.arange(4096, dtype=torch.float32), "d.bias": torch.arange(7, dtype=torch.int64)}
    names = {"model-00001-of-00002.safetensors": empty, "model-00002-of-00002.safetensors": full}
    for file, part in names.items():
        save_file(part, str(tmp_path / file))
    weight_map = {name: file for file, part in names.items() for name in part}
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": ' + str(weight_map).replace("'", '"') + "}")
    result = gdslab.load(tmp_path, datapath="pageable-bounce", device="cpu", threads=1, io_size="4KiB")
    for part in names.values():
        for name, tensor in part.items():
            assert result.tensors[name].shape == tensor.shape and torch.equal(result.tensors[name], tensor), name


@pytest.mark.parametrize("datapath", ["pageable-bounce", "pinned-bounce", "host-direct"])
def test_a_column_slice_is_read_run_by_run_into_its_place(tmp_path, datapath):
    """A tensor-parallel column slice: one run per row, each landing after the one before (oracle: torch's slicing)."""
    from safetensors.torch import load_file

    w = torch.arange(6 * 10, dtype=torch.float32).reshape(6, 10)
    path = tmp_path / "model.safetensors"
    save_file({"w": w}, str(path))
    start = _data_start(path)
    row, first, width = 10 * 4, 3 * 4, 4 * 4  # columns 3..6 of each 40-byte row
    runs = tuple((start + r * row + first, width) for r in range(6))
    reads = [TensorRead("w", path, "F32", (6, 4), runs)]
    result = gdslab.load(path, datapath=datapath, device="cpu", threads=2, io_size="4KiB", reads=reads)
    assert torch.equal(result.tensors["w"], load_file(str(path))["w"][:, 3:7])


# --- DirectFiles' edges and failures, and the host copy (run F's survivors) ---------------------------


def _failing_with_eio(monkeypatch, fake: FakeDirect) -> None:
    """Every read on an O_DIRECT descriptor fails as a dying disk does (EIO), not as a refusal (EINVAL)."""
    def preadv(fd, buffers, offset, *rest):
        if fd in fake.fds:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, buffers, offset, *rest)

    real = os.preadv
    monkeypatch.setattr(os, "preadv", preadv)


def test_a_read_cut_short_in_its_tail_block_names_the_file_and_the_bytes(blob, monkeypatch):
    path, data = blob
    FakeDirect(monkeypatch)
    with DirectFiles([path], True) as files:
        offset = 6 * BLOCK  # 100 bytes are left; 200 are asked for, all in the tail block
        with pytest.raises(LoadError) as cut:
            files.read(dest_for(offset, 200), offset, path)
        assert str(cut.value) == f"{path}: truncated: needed 200 bytes at byte {offset}, the file ended early"


def test_a_failing_disk_is_named_with_the_byte_and_the_reason(blob, monkeypatch):
    path, _ = blob
    _failing_with_eio(monkeypatch, FakeDirect(monkeypatch))
    with DirectFiles([path], True) as files:
        with pytest.raises(LoadError) as failed:
            files.read(dest_for(100, BLOCK), 100, path)
        assert str(failed.value) == f"{path}: read failed at byte 100: Input/output error"
        staging = aligned_host(2 * BLOCK).numpy()
        with pytest.raises(LoadError) as failed:
            files.read_superset(staging, 100, 50, path)
        assert str(failed.value) == f"{path}: read failed at byte 100: Input/output error"


def test_one_byte_and_a_range_inside_two_blocks_go_direct_by_the_fewest_calls(blob, monkeypatch):
    path, data = blob
    fake = FakeDirect(monkeypatch)
    with DirectFiles([path], True) as files:
        one = dest_for(100, 1)
        files.read(one, 100, path)
        assert one.tobytes() == data[100:101] and fake.calls == [(0, BLOCK)]
        assert (files.direct_bytes, files.buffered_bytes) == (1, 0)
        fake.calls.clear()
        straddling = dest_for(100, 4000)  # [100, 4100): a head and a tail, no whole block between
        files.read(straddling, 100, path)
        assert straddling.tobytes() == data[100:4100]
        assert fake.calls == [(0, BLOCK), (BLOCK, BLOCK)]


def test_read_superset_reads_the_whole_blocks_around_the_range_in_one_call(blob, monkeypatch):
    path, data = blob
    fake = FakeDirect(monkeypatch)
    staging = aligned_host(5000 + 2 * BLOCK).numpy()
    with DirectFiles([path], True) as files:
        at = files.read_superset(staging, BLOCK + 100, 5000, path)  # [4196, 9196): blocks 1 and 2
        assert at == 100 and staging[at:at + 5000].tobytes() == data[BLOCK + 100:BLOCK + 5100]
        assert fake.calls == [(BLOCK, 2 * BLOCK)]
        offset = len(data) - 50  # 50 bytes left, 200 asked for
        with pytest.raises(LoadError) as cut:
            files.read_superset(staging, offset, 200, path)
        assert str(cut.value) == f"{path}: truncated: needed 200 bytes at byte {offset}, the file ended early"


def test_host_copies_never_go_through_torch_and_device_copies_keep_their_non_blocking(monkeypatch):
    """Host to host is one numpy memcpy on the calling thread; to a device, `copy_` with the caller's non_blocking."""
    source = torch.arange(64, dtype=torch.uint8)
    seen = []
    real_copy = torch.Tensor.copy_

    def recording_copy(self, src, non_blocking=False):
        if self.device.type == "cpu":
            raise AssertionError("a host copy went through torch's copy_")
        seen.append(non_blocking)
        return real_copy(self, src, non_blocking=non_blocking)

    monkeypatch.setattr(torch.Tensor, "copy_", recording_copy)
    dest = torch.zeros(64, dtype=torch.uint8)
    base.copy_bytes(dest, source)
    assert torch.equal(dest, torch.arange(64, dtype=torch.uint8))
    meta = torch.empty(64, dtype=torch.uint8, device="meta")  # a device with no data: the copy's call is what shows
    base.copy_bytes(meta, source)
    base.copy_bytes(meta, source, non_blocking=True)
    assert seen == [False, True]


@pytest.mark.parametrize("direct", [False, True])
def test_host_direct_opens_o_direct_only_when_asked_and_counts_its_bounce_block(tmp_path, monkeypatch, direct):
    path, tensors = _wide_header_checkpoint(tmp_path)  # tensors of 148-384 bytes: unaligned edges
    fake = FakeDirect(monkeypatch, budget=1000)
    result = gdslab.load(path, datapath="host-direct", device="cpu", threads=1, io_size="4KiB", direct=direct)
    for name, tensor in tensors.items():
        assert torch.equal(result.tensors[name], tensor), name
    assert bool(fake.fds) == direct
    reads = [e for e in result.events if e.stage == "read"]  # one copy: each read lands on the device
    assert {(e.file, e.device, e.landed) for e in reads} == {(str(path), "cpu", True)}
    assert sum(e.nbytes for e in reads) == sum(t.numel() * t.element_size() for t in tensors.values())
    # one reader thread: one bounce block (aligned_host's 4 KiB and the 4 KiB more that aligning it costs)
    assert result.details["host_overhead_bytes"] == (2 * BLOCK if direct else 0)


def test_release_staging_of_one_device_leaves_the_other_devices_pooled(monkeypatch):
    from gdslab.datapaths import pinned_bounce

    pool = _Pool()
    monkeypatch.setattr(pinned_bounce, "POOL", pool)
    meta = torch.device("meta")  # a second device key; its staging is host memory here like any non-CUDA one
    for device, nbytes in ((CPU, 5000), (meta, 3000)):
        pool.take(device, nbytes)
        pool.give_back(device)
    assert pinned_bounce.release_staging("meta") == 3000
    assert set(pool.memory) == {"cpu"}
    assert pinned_bounce.release_staging() == 5000 and not pool.memory


# --- LoadJob: which small tensors share a read, at its exact boundaries (run F's survivors) -------------
# Oracle: the rule as LoadJob's docstring states it, applied by hand to reads laid out here.

A, B = Path("a.safetensors"), Path("b.safetensors")


def u8(name, offset, n, file=A, dtype="U8"):
    return TensorRead(name, file, dtype, (n // {"U8": 1, "F32": 4}[dtype],), ((offset, n),))


def members(reads, coalesce_below, io_size=1 << 20):
    planned = LoadJob(reads, CPU, 1, io_size, EventLog(), threading.Event(), coalesce_below=coalesce_below)
    return [[planned.reads[i].name for i, _ in g.members] for g in planned.groups]


def test_coalescing_takes_tensors_of_1_to_limit_minus_1_bytes_back_to_back_up_to_exactly_io_size():
    assert members([u8("a", 0, 1), u8("b", 1, 1)], coalesce_below=2) == [["a", "b"]]  # 1 byte: small enough
    assert members([u8("a", 0, 7), u8("b", 7, 8)], coalesce_below=8) == []  # 8 bytes is not below 8
    assert members([u8("a", 0, 8), u8("b", 8, 8)], coalesce_below=9, io_size=16) == [["a", "b"]]  # exactly io_size
    assert members([u8("a", 0, 8), u8("b", 8, 9)], coalesce_below=10, io_size=16) == []  # one byte over
    # io_size counts from the group's own start, wherever in the file it is
    assert members([u8("a", 5000, 8), u8("b", 5008, 8)], coalesce_below=9, io_size=16) == [["a", "b"]]


def test_a_large_tensor_or_another_file_ends_a_group_and_grouping_goes_on_after_it():
    reads = [u8("a", 0, 4), u8("b", 4, 4), u8("big", 8, 100), u8("c", 108, 4), u8("d", 112, 4)]
    assert members(reads, coalesce_below=8) == [["a", "b"], ["c", "d"]]
    # the same offsets, back to back, but in two files: not one read
    assert members([u8("a", 0, 4, A), u8("b", 4, 4, B)], coalesce_below=8) == []


def test_a_member_joins_only_at_a_multiple_of_its_itemsize_from_the_group_start():
    # the group starts at byte 1: an F32 at byte 5 is 4 bytes in (joins), one at byte 6 is 5 bytes in (does not)
    joins = [u8("a", 1, 1), u8("b", 2, 3), u8("f", 5, 4, dtype="F32")]
    assert members(joins, coalesce_below=8) == [["a", "b", "f"]]
    apart = [u8("a", 1, 1), u8("b", 2, 4), u8("f", 6, 4, dtype="F32")]
    assert members(apart, coalesce_below=8) == [["a", "b"]]


def test_chunks_come_file_by_file_then_by_offset():
    reads = [u8("b1", 0, 10, B), u8("a2", 50, 10, A), u8("b2", 30, 10, B), u8("a1", 20, 10, A)]
    order = [(c.file.name, c.file_offset) for c in job(reads).chunks()]
    assert order == [("a.safetensors", 20), ("a.safetensors", 50), ("b.safetensors", 0), ("b.safetensors", 30)]


def test_a_read_with_no_runs_still_gets_its_empty_destination():
    empty = TensorRead("nothing", A, "F32", (0, 3), ())
    assert job([empty]).destination(0).shape == (0, 3)


def test_on_a_device_the_destination_is_made_there_with_its_shape_and_dtype_and_logged_there():
    meta = torch.device("meta")  # a device that is not the host, on any machine
    log = EventLog()
    planned = LoadJob(READS, meta, 1, 1 << 20, log, threading.Event())
    w, b = planned.destination(0), planned.destination(1)
    assert (w.device, w.shape, w.dtype) == (meta, (2, 3), torch.float32)
    assert (b.device, b.shape, b.dtype) == (meta, (4,), torch.bfloat16)
    assert [(e.stage, e.nbytes, e.file, e.device) for e in log.events] == [
        ("alloc", 24, "a.safetensors", "meta"), ("alloc", 8, "a.safetensors", "meta")]


def test_host_only_paths_say_so_for_a_device_and_others_are_available_with_no_reason():
    from gdslab.datapaths.host_direct import HostDirect
    from gdslab.datapaths.pageable_bounce import PageableBounce

    assert HostDirect().availability(torch.device("cpu")) == (True, "")
    assert HostDirect().availability(torch.device("meta")) == (False, "host-only path (device must be 'cpu')")
    assert PageableBounce().availability(torch.device("meta")) == (True, "")


def test_reader_threads_are_daemons(tmp_path, monkeypatch):
    """A reader stuck in a system call must not keep Python from exiting."""
    save_file({"t": torch.arange(5000, dtype=torch.float32)}, str(tmp_path / "model.safetensors"))
    daemons, real = set(), os.preadv

    def preadv(fd, buffers, offset, *rest):
        daemons.add((threading.current_thread().name, threading.current_thread().daemon))
        return real(fd, buffers, offset, *rest)

    monkeypatch.setattr(os, "preadv", preadv)
    gdslab.load(tmp_path, datapath="host-direct", device="cpu", threads=2, io_size="4KiB")
    readers = {(name, daemon) for name, daemon in daemons if name != threading.current_thread().name}
    assert readers and all(daemon for _, daemon in readers)


def test_a_group_after_the_first_read_fills_its_own_members():
    reads = [u8("big", 0, 100), u8("a", 100, 4), u8("b", 104, 4)]
    planned = LoadJob(reads, CPU, 1, 1 << 20, EventLog(), threading.Event(), coalesce_below=8)
    (chunk,) = [c for c in planned.chunks() if c.group >= 0]
    view = planned.chunk_view(chunk)
    view.copy_(torch.arange(8, dtype=torch.uint8))
    assert planned.destination(1).tolist() == [0, 1, 2, 3] and planned.destination(2).tolist() == [4, 5, 6, 7]


# --- opening files, counting bytes, huge-page advice (run F's survivors) ---------------------------------


def test_a_file_that_cannot_be_opened_is_named_with_the_reason(tmp_path, monkeypatch):
    missing = tmp_path / "gone.safetensors"
    with pytest.raises(LoadError) as failed:
        base.OpenFiles([missing])
    assert str(failed.value) == f"{missing}: cannot open: No such file or directory"
    path = tmp_path / "there.bin"
    path.write_bytes(b"x" * BLOCK)
    real_open = os.open

    def no_direct_for_you(file, flags, *rest):
        if flags & os.O_DIRECT:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *rest)

    monkeypatch.setattr(os, "open", no_direct_for_you)
    with pytest.raises(LoadError) as failed:
        DirectFiles([path], True)
    assert str(failed.value) == f"{path}: cannot open: Permission denied"


def test_an_os_without_o_direct_is_said_and_buffered_bytes_add_up(blob, monkeypatch):
    path, data = blob
    monkeypatch.delattr(os, "O_DIRECT")
    with DirectFiles([path], True) as files:
        assert files.refused == "this OS has no O_DIRECT" and not files.direct
        for offset, n in ((0, 100), (1000, 200)):
            dest = np.empty(n, dtype=np.uint8)
            files.read(dest, offset, path)
            assert dest.tobytes() == data[offset:offset + n]
        assert (files.direct_bytes, files.buffered_bytes) == (0, 300)


def test_huge_page_advice_covers_the_whole_2_mib_pages_inside_a_large_host_tensor(monkeypatch):
    calls = []
    monkeypatch.setattr(base, "_madvise", lambda: lambda start, length, advice: calls.append((start, length, advice)))
    huge = 2 << 20
    small = base.empty_host((2 * huge - 1,), huge_pages=True)  # under two huge pages: no advice
    assert calls == [] and small.numel() == 2 * huge - 1
    assert base.empty_host((4 * huge,), huge_pages=False).numel() == 4 * huge and calls == []  # not asked
    t = base.empty_host((1000, 3 * huge // 1000), torch.float32, huge_pages=True)
    assert (t.shape, t.dtype) == ((1000, 3 * huge // 1000), torch.float32)
    first = -(-t.data_ptr() // huge) * huge  # the first 2 MiB boundary in the tensor, by hand
    last = (t.data_ptr() + t.numel() * 4) // huge * huge  # the last one
    assert calls == [(first, last - first, 14)]  # MADV_HUGEPAGE is 14 (linux/mman-common.h)


def test_huge_page_advice_from_exactly_two_pages_by_default_where_it_cannot_stall(monkeypatch):
    calls = []
    monkeypatch.setattr(base, "_madvise", lambda: lambda start, length, advice: calls.append((start, length, advice)))
    monkeypatch.setattr(base, "huge_pages_without_stalls", lambda: True)
    huge, real_empty = 2 << 20, torch.empty

    def on_a_huge_page(shape, dtype=torch.uint8, **kw):
        """torch.empty placed at a 2 MiB boundary (the case where rounding the start up changes nothing)."""
        n = int(np.prod(shape)) * dtype.itemsize
        raw = real_empty(n + huge, dtype=torch.uint8)
        skip = -raw.data_ptr() % huge
        return raw[skip:skip + n].view(dtype).view(shape)

    monkeypatch.setattr(torch, "empty", on_a_huge_page)
    t = base.empty_host((2 * huge,))  # exactly two pages, from a boundary, by default (the machine says it is safe)
    assert t.data_ptr() % huge == 0 and calls == [(t.data_ptr(), 2 * huge, 14)]
    calls.clear()
    odd = base.empty_host((2 * huge + 1,))  # an odd end: still whole pages only
    assert calls == [(odd.data_ptr(), 2 * huge, 14)]

"""What a run says it did and what it measures, checked here where the logic allows (GPU variants marked `gpu`).

- the GDS byte split from KvikIO's own counters (real `kvikio.Summary` values);
- KvikIO's process-wide settings set once per sharded load;
- small tensors coalesced into one allocation and one read, bit-exact;
- the staging ring kept out of the clock and reused, and never shared by two loads at once;
- path options, the fits check's arithmetic, and the memory a load costs besides the weights.
"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

import gdslab
from gdslab.datapaths.base import LoadJob, TensorRead
from gdslab.datapaths.gds import GDS_PROPER, ByteSplit, kvikio_settings, settings_active
from gdslab.datapaths.pinned_bounce import POOL, release_staging
from gdslab.loader import usable_device_memory
from gdslab.profile import EventLog, fill_curve

HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")


# --- the byte split, on KvikIO's own Summary ----------------------------------------------------


def summary(**carried: int):
    """A `kvikio.Summary` as KvikIO builds it (from a real monitor's reading), with these bytes per backend."""
    kvikio = pytest.importorskip("kvikio", reason="KvikIO is not installed")
    monitor = kvikio.SummaryMonitor()
    fields = json.loads(monitor.get().to_json())
    monitor.stop()
    for name, nbytes in carried.items():
        fields["by_backend"][name] = {"num_ops": 1, "bytes_transferred": nbytes, "total_duration_ns": 1,
                                      "num_errors": 0}
    fields["bytes_transferred"] = fields["bytes_read"] = sum(carried.values())
    return kvikio.Summary(**fields)


def test_all_bytes_by_gds_without_evidence_below_cufile_is_not_proven():
    split = ByteSplit.from_summary(summary(GDS=1 << 30), gds_available=True, allow_compat_mode=True)
    assert split.kind == "cuFile (DMA not proven)" and split.gds_share == 1.0
    assert split.describe() == "GDS 100.0% of bytes; cuFile allow_compat_mode=True"
    assert split.effective == "cuFile (DMA not proven); GDS 100.0% of bytes; cuFile allow_compat_mode=True"


def test_all_bytes_by_gds_with_the_nvidia_fs_counters_is_dma_proven():
    from pathlib import Path

    from gdslab.gds_evidence import parse_nvfs_stats

    fixtures = Path(__file__).parent / "fixtures" / "nvidia-fs"
    before, after = (parse_nvfs_stats((fixtures / name).read_text(), name)
                     for name in ("stats_before.txt", "stats_after_dma.txt"))  # readMiB grew by 100
    split = ByteSplit.from_summary(summary(GDS=100 << 20)).judged(nvfs_before=before, nvfs_after=after)
    assert split.kind == "GDS (DMA proven)" and split.effective.startswith("GDS (DMA proven); ")
    record = split.record()
    assert record["gds_label"] == record["gds_kind"] == "GDS (DMA proven)" and record["gds_proven_by"] == "nvidia-fs"
    # the same counters, but 107 MiB through cuFile: 95% of it is over 101 MiB, more than readMiB grew
    assert ByteSplit.from_summary(summary(GDS=107 << 20)).judged(nvfs_before=before, nvfs_after=after).kind == \
        "cuFile (DMA not proven)"


def test_no_gds_byte_is_kvikios_posix_with_its_reason():
    split = ByteSplit.from_summary(summary(POSIX=1 << 30), gds_available=False, small_bytes=0, compat_setting="ON",
                                   compat_preferred=True)
    assert split.kind == "POSIX (KvikIO fallback: compat mode ON)" and split.gds_share == 0.0
    assert split.describe() == "POSIX 100.0% of bytes"
    assert "GDS (DMA proven)" not in split.effective and "cuFile" not in split.effective
    auto = ByteSplit.from_summary(summary(POSIX=1 << 30), compat_setting="AUTO", compat_preferred=True)
    assert auto.kind == "POSIX (KvikIO fallback: is_compat_mode_preferred() is True)"


def test_posix_bytes_under_the_threshold_are_explained():
    split = ByteSplit.from_summary(summary(GDS=973, POSIX=27), gds_available=True, gds_threshold=1 << 20,
                                   small_bytes=27)
    assert split.describe() == "GDS 97.3% of bytes, POSIX 2.7% (27 B in reads under the 1 MiB gds_threshold)"
    assert split.kind == "cuFile (DMA not proven)" and split.gds_share >= GDS_PROPER


def test_a_mixed_run_is_labelled_by_kvikios_fallback():
    split = ByteSplit.from_summary(summary(GDS=600, POSIX=400), gds_available=True, small_bytes=100,
                                   gds_threshold=4096)
    assert split.kind == "POSIX (KvikIO fallback: reads under gds_threshold (4096 B) and 300 B more sent through POSIX)"
    record = split.record()
    assert record["gds_bytes"] == 600 and record["posix_bytes"] == 400 and record["gds_share"] == 0.6


def test_an_empty_summary_says_nothing_was_read():
    split = ByteSplit.from_summary(summary())
    assert split.total == 0 and split.kind == "nothing read"


# --- KvikIO's settings: once per process --------------------------------------------------------


def test_kvikio_settings_are_set_once_for_all_ranks():
    kvikio_defaults = pytest.importorskip("kvikio.defaults", reason="KvikIO is not installed")
    before = kvikio_defaults.get("num_threads")
    with kvikio_settings(32, 8 << 20, 1 << 20) as outer:
        assert outer and settings_active()
        seen = []

        def rank():  # what each rank's load does on its own thread
            with kvikio_settings(4, 1 << 20, 4096) as mine:
                seen.append((mine, kvikio_defaults.get("num_threads"), kvikio_defaults.get("gds_threshold")))

        threads = [threading.Thread(target=rank) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [(False, 32, 1 << 20)] * 4
    assert not settings_active() and kvikio_defaults.get("num_threads") == before


# --- landing times of gds reads -----------------------------------------------------------------


class Completion:
    """Stands for a read in flight: done once the test says so (the poller's logic, not KvikIO's, is tested)."""

    def __init__(self, nbytes: int):
        self.nbytes, self.finished = nbytes, threading.Event()

    def done(self) -> bool:
        return self.finished.is_set()

    def get(self) -> int:
        self.finished.wait()
        return self.nbytes


def _failed(path, what, e):
    from gdslab.errors import LoadError

    return LoadError(path, f"{what}: {e}")


def test_gds_reads_land_when_they_complete_not_in_issue_order(tmp_path):
    import collections
    import time

    from gdslab.datapaths.base import Chunk
    from gdslab.datapaths.gds import _land, _Timing

    job = LoadJob([], torch.device("cpu"), 4, 1 << 20, EventLog(), threading.Event())
    timing = _Timing(4)
    reads = [(Chunk(k, tmp_path / "f", k * 1000, 0, 100 * (k + 1)), 0.0, Completion(100 * (k + 1)), k)
             for k in range(3)]
    pending = collections.deque(reads)
    reads[1][2].finished.set()  # the second read finishes first
    _land(job, pending, timing, block=False, failed=_failed)  # while issuing, only the oldest are looked at
    assert len(pending) == 3 and not job.log.events

    def finish_later():
        time.sleep(0.05)
        reads[2][2].finished.set()
        time.sleep(0.05)
        reads[0][2].finished.set()

    threading.Thread(target=finish_later).start()
    _land(job, pending, timing, block=True, failed=_failed)
    assert len(job.log.events) == 3 and not pending
    ends = {e.nbytes // 100 - 1: e.end for e in job.log.events}  # read k moved 100 * (k + 1) bytes
    assert ends[1] < ends[2] - 0.03 and ends[2] < ends[0] - 0.03  # each stamped when it completed
    assert timing.queue_s == 0  # three reads, four pool threads: none waited for a thread


def test_a_gds_read_waiting_for_a_pool_thread_is_logged_as_queue_then_service(tmp_path):
    """One pool thread, two reads queued at 0: the second runs only once the first finished."""
    import collections
    import time

    from gdslab.datapaths.base import Chunk
    from gdslab.datapaths.gds import _land, _Timing

    job = LoadJob([], torch.device("cpu"), 1, 1 << 20, EventLog(), threading.Event())
    timing = _Timing(1)
    reads = [(Chunk(k, tmp_path / "f", k << 20, 0, 1 << 20), 0.0, Completion(1 << 20), k) for k in range(2)]

    def finish_later():
        time.sleep(0.05)
        reads[0][2].finished.set()
        time.sleep(0.05)
        reads[1][2].finished.set()

    threading.Thread(target=finish_later).start()
    _land(job, collections.deque(reads), timing, block=True, failed=_failed)
    events = job.log.events
    first, second = sorted((e for e in events if e.stage == "read"), key=lambda e: e.end)
    (wait,) = [e for e in events if e.stage == "wait"]
    assert first.start == 0.0 and wait.start == 0.0 and wait.end == first.end == second.start
    assert second.end >= second.start + 0.04  # its service, not its queue
    assert abs(timing.queue_s - wait.end) < 1e-9 and timing.service_s == pytest.approx(second.end, abs=1e-9)


def test_large_gds_destinations_sit_at_their_file_offsets_phase():
    from gdslab.datapaths.gds import PHASE_MATCH_FROM, _phased_allocator, _Timing
    from gdslab.datapaths.base import BLOCK, Chunk

    job = LoadJob([], torch.device("cpu"), 1, 1 << 20, EventLog(), threading.Event())
    allocate = _phased_allocator(job)
    for phase in (0, 2, 1234, 4094):
        t = allocate((PHASE_MATCH_FROM // 2,), torch.bfloat16, PHASE_MATCH_FROM, "f", "x", phase)
        assert t.data_ptr() % BLOCK == phase % BLOCK and t.shape == (PHASE_MATCH_FROM // 2,)
    timing = _Timing(1)
    timing.address(8192 + 100, Chunk(0, "f", 4096 + 100, 0, 777))   # same phase: not counted
    timing.address(8192 + 100, Chunk(0, "f", 4096 + 101, 0, 555))   # one byte off: counted
    assert timing.mismatched == 555


# --- coalescing small tensors -------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_small(tmp_path_factory):
    g = torch.Generator().manual_seed(11)
    tensors = {f"t{k:04d}": torch.randn(3 + k % 7, generator=g).to([torch.bfloat16, torch.float32][k % 2])
               for k in range(600)}
    tensors["big"] = torch.randn(700, 300, generator=g)
    path = tmp_path_factory.mktemp("small") / "model.safetensors"
    save_file(tensors, str(path))
    return path


def job_for(path, io_size=4096, coalesce=1 << 20):
    ckpt = gdslab.Checkpoint.open(path)
    return LoadJob([TensorRead.whole(e) for e in ckpt.tensors], torch.device("cpu"), 2, io_size, EventLog(),
                   threading.Event(), coalesce_below=coalesce)


def test_groups_are_back_to_back_aligned_and_bounded(many_small):
    job = job_for(many_small)
    assert job.groups and len(job.member_of) > 500
    for group in job.groups:
        assert group.nbytes <= job.io_size and len(group.members) > 1
        end = group.file_offset
        for i, at in group.members:
            read = job.reads[i]
            assert read.runs[0][0] == group.file_offset + at == end  # back to back, nothing skipped
            assert at % read.dtype.itemsize == 0  # each member's view is aligned for its dtype
            end += read.nbytes
        assert end - group.file_offset == group.nbytes
    assert not any(job.reads[i].name == "big" for i in job.member_of)
    grouped = [c for c in job.chunks() if c.group >= 0]
    assert len(grouped) == len(job.groups) >= 2  # one task per group, not per tensor


def test_coalesced_load_is_bit_exact_and_shares_memory(many_small):
    result = gdslab.load(many_small, "host-direct", "cpu", threads=3, io_size="64KiB")
    ref = load_file(str(many_small))
    for name, want in ref.items():
        got = result.tensors[name]
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), name
    storages = {t.untyped_storage().data_ptr() for t in result.tensors.values()}
    assert len(storages) < len(result.tensors) // 5
    reads = [e for e in result.events if e.stage == "read"]
    assert len(reads) < len(result.tensors) // 5  # events per I/O task, not per tensor


# --- the staging ring ---------------------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path):
    return gdslab.write_checkpoint(tmp_path / "c", size="4MiB", shards=2, seed=3)


def test_staging_is_ready_before_the_clock_and_reused(ckpt):
    release_staging()
    first = gdslab.load(ckpt, "pinned-bounce", "cpu", threads=2, io_size="256KiB", buffers_per_thread=3)
    second = gdslab.load(ckpt, "pinned-bounce", "cpu", threads=2, io_size="256KiB", buffers_per_thread=3)
    assert first.details["staging_reused"] is False and second.details["staging_reused"] is True
    assert first.details["staging_bytes"] == 2 * 3 * (256 << 10)
    assert first.record()["buffers_per_thread"] == 3
    assert not any(e.stage == "alloc" and e.nbytes == first.details["staging_bytes"] for e in first.events)
    assert not POOL.busy
    assert release_staging() == first.details["staging_bytes"]


def test_two_loads_at_once_never_share_a_ring(ckpt):
    release_staging()
    results, errors = [], []

    def run():
        try:
            results.append(gdslab.load(ckpt, "pinned-bounce", "cpu", threads=2, io_size="64KiB"))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ref = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        ref.update(load_file(str(f)))
    for result in results:
        assert all(torch.equal(result.tensors[n].view(torch.uint8), ref[n].view(torch.uint8)) for n in ref)
    assert not POOL.busy
    release_staging()


def test_options_are_the_paths_own(ckpt):
    with pytest.raises(ValueError, match=r"host-direct has no option 'buffers_per_thread' \(its options: direct\)"):
        gdslab.load(ckpt, "host-direct", "cpu", buffers_per_thread=2)
    with pytest.raises(ValueError, match="direct must be True or False"):
        gdslab.load(ckpt, "host-direct", "cpu", direct="yes")
    with pytest.raises(ValueError, match="buffers_per_thread must be a positive integer"):
        gdslab.load(ckpt, "pinned-bounce", "cpu", buffers_per_thread=0)
    assert gdslab.datapaths.get("pinned-bounce").knobs == ("threads", "io_size", "buffers_per_thread", "direct")
    assert gdslab.datapaths.get("gds").knobs == ("threads", "io_size", "gds_threshold", "register", "strict", "match_phase")


def test_memory_held_by_the_caching_allocator_counts_as_free():
    assert usable_device_memory(free=10, reserved=50, allocated=20) == 40
    assert usable_device_memory(free=10, reserved=20, allocated=20) == 10


def test_peak_host_memory_is_measured():
    import numpy as np

    from gdslab.costs import LoadCosts

    with LoadCosts(torch.device("cpu")) as costs:
        block = np.ones(64 << 20, dtype=np.uint8)  # fresh pages, touched
        del block
    measured = costs.costs(weights_on_host=0)
    assert measured.host_rss_overhead >= 60 << 20 and measured.host_rss_peak >= measured.host_rss_start + (60 << 20)
    assert measured.cpu_seconds > 0


def test_a_bounce_stages_a_whole_file_and_a_direct_read_nothing(tmp_path):
    folder = gdslab.write_checkpoint(tmp_path / "one", size="48MiB", shards=1, seed=5)
    size = next(folder.glob("*.safetensors")).stat().st_size
    bounce = gdslab.load(folder, "pageable-bounce", "cpu", threads=2, io_size="4MiB").record()
    direct = gdslab.load(folder, "host-direct", "cpu", threads=2, io_size="4MiB").record()
    assert bounce["host_overhead_bytes"] >= 0.9 * size  # the staging buffer, counted
    assert direct["host_overhead_bytes"] < 0.25 * size  # the weights are taken off: only overhead is left
    assert bounce["device_overhead_bytes"] is None and bounce["host_peak_method"] in ("VmHWM", "sampled")


def test_pinned_bytes_are_the_allocators_power_of_two_blocks():
    from gdslab.datapaths.pinned_bounce import pinned_block_bytes

    # PyTorch's CachingHostAllocator: roundSize = PowerOf2Ceil(size); a 4,097-byte request takes 8,192 bytes
    assert [pinned_block_bytes(n) for n in (4096, 4097, 1 << 20, 3 << 20, (8 << 20) + 1)] == \
        [4096, 8192, 1 << 20, 4 << 20, 16 << 20]


# --- on a GPU -----------------------------------------------------------------------------------


@gpu
@pytest.mark.gpu
def test_pinned_copies_land_at_their_gpu_times(ckpt):
    release_staging()
    first = gdslab.load(ckpt, "pinned-bounce", "cuda:0", threads=2, io_size="256KiB")
    run = gdslab.load(ckpt, "pinned-bounce", "cuda:0", threads=2, io_size="256KiB")
    assert run.details["staging_reused"] and run.details["pinned_bytes"] >= run.details["staging_bytes"] > 0
    pinned = run.details["pinned_bytes"]
    assert pinned & (pinned - 1) == 0  # the allocator's power-of-two block
    if hasattr(torch.cuda, "host_memory_stats"):  # PyTorch's own count of the pinned blocks it holds
        assert torch.cuda.host_memory_stats().get("reserved_bytes.current", pinned) >= pinned
    copies = [e for e in run.events if e.stage == "copy"]
    assert copies and all(e.landed and 0 <= e.start <= e.end <= run.seconds + 1e-3 for e in copies)
    assert fill_curve(run.events).total == run.nbytes
    assert run.details["device_overhead_bytes"] is not None
    del first, run
    release_staging()


@gpu
@pytest.mark.gpu
def test_gds_run_reports_its_byte_split(ckpt):
    info = {i.name: i for i in gdslab.datapaths.available("cuda:0")}
    if not info["gds"].available:
        pytest.fail(f"gds must run on a GPU machine with KvikIO: {info['gds'].reason}")
    run = gdslab.load(ckpt, "gds", "cuda:0", threads=4, io_size="1MiB", gds_threshold=4096)
    record = run.record()
    assert record["gds_bytes"] + record["posix_bytes"] == run.nbytes  # KvikIO counted every byte we read
    assert record["gds_threshold"] == 4096 and record["gds_label"] == record["gds_kind"]
    assert run.effective.startswith(record["gds_label"] + "; ")
    assert record["gds_label"] in ("GDS (DMA proven)", "cuFile (DMA not proven)") or \
        record["gds_label"].startswith("POSIX (KvikIO fallback: ")
    assert record["allow_compat_mode"] in (True, False) and record["gds_available"] in (True, False)
    if record["gds_label"] == "GDS (DMA proven)":  # only from evidence below cuFile
        assert record["gds_proven_by"] in ("nvidia-fs", "cuFile stats", "strict run")
    assert record["phase_mismatched_bytes"] >= 0 and record["gds_queue_s"] >= 0 and record["gds_service_s"] > 0
    reads = [e for e in run.events if e.stage == "read"]
    assert sum(e.nbytes for e in reads) == run.nbytes and all(0 <= e.start <= e.end for e in reads)
    plan = LoadJob(TensorRead.all_of(gdslab.Checkpoint.open(ckpt).tensors), torch.device("cpu"), 4, 1 << 20,
                   EventLog(), threading.Event(), coalesce_below=gdslab.datapaths.get("gds").coalesce_below)
    assert len(reads) == len(plan.chunks())  # one cuFile read per planned (coalesced) run, no more


def test_a_gds_plan_issues_one_read_per_coalesced_run(tmp_path):
    """Thousands of small tensors back to back: the gds plan reads them in a few io_size-bounded runs."""
    from gdslab import datapaths

    g = torch.Generator().manual_seed(4)
    path = tmp_path / "many.safetensors"
    save_file({f"t{k:05d}": torch.randn(5, generator=g) for k in range(5000)}, str(path))
    ckpt = gdslab.Checkpoint.open(path)
    io_size = 16 << 10
    job = LoadJob(TensorRead.all_of(ckpt.tensors), torch.device("cpu"), 2, io_size, EventLog(), threading.Event(),
                  coalesce_below=datapaths.get("gds").coalesce_below)
    total = sum(e.nbytes for e in ckpt.tensors)
    largest = max(e.nbytes for e in ckpt.tensors)
    reads = job.chunks()
    assert sum(c.nbytes for c in reads) == total
    assert len(reads) <= -(-total // (io_size - largest))  # each read is filled to within one tensor of io_size
    assert len(reads) < len(ckpt.tensors) / 100

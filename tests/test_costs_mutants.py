"""gdslab.costs: what mutation testing found unchecked (docs/results/mutation.md).

The fallback measurement runs here only when forced: a kernel that refuses
/proc/self/clear_refs (before Linux 4.0, some containers) leaves VmHWM at the process's
all-time peak, so LoadCosts samples VmRSS instead and says so.
"""

import builtins
import io
import resource
import threading
import time

import pytest
import torch

import gdslab.costs as costs_module
from gdslab.costs import RSS_NOTE, LoadCosts
from gdslab.hostmem import load_ledger


def _vm_rss() -> int:
    """The oracle: VmRSS read here, from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.fixture
def no_clear_refs(monkeypatch):
    """A kernel without clear_refs: opening it for writing fails as it does there (EACCES/ENOENT)."""
    real_open = builtins.open

    def refusing_open(file, mode="r", *args, **kwargs):
        if str(file) == "/proc/self/clear_refs":
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(costs_module, "open", refusing_open, raising=False)


def test_without_clear_refs_the_peak_is_sampled_and_labelled_so(no_clear_refs):
    block = 64 << 20
    with LoadCosts(torch.device("cpu")) as costs:
        held = torch.ones(block, dtype=torch.uint8)  # every page touched: resident
        seen = _vm_rss()
        deadline = time.monotonic() + 5  # a 5 ms sampler: 1000 chances (a broken one fails, not hangs)
        while costs._sampled_peak < seen and time.monotonic() < deadline:  # let the sampler see it
            time.sleep(0.01)
        del held
    assert costs._sampler is not None and not costs._sampler.is_alive()  # started, and stopped on exit
    record = costs.costs(0).record()
    assert record["host_peak_method"] == "sampled"
    assert record["host_rss_peak"] >= seen  # the sampled peak saw the block
    assert record["host_rss_overhead_bytes"] == max(0, record["host_rss_peak"] - record["host_rss_start"])
    assert record["host_rss_overhead_bytes"] >= 0.9 * block
    # the weights, when on the host, are not overhead
    assert costs.costs(block // 2).host_rss_overhead == max(0, record["host_rss_overhead_bytes"] - block // 2)
    assert costs.costs(1 << 40).host_rss_overhead == 0  # more weights than growth: none, not negative


def test_with_clear_refs_the_peak_is_vmhwm_reset_at_the_start():
    with open("/proc/self/clear_refs", "w") as f:  # skip where this kernel refuses it (the sampled test covers that)
        try:
            f.write("5")
        except OSError as e:
            pytest.skip(f"this kernel refuses clear_refs: {e}")
    earlier = torch.ones(256 << 20, dtype=torch.uint8)  # an earlier, higher peak: not this window's
    del earlier
    block = 32 << 20
    with LoadCosts(torch.device("cpu")) as costs:
        held = torch.ones(block, dtype=torch.uint8)
        seen = _vm_rss()
        del held
    record = costs.costs(0).record()
    assert record["host_peak_method"] == "VmHWM" and costs._sampler is None
    # VmHWM trails the live RSS by the kernel's batched counters (a few hundred KiB): not a lower bound to the byte
    assert record["host_rss_peak"] >= seen - (4 << 20)
    assert 0.9 * block <= record["host_rss_overhead_bytes"] < 4 * block  # the window's peak, not the earlier one


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_cpu_seconds_count_the_work_done_inside_the_window():
    before = _process_cpu_seconds()
    assert before > 0.05  # this process did work before: a figure that adds it in is caught below
    with LoadCosts(torch.device("cpu")) as costs:
        start = time.process_time()
        x = 0
        while time.process_time() - start < 0.2:  # burn 0.2 s of CPU in this process
            x += 1
    around = _process_cpu_seconds() - before
    cpu = costs.costs(0).record()["cpu_seconds"]
    assert 0.15 <= cpu <= around + 0.01  # the window's own CPU time, not the process's total


class FakeProc:
    """/proc/self as a kernel without clear_refs shows it: a status text whose figures the test sets."""

    def __init__(self, monkeypatch, clear_refs: bool = False, **fields_kib):
        self.fields = dict(fields_kib)
        self.clear_refs = clear_refs
        monkeypatch.setattr(costs_module, "open", self.open, raising=False)
        monkeypatch.setattr(costs_module, "_SAMPLE_S", 3600.0)  # the sampler never wakes: only the edges count

    def open(self, file, mode="r", *args, **kwargs):
        if str(file) == "/proc/self/clear_refs":
            if self.clear_refs:
                return io.StringIO()
            raise PermissionError(13, "Permission denied", str(file))
        if str(file) == "/proc/self/status":
            lines = ["Name:\tpython3", "Umask:\t0022", "State:\tR (running)"]
            lines += [f"{name}:\t{value:>8} kB" for name, value in self.fields.items()]
            lines += ["Threads:\t3", "voluntary_ctxt_switches:\t10"]
            return io.StringIO("\n".join(lines) + "\n")
        return builtins.open(file, mode, *args, **kwargs)


def test_the_sampled_peak_reads_vmrss_in_kib_at_both_edges_never_the_all_time_vmhwm(monkeypatch):
    """Figures from a status text written here: 1000 kB at the start, 3000 kB at the end, VmHWM 9000 kB."""
    proc = FakeProc(monkeypatch, VmPeak=12_000, VmSize=11_000, VmHWM=9_000, VmRSS=1_000, VmSwap=0)
    with LoadCosts(torch.device("cpu")) as costs:
        sampler = [t for t in threading.enumerate() if t.name == "gdslab-rss-sampler"]
        assert len(sampler) == 1 and sampler[0].daemon  # named in thread dumps; never keeps Python alive
        proc.fields["VmRSS"] = 3_000
    record = costs.costs(0).record()
    assert record["host_peak_method"] == "sampled"
    assert record["host_rss_start"] == 1_024_000 and record["host_rss_peak"] == 3_072_000
    assert record["host_rss_overhead_bytes"] == 2_048_000
    assert not [t for t in threading.enumerate() if t.name == "gdslab-rss-sampler"]  # stopped on exit


def test_a_status_text_without_vmrss_gives_no_rss_figure(monkeypatch):
    FakeProc(monkeypatch, VmPeak=12_000, VmHWM=9_000)  # a kernel or sandbox that hides VmRSS
    with LoadCosts(torch.device("cpu")) as costs:
        pass
    record = costs.costs(0).record()
    assert record["host_rss_start"] is None and record["host_rss_peak"] is None
    assert record["host_rss_overhead_bytes"] is None and costs._sampler is None


def test_a_peak_without_a_start_gives_no_overhead_figure(monkeypatch):
    """clear_refs allowed and VmHWM shown, VmRSS hidden: a peak, but nothing to measure it from."""
    FakeProc(monkeypatch, clear_refs=True, VmHWM=9_000)
    with LoadCosts(torch.device("cpu")) as costs:
        pass
    record = costs.costs(0).record()
    assert record["host_peak_method"] == "VmHWM" and record["host_rss_peak"] == 9_216_000
    assert record["host_rss_start"] is None and record["host_rss_overhead_bytes"] is None


def test_the_record_names_every_figure():
    ledger = load_ledger()
    with LoadCosts(torch.device("cpu")) as costs:
        with ledger.holding(4096):
            pass
    c = costs.costs(0, ledger)
    assert c.record() == {
        "host_overhead_bytes": 4096, "host_overhead_method": "counted", "host_overhead_note": "",
        "host_rss_overhead_bytes": c.host_rss_overhead, "host_peak_method": c.host_method, "host_rss_note": RSS_NOTE,
        "host_rss_start": c.host_rss_start, "host_rss_peak": c.host_rss_peak, "device_overhead_bytes": None,
        "cpu_seconds": c.cpu_seconds}
    assert c.host_rss_start > 0 and c.host_rss_peak >= c.host_rss_start


def test_a_window_reason_reaches_the_costs_note_word_for_word():
    a, b = load_ledger(), load_ledger()
    with LoadCosts(torch.device("cpu")) as costs:
        a.cannot_count("peer A")
        b.cannot_count("peer B")
    assert costs.costs(0).record()["host_overhead_note"] == "peer A; peer B"
    assert costs.costs(0).record()["host_overhead_bytes"] is None


def test_with_a_ledger_the_figures_are_that_loads_not_the_windows():
    mine, other = load_ledger(), load_ledger()
    with LoadCosts(torch.device("cpu")) as costs:
        mine.take(4096)
        other.take(1 << 20)  # another load in the same process at the same time
        other.cannot_count("the other load's peer")
        mine.give(4096)
        other.give(1 << 20)
    assert costs.costs(0, mine).record()["host_overhead_bytes"] == 4096
    assert costs.costs(0, mine).record()["host_overhead_note"] == ""
    assert costs.costs(0).record()["host_overhead_note"] == "the other load's peer"


def test_without_proc_status_no_rss_figure_and_no_crash(monkeypatch):
    """Neither clear_refs nor /proc/self/status (not Linux, a locked-down sandbox): RSS figures are None."""
    real_open = builtins.open

    def refusing_open(file, mode="r", *args, **kwargs):
        if str(file).startswith("/proc/self/"):
            raise FileNotFoundError(2, "No such file or directory", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(costs_module, "open", refusing_open, raising=False)
    with LoadCosts(torch.device("cpu")) as costs:
        pass
    record = costs.costs(0).record()
    assert record["host_rss_start"] is None and record["host_rss_overhead_bytes"] is None
    assert record["host_peak_method"] == "sampled"


def test_the_device_figure_is_peak_allocated_above_what_stays(monkeypatch):
    """A fake CUDA memory-stats source: 700 bytes peak, 500 still allocated (the weights) -> 200 overhead."""
    calls = []
    device = torch.device("cuda", 3)
    # keyed by device: asking for the current device (None) instead of the load's is a KeyError
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: {torch.device("cuda", 3): 700}[device])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: {torch.device("cuda", 3): 500}[device])
    with LoadCosts(device) as costs:
        pass
    assert calls == [("reset", device)]
    assert costs.costs(0).record()["device_overhead_bytes"] == 200
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: {torch.device("cuda", 3): 900}[device])  # grew: 0, not < 0
    with LoadCosts(device) as costs:
        pass
    assert costs.costs(0).record()["device_overhead_bytes"] == 0

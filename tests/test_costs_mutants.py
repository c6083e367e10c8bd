"""gdslab.costs: what mutation testing found unchecked (docs/results/mutation.md).

The fallback measurement runs here only when forced: a kernel that refuses
/proc/self/clear_refs (before Linux 4.0, some containers) leaves VmHWM at the process's
all-time peak, so LoadCosts samples VmRSS instead and says so.
"""

import builtins
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


def test_cpu_seconds_count_the_work_done_inside_the_window():
    with LoadCosts(torch.device("cpu")) as costs:
        start = time.process_time()
        x = 0
        while time.process_time() - start < 0.2:  # burn 0.2 s of CPU in this process
            x += 1
    cpu = costs.costs(0).record()["cpu_seconds"]
    assert 0.15 <= cpu < 30


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
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 700)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 500)
    device = torch.device("cuda", 3)
    with LoadCosts(device) as costs:
        pass
    assert calls == [("reset", device)]
    assert costs.costs(0).record()["device_overhead_bytes"] == 200
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 900)  # freed nothing, grew: 0, not < 0
    with LoadCosts(device) as costs:
        pass
    assert costs.costs(0).record()["device_overhead_bytes"] == 0

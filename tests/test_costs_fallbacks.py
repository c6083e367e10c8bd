"""gdslab.costs on the roads this machine does not take by itself: no /proc/self/clear_refs (the RSS
peak is sampled), an earlier peak that the reset must forget, and device memory figures from a
fake CUDA memory-stats source (no GPU here). The oracle is memory the test itself touches."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from gdslab import costs
from gdslab.costs import LoadCosts

MiB = 1 << 20


def _touch(nbytes: int) -> np.ndarray:
    block = np.empty(nbytes, dtype=np.uint8)
    block.fill(1)  # every page resident
    return block


def _window_holding(nbytes: int, hold_s: float = 0.5) -> LoadCosts:
    with LoadCosts(torch.device("cpu")) as window:
        block = _touch(nbytes)
        time.sleep(hold_s)  # the sampler polls every few ms: it must see this
        del block
    return window


def test_without_clear_refs_the_peak_is_sampled_and_still_sees_a_freed_temporary(monkeypatch):
    monkeypatch.setattr(costs, "_reset_peak_rss", lambda: False)
    window = _window_holding(256 * MiB)
    measured = window.costs(0)
    assert measured.host_method == "sampled"
    assert measured.host_rss_overhead >= 0.9 * 256 * MiB, measured  # gone by the end: only a sample saw it
    assert measured.host_rss_overhead < 1.5 * 256 * MiB, measured


def test_the_kernels_peak_is_reset_so_an_earlier_peak_is_not_this_loads(monkeypatch):
    if not costs._reset_peak_rss():
        pytest.skip("this kernel does not allow /proc/self/clear_refs")
    earlier = _touch(512 * MiB)
    del earlier  # VmHWM now remembers 512 MiB more than the RSS
    costs.trim_heap()
    window = _window_holding(64 * MiB, hold_s=0.0)
    measured = window.costs(0)
    assert measured.host_method == "VmHWM"
    assert 0.9 * 64 * MiB <= measured.host_rss_overhead < 256 * MiB, measured


def test_weights_on_host_are_not_overhead_and_the_estimate_never_goes_negative(monkeypatch):
    window = _window_holding(64 * MiB, hold_s=0.0)
    raw = window.costs(0).host_rss_overhead
    assert window.costs(16 * MiB).host_rss_overhead == raw - 16 * MiB
    assert window.costs(1 << 50).host_rss_overhead == 0


class FakeCudaStats:
    """torch.cuda's memory statistics as a GPU would report them: a peak and what stays allocated."""

    def __init__(self, peak: int, allocated: int):
        self.peak, self.allocated, self.resets = peak, allocated, 0

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)

    def reset(self, device=None):
        self.resets += 1


@pytest.mark.parametrize("peak,allocated,overhead", [
    (3 * MiB + 12_345, 3 * MiB, 12_345),  # temporaries above the weights that stay
    (8 * MiB, 8 * MiB, 0),  # nothing above the weights
    (1 * MiB, 2 * MiB, 0),  # allocated more at the end than the peak seen: never negative
])
def test_device_overhead_is_the_peak_above_what_stays_allocated(monkeypatch, peak, allocated, overhead):
    stats = FakeCudaStats(peak, allocated)
    stats.install(monkeypatch)
    with LoadCosts(torch.device("cuda", 0)) as window:
        pass
    assert stats.resets == 1  # the peak is this load's, not the process's
    assert window.costs(0).device_overhead == overhead
    assert window.costs(0).record()["device_overhead_bytes"] == overhead


def test_a_host_load_has_no_device_figure(monkeypatch):
    stats = FakeCudaStats(5 * MiB, 1 * MiB)
    stats.install(monkeypatch)
    with LoadCosts(torch.device("cpu")) as window:
        pass
    assert stats.resets == 0 and window.costs(0).device_overhead is None

"""What a load costs besides the weights: host staging counted, peak RSS beside it, device memory above the weights.

Users of fast loaders run out of memory not for the weights but for what a loader holds
on the way: a whole shard staged in device memory per rank, a host buffer the size of the
model. `LoadCosts` measures, around one load:

- host, counted: the peak of the host staging memory the data paths took through their
  `hostmem.Ledger` (file buffers, the pinned ring, O_DIRECT bounce blocks). Exact by
  construction, whatever the process did before; None, with the reason, where a peer
  held buffers of its own that cannot be counted. This is `host_overhead_bytes`.
- host, estimated: the process's peak resident memory (VmHWM, reset through
  /proc/self/clear_refs where the kernel allows, else sampled) above where it started,
  less the weights when they land in host memory (`host_rss_overhead_bytes`). Process-wide:
  it moves with whatever the allocator recycles or returns, so it is shown beside the
  count, never instead of it.
- device: torch's peak allocated memory during the load above what is allocated at the
  end (the weights), i.e. the temporaries (spans cut to slices, staging on the GPU).

It also counts the process's CPU time (user + system) during the load: one copy against two
shows there, as CPU seconds per byte. Pinned staging bytes come from the data path (`details["pinned_bytes"]`).
The RSS and device peaks are process-wide: two loads at once in one process share them
(sharded loads measure once, and count the staging of all their ranks together).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import resource
import threading
from dataclasses import dataclass

import torch

from .hostmem import PROCESS, Ledger

_SAMPLE_S = 0.005


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def trim_heap() -> None:
    """Give memory freed earlier back to the OS (glibc's malloc_trim): freed blocks stop counting as resident.

    Before a load, so that reusing them does not hide growth; in a streaming job (reshard),
    so that blocks freed between tensors do not pile up as resident memory.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Set VmHWM back to the current RSS (Linux 4.0+); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Costs:
    """One load's memory besides its weights (bytes); None where it could not be measured."""

    host_rss_start: int | None
    host_rss_peak: int | None
    host_rss_overhead: int | None  # RSS peak above start, less the weights when they land in host memory
    device_overhead: int | None  # peak allocated above what stays allocated (the weights)
    host_method: str  # how the RSS peak was read: "VmHWM" or "sampled"
    cpu_seconds: float = 0.0  # the process's user + system CPU time during the load
    host_overhead: int | None = None  # host staging counted through the ledger; None where not countable
    host_note: str = ""  # why the staging could not be counted ("" when it was)

    def record(self) -> dict:
        return {"host_overhead_bytes": self.host_overhead, "host_overhead_method": "counted",
                "host_overhead_note": self.host_note,
                "host_rss_overhead_bytes": self.host_rss_overhead, "host_peak_method": self.host_method,
                "host_rss_note": RSS_NOTE, "host_rss_start": self.host_rss_start, "host_rss_peak": self.host_rss_peak,
                "device_overhead_bytes": self.device_overhead, "cpu_seconds": self.cpu_seconds}


RSS_NOTE = ("process-wide RSS peak above the start, less host weights: moves with memory the allocator "
            "recycles or returns; an estimate beside the counted host_overhead_bytes")


class LoadCosts:
    """Context manager around one load: `costs(weights_on_host)` once it is done."""

    def __init__(self, device: torch.device):
        self.device = device
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> "LoadCosts":
        trim_heap()
        self.window = PROCESS.window()  # staging of every load in the process, counted
        self.cpu_start = _cpu_seconds()
        self.start = self._sampled_peak = _status_kib("VmRSS")
        self.hwm = _reset_peak_rss()
        if not self.hwm and self.start is not None:
            self._sampler = threading.Thread(target=self._sample, name="gdslab-rss-sampler", daemon=True)
            self._sampler.start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_S):
            self._sample_rss()

    def _sample_rss(self) -> None:
        now = _status_kib("VmRSS")
        if now is not None:
            self._sampled_peak = max(self._sampled_peak, now)

    def __exit__(self, *exc) -> None:
        self.cpu = _cpu_seconds() - self.cpu_start
        self.window.close()
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
            self._sample_rss()  # the end of the load, however short it was
        # sampled: None when VmRSS could not be read at the start (then no sampler ran)
        self.peak = _status_kib("VmHWM") if self.hwm else self._sampled_peak
        self.device_overhead = None
        if self.device.type == "cuda":
            self.device_overhead = max(0, torch.cuda.max_memory_allocated(self.device)
                                       - torch.cuda.memory_allocated(self.device))

    def costs(self, weights_on_host: int, ledger: Ledger | None = None) -> Costs:
        """The costs; the staging counted by `ledger` (one load's), else by every load in the window."""
        rss = None
        if self.start is not None and self.peak is not None:
            rss = max(0, self.peak - self.start - weights_on_host)
        counted = ledger.overhead if ledger is not None else self.window.overhead
        note = "; ".join(ledger.uncounted if ledger is not None else self.window.uncounted)
        return Costs(self.start, self.peak, rss, self.device_overhead, "VmHWM" if self.hwm else "sampled", self.cpu,
                     counted, note)


__all__ = ["Costs", "LoadCosts", "trim_heap"]

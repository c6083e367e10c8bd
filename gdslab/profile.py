"""Timestamped events from a load, and what they add up to.

Every data path reports what it did as `Event`s: one per read, copy, wait or
allocation, with start and end in seconds since the load began (time.perf_counter based),
the bytes it moved, the thread, the file and the device. An event with `landed=True`
means its bytes are now at their destination: the fill curve is built from those alone.

From a list of events this module derives, with no plotting: the fill curve per device
(`fill_curves`), the fill rate (`fill_rate`: per interval, smoothed, mean), where the
time went per stage (`time_split`: busy thread-seconds *and* wall-clock union, because
threads overlap), the per-thread timeline (`thread_timeline`) and one flat record of it
all (`summarize`). `DeviceMemorySampler` samples the GPU's real memory in use during a
load, as context beside the event curve.

The fill curve comes from landing events alone: a pinned copy lands at its CUDA event's
end (a GPU timestamp on the load's clock), a gds read when its future completes. Device
memory is no substitute: `torch.cuda.memory_allocated` follows allocation, which runs
ahead of the bytes (a destination is allocated before it is filled), and NVML's used
memory stays flat whenever the caching allocator hands back segments it already holds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

STAGES = ("alloc", "read", "copy", "wait", "overhead")


@dataclass(frozen=True)
class Event:
    stage: str  # one of STAGES
    start: float  # seconds since the load began
    end: float
    nbytes: int
    thread: str
    file: str
    device: str
    landed: bool = False  # True when these bytes are now at their destination

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def seconds(self) -> float:
        return self.end - self.start


class EventLog:
    """Thread-safe collector that data paths append to while a load runs."""

    def __init__(self, origin: float | None = None):
        self.origin = time.perf_counter() if origin is None else origin
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self.landed_bytes = 0  # running total, read by live widgets without locking

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def add(self, stage: str, start: float, nbytes: int, file: str = "", device: str = "",
            landed: bool = False, end: float | None = None) -> Event:
        event = Event(stage, start, self.now() if end is None else end, nbytes,
                      threading.current_thread().name, str(file), str(device), landed)
        with self._lock:
            self._events.append(event)
            if landed:
                self.landed_bytes += nbytes
        return event

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return sorted(self._events, key=lambda e: (e.start, e.end))


# --- the fill curve and its rate ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FillCurve:
    """Bytes resident at one device over time: a step function that starts at (0 s, 0 B).

    From events, each landed event adds its bytes at its end time. From a sampler, each
    sample holds until the next. `at(t)` reads the curve at any time.
    """

    device: str
    times: np.ndarray  # seconds since the load began, non-decreasing
    nbytes: np.ndarray  # bytes resident at each time (int64)
    source: str = "events"

    @property
    def total(self) -> int:
        return int(self.nbytes[-1]) if len(self.nbytes) else 0

    @property
    def end(self) -> float:
        """Time of the last point (for an event curve: the last landing)."""
        return float(self.times[-1]) if len(self.times) else 0.0

    def at(self, t: float | np.ndarray) -> np.ndarray:
        """Bytes resident at time(s) `t` (0 before the first point)."""
        index = np.searchsorted(self.times, t, side="right") - 1
        values = np.where(index >= 0, self.nbytes[np.clip(index, 0, None)], 0) if len(self.times) else np.zeros_like(t)
        return values


def _landed(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if e.landed]


def fill_curve(events: Iterable[Event], device: str | None = None) -> FillCurve:
    """The fill curve of `device` (every device together when None) from landed events."""
    landed = [e for e in _landed(events) if device is None or e.device == device]
    landed.sort(key=lambda e: e.end)
    times = np.array([0.0] + [e.end for e in landed], dtype=float)
    nbytes = np.cumsum(np.array([0] + [e.nbytes for e in landed], dtype=np.int64))
    return FillCurve("all" if device is None else device, times, nbytes)


def fill_curves(events: Iterable[Event]) -> dict[str, FillCurve]:
    """One fill curve per device that received bytes, in device-name order."""
    events = list(events)
    devices = sorted({e.device for e in _landed(events)})
    return {device: fill_curve(events, device) for device in devices}


def rate_at(curve: FillCurve, t: float, window: float) -> float:
    """Bytes/s landed over the trailing `window` ending at `t` (window clipped at time 0)."""
    span = min(window, t)
    if span <= 0:
        return 0.0
    return float(curve.at(t) - curve.at(t - span)) / span


@dataclass(frozen=True, eq=False)
class FillRate:
    """How fast bytes landed: per interval, smoothed over a trailing window, and on average.

    `times[k]` is the end of interval k, i.e. (k+1)·interval; `instantaneous[k]` is the bytes
    landed in (times[k] − interval, times[k]] divided by the interval; `smoothed[k]` the same
    over the trailing `window`. `mean` is every byte over the time from the load's start to
    the last landing: the number a stopwatch around the load would give. All in bytes/s.
    """

    device: str
    times: np.ndarray
    instantaneous: np.ndarray
    smoothed: np.ndarray
    mean: float
    interval: float
    window: float

    @property
    def peak(self) -> float:
        """Highest smoothed rate (bytes/s): the instantaneous one is too spiky to quote."""
        return float(self.smoothed.max()) if len(self.smoothed) else 0.0


def fill_rate(curve: FillCurve, interval: float | None = None, window: float | None = None) -> FillRate:
    """The rate of `curve`: `interval` defaults to 1/100 of the fill time, `window` to 5 intervals."""
    duration = curve.end
    if interval is None:
        interval = duration / 100 if duration > 0 else 1.0
    if window is None:
        window = 5 * interval
    if interval <= 0 or window <= 0:
        raise ValueError(f"interval and window must be > 0 s, got {interval} and {window}")
    count = int(np.ceil(duration / interval - 1e-9)) if duration > 0 else 0
    times = np.arange(1, count + 1, dtype=float) * interval
    landed = curve.at(times).astype(float)
    instantaneous = (landed - curve.at(times - interval)) / interval
    spans = np.minimum(window, times)
    smoothed = (landed - curve.at(times - spans)) / spans if count else np.zeros(0)
    mean = curve.total / duration if duration > 0 else 0.0
    return FillRate(curve.device, times, instantaneous, smoothed, mean, float(interval), float(window))


def curve_gap(reference: FillCurve, other: FillCurve, points: int = 1000) -> tuple[float, float]:
    """How far `other` strays from `reference`: (largest, mean) |difference| over the load.

    Both curves are read on `points` evenly spaced times from 0 to the later curve's end;
    the gaps are fractions of `reference.total` (0.02 = 2 % of the bytes). Used to check a
    sampled device-memory curve against the event curve.
    """
    end = max(reference.end, other.end)
    if reference.total <= 0 or end <= 0:
        raise ValueError("the reference curve is empty: nothing to compare against")
    times = np.linspace(0.0, end, points)
    gap = np.abs(reference.at(times).astype(float) - other.at(times).astype(float)) / reference.total
    return float(gap.max()), float(gap.mean())


# --- where the time went --------------------------------------------------------------------


def interval_union(intervals: Iterable[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the (start, end) intervals: overlaps count once."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted((float(s), float(e)) for s, e in intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def overlap_seconds(events: Iterable[Event], a: str = "read", b: str = "copy") -> float:
    """Wall-clock seconds during which some `a` event and some `b` event ran at once.

    Zero for a loader that reads, then copies; above zero where reads overlap copies.
    """
    events = list(events)
    first = [(e.start, e.end) for e in events if e.stage == a]
    second = [(e.start, e.end) for e in events if e.stage == b]
    both = first + second
    return max(0.0, interval_union(first) + interval_union(second) - interval_union(both))


@dataclass(frozen=True)
class StageTime:
    """One stage's time, both ways, since threads overlap.

    `busy_s` sums every event's duration (thread-seconds: 8 threads reading for 1 s is 8 s);
    `wall_s` is the wall-clock time during which at least one thread was in this stage.
    """

    stage: str
    count: int = 0
    nbytes: int = 0
    busy_s: float = 0.0
    wall_s: float = 0.0


def time_split(events: Iterable[Event]) -> dict[str, StageTime]:
    """Per stage (every one of STAGES, then any other seen), busy thread-seconds and wall union."""
    by_stage: dict[str, list[Event]] = {stage: [] for stage in STAGES}
    for event in events:
        by_stage.setdefault(event.stage, []).append(event)
    return {
        stage: StageTime(
            stage, len(group), sum(e.nbytes for e in group), float(sum(e.seconds for e in group)),
            interval_union((e.start, e.end) for e in group),
        )
        for stage, group in by_stage.items()
    }


@dataclass(frozen=True)
class ThreadLane:
    """One thread's events in time order: a row of the task timeline."""

    thread: str
    events: tuple[Event, ...]

    @property
    def start(self) -> float:
        return self.events[0].start if self.events else 0.0

    @property
    def end(self) -> float:
        return max((e.end for e in self.events), default=0.0)

    @property
    def busy_s(self) -> float:
        """Time this thread spent in any recorded stage (nested events count once)."""
        return interval_union((e.start, e.end) for e in self.events)


def thread_timeline(events: Iterable[Event]) -> list[ThreadLane]:
    """Events grouped by thread, lanes ordered by each thread's first event."""
    lanes: dict[str, list[Event]] = {}
    for event in sorted(events, key=lambda e: (e.start, e.end)):
        lanes.setdefault(event.thread, []).append(event)
    return sorted((ThreadLane(t, tuple(es)) for t, es in lanes.items()), key=lambda lane: (lane.start, lane.thread))


@dataclass(frozen=True)
class ProfileSummary:
    """What a load's events add up to; `as_dict()` is one flat record for sweeps and reports.

    Rates are decimal GB/s (1e9 B/s), like `LoadResult.gbps`. `unrecorded_s` is the wall
    time between the load's start and its last event when no thread was in any recorded
    stage: setup and Python overhead that no event covers.
    """

    events: int
    threads: int
    devices: tuple[str, ...]
    landed_bytes: int
    landed_by_device: dict[str, int]
    span_s: float  # load start (0) to the last event's end
    fill_s: float  # load start (0) to the last landing
    mean_gbps: float
    peak_gbps: float  # highest smoothed rate of all devices together
    rate_window_s: float
    unrecorded_s: float
    stages: dict[str, StageTime] = field(default_factory=dict)

    def stage_seconds(self, measure: str = "busy") -> dict[str, float]:
        """Stage -> seconds, `measure` 'busy' (thread-seconds) or 'wall' (wall-clock union)."""
        if measure not in ("busy", "wall"):
            raise ValueError(f"measure must be 'busy' or 'wall', got {measure!r}")
        return {s: getattr(t, f"{measure}_s") for s, t in self.stages.items()}

    def as_dict(self) -> dict:
        """Flat: scalars only, so records from many loads make one CSV table."""
        record = {
            "events": self.events, "threads": self.threads, "devices": ",".join(self.devices),
            "landed_bytes": self.landed_bytes, "span_s": self.span_s, "fill_s": self.fill_s,
            "mean_gbps": self.mean_gbps, "peak_gbps": self.peak_gbps,
            "rate_window_s": self.rate_window_s, "unrecorded_s": self.unrecorded_s,
        }
        for device, nbytes in self.landed_by_device.items():
            record[f"landed_bytes[{device}]"] = nbytes
        for stage, t in self.stages.items():
            record[f"{stage}_count"] = t.count
            record[f"{stage}_busy_s"] = t.busy_s
            record[f"{stage}_wall_s"] = t.wall_s
        return record


def summarize(events: Iterable[Event], window: float | None = None) -> ProfileSummary:
    """The summary of one load's events (see `ProfileSummary`); `window` as in `fill_rate`."""
    events = list(events)
    curves = fill_curves(events)
    total = fill_curve(events)
    rate = fill_rate(total, window=window)
    span = float(max((e.end for e in events), default=0.0))
    return ProfileSummary(
        events=len(events),
        threads=len({e.thread for e in events}),
        devices=tuple(curves),
        landed_bytes=total.total,
        landed_by_device={device: curve.total for device, curve in curves.items()},
        span_s=span,
        fill_s=total.end,
        mean_gbps=rate.mean / 1e9,
        peak_gbps=rate.peak / 1e9,
        rate_window_s=rate.window,
        unrecorded_s=max(0.0, span - interval_union((max(0.0, e.start), e.end) for e in events)),
        stages=time_split(events),
    )


# --- the device's own count, as a cross-check -----------------------------------------------


class DeviceMemorySampler:
    """Samples a GPU's memory in use at `hz` on a background thread, while a load runs.

    Use it as a context manager around `gdslab.load(..., log=log)` and pass the same `log`
    here: `curve()` then puts its samples on the event curve's time axis (the loader resets
    `log.origin` when the load starts). Values are bytes above the level found at start.
    `source` is 'allocated' (torch.cuda.memory_allocated: this process's tensors) or 'nvml'
    (the driver's used memory: every process on the card; torch maps the device to NVML's
    index through CUDA_VISIBLE_DEVICES). Destinations are allocated as the load first
    touches them, so the sampled curve leads the event curve by at most the tensors being
    filled, and stays flat where the allocator reuses memory it holds: context, not landing. Where there is no GPU (device 'cpu') it does nothing and
    `reason` says why; `read` overrides what is sampled (a callable returning bytes).
    """

    def __init__(self, device: str = "cuda:0", hz: float = 100.0, *, log: EventLog | None = None,
                 source: str = "allocated", read: Callable[[], int] | None = None):
        if not 1 <= hz <= 1000:
            raise ValueError(f"hz must be within 1..1000, got {hz}")
        if source not in ("allocated", "nvml"):
            raise ValueError(f"source must be 'allocated' or 'nvml', got {source!r}")
        self.device, self.hz, self.log, self.source = str(device), float(hz), log, source
        self.times: list[float] = []  # time.perf_counter() of each sample
        self.values: list[int] = []  # bytes above the baseline
        self.baseline = 0
        self._started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read, self.reason = (read, "") if read is not None else self._reader()
        if read is not None:
            self.source = "custom"

    @property
    def available(self) -> bool:
        return self._read is not None

    def _reader(self) -> tuple[Callable[[], int] | None, str]:
        import torch

        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            return None, f"not a device: {self.device!r}"
        if device.type != "cuda":
            return None, f"{self.device}: the destination is host memory, there is no device memory to sample"
        if not torch.cuda.is_available():
            return None, f"{self.device} asked for, but there is no CUDA GPU here"
        if self.source == "allocated":
            return (lambda: torch.cuda.memory_allocated(device)), ""
        if not hasattr(torch.cuda, "device_memory_used"):
            return None, "this torch has no torch.cuda.device_memory_used (NVML); use source='allocated'"
        try:
            torch.cuda.device_memory_used(device)
        except Exception as e:  # noqa: BLE001 - NVML missing or refusing: say so, sample nothing
            return None, f"NVML cannot report {self.device}: {e}"
        return (lambda: torch.cuda.device_memory_used(device)), ""

    def _sample(self) -> None:
        self.times.append(time.perf_counter())
        self.values.append(int(self._read()) - self.baseline)

    def _run(self) -> None:
        period = 1.0 / self.hz
        while not self._stop.wait(period):
            self._sample()

    def start(self) -> "DeviceMemorySampler":
        if self._thread is not None:
            raise RuntimeError("this sampler is already running")
        if not self.available:
            return self
        self.times.clear()
        self.values.clear()
        self._stop.clear()
        self.baseline = int(self._read())
        self._started = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, name=f"gdslab-sampler-{self.device}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops and joins the sampling thread, then takes one last sample."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()

    def __enter__(self) -> "DeviceMemorySampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def achieved_hz(self) -> float:
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        return (len(self.times) - 1) / span if span > 0 else 0.0

    def curve(self, origin: float | None = None) -> FillCurve:
        """The samples as a fill curve on the load's time axis (origin: `log.origin`, else the start)."""
        if origin is None:
            origin = self.log.origin if self.log is not None else (self._started or 0.0)
        label = {"allocated": "torch.cuda.memory_allocated", "nvml": "NVML used memory"}.get(self.source, self.source)
        return FillCurve(self.device, np.array(self.times, dtype=float) - origin,
                         np.array(self.values, dtype=np.int64), source=f"sampled: {label}")

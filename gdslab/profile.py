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
load, as a cross-check of the event curve.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

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

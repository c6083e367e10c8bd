"""Host staging memory, counted where it is taken: the bytes a load holds now and at its peak.

A process's resident memory (RSS) is a poor witness of what one load held: once earlier
results were freed, the allocator hands their memory to the next load (hiding growth) or
gives it back during the load (inflating it), so the same load measured 25% low or 80%
high in one notebook. The data paths therefore take every host staging buffer through a
`Ledger` (one per load): pageable file buffers, the pinned ring, O_DIRECT bounce blocks.
The count is exact by construction and does not depend on what the process did before.

Every load's ledger also reports to `PROCESS`, the process-wide ledger, on which a `Window`
sees the peak of several concurrent loads together (all ranks of a sharded load). A
peer whose own buffers cannot be counted says so (`uncounted`), and then the ledger has no
figure rather than a guess.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator


class Window:
    """The peak of a ledger's bytes held since the window opened, above what it held then."""

    def __init__(self, ledger: "Ledger"):
        """Made by `Ledger.window()`, under the ledger's lock: no take can slip between the start and the count."""
        self.ledger = ledger
        self.start = self.peak = ledger.held
        self.uncounted: list[str] = []

    @property
    def overhead(self) -> int | None:
        """Peak bytes held above the start; None when something held memory no one could count."""
        return None if self.uncounted else self.peak - self.start

    def close(self) -> None:
        self.ledger._close(self)

    def __enter__(self) -> "Window":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Ledger:
    """Bytes of host staging memory held: `held` now, `peak` since the ledger was made (thread-safe)."""

    def __init__(self, name: str, parent: "Ledger | None" = None):
        self.name = name
        self.parent = parent
        self.held = 0
        self.peak = 0
        self.uncounted: list[str] = []  # why some memory held could not be counted, one line each
        self._lock = threading.Lock()
        self._windows: list[Window] = []

    def take(self, nbytes: int) -> None:
        """Count `nbytes` as held from now on (call right after allocating them)."""
        if nbytes < 0:
            raise ValueError(f"cannot take a negative number of bytes ({nbytes})")
        with self._lock:
            self.held += nbytes
            self.peak = max(self.peak, self.held)
            for window in self._windows:
                window.peak = max(window.peak, self.held)
        if self.parent is not None:
            self.parent.take(nbytes)

    def give(self, nbytes: int) -> None:
        """Count `nbytes` as no longer held (call once the last reference to them is dropped)."""
        with self._lock:
            if nbytes > self.held:
                raise ValueError(f"{self.name} ledger gives back {nbytes} bytes but holds only {self.held}")
            self.held -= nbytes
        if self.parent is not None:
            self.parent.give(nbytes)

    @contextlib.contextmanager
    def holding(self, nbytes: int) -> Iterator[None]:
        """Count `nbytes` as held for the duration of the block (allocate inside it, drop before it ends)."""
        self.take(nbytes)
        try:
            yield
        finally:
            self.give(nbytes)

    def cannot_count(self, why: str) -> None:
        """Say that memory was held here that cannot be counted (a peer's own buffers): no figure, a reason."""
        with self._lock:
            if why not in self.uncounted:
                self.uncounted.append(why)
            for window in self._windows:
                if why not in window.uncounted:
                    window.uncounted.append(why)
        if self.parent is not None:
            self.parent.cannot_count(why)

    @property
    def overhead(self) -> int | None:
        """The peak, or None where some memory could not be counted."""
        return None if self.uncounted else self.peak

    def window(self) -> Window:
        """A window on this ledger from now: its own peak above what is held now."""
        with self._lock:
            window = Window(self)
            self._windows.append(window)
        return window

    def _close(self, window: Window) -> None:
        with self._lock:
            if window in self._windows:
                self._windows.remove(window)

    def record(self) -> dict:
        """The counted figures for a load's record."""
        return {"host_overhead_bytes": self.overhead, "host_overhead_note": "; ".join(self.uncounted)}


PROCESS = Ledger("process")  # every load's ledger reports here


def load_ledger() -> Ledger:
    """A fresh ledger for one load, reporting to `PROCESS`."""
    return Ledger("load", parent=PROCESS)


__all__ = ["Ledger", "PROCESS", "Window", "load_ledger"]

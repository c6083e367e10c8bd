"""gds: KvikIO `CuFile.pread` straight into device tensors, and what KvikIO really did with the bytes.

With a GDS-capable file system and the driver stack (nvidia-fs, or PCIe P2PDMA for local
NVMe), cuFile moves the bytes by DMA into GPU memory; unaligned head and tail bytes go
through cuFile's own GPU bounce buffers, so reads need no 4 KiB alignment. Otherwise
KvikIO reads through POSIX into host bounce buffers, then copies: a bounce under another
name. Neither an open O_DIRECT descriptor nor "not in compatibility mode" proves GDS
(KvikIO keeps the descriptor when cuFile registration fails, and reads under
`gds_threshold` always go through POSIX), so every run counts the bytes each backend
carried with KvikIO's own counters (`kvikio.SummaryMonitor`) and reports that split.

For speed: every file's reads are issued at once (large reads first, into KvikIO's thread
pool; reads under the threshold, which KvikIO does synchronously on the calling thread,
last, so they overlap the large ones); small tensors lying back to back are coalesced into
one read; each read is stamped as landed when its future completes (polled), not when it
is popped in issue order. KvikIO's settings are process-wide (one thread pool), so a
sharded load sets them once for all its ranks (`kvikio_settings`).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field

import torch

from ..errors import LoadCancelled, LoadError
from ..sizes import format_size
from .base import Chunk, Datapath, LoadJob

GDS_PROPER = 0.95  # a run is "GDS proper" when at least this share of its bytes went by the GDS backend
DEFAULT_GDS_THRESHOLD = 16 << 10  # KvikIO 26.10's own default, set explicitly so the record can say it
COALESCE_BELOW = 1 << 20
_POLL_S = 0.0005


@dataclass(frozen=True)
class ByteSplit:
    """The bytes each KvikIO backend carried ("GDS", "POSIX", ...), from KvikIO's counters."""

    bytes_by_backend: dict[str, int]
    gds_available: bool | None = None  # kvikio.cufile_driver.get("is_gds_available")
    gds_threshold: int = DEFAULT_GDS_THRESHOLD
    small_bytes: int = 0  # bytes of the reads issued under gds_threshold (POSIX by design)
    scope: str = "this load"
    ops_by_backend: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary, **context) -> "ByteSplit":
        """From a `kvikio.Summary` (its `by_backend` totals); backends that carried nothing are left out."""
        carried = {name: int(t["bytes_transferred"]) for name, t in summary.by_backend.items()
                   if t["bytes_transferred"]}
        ops = {name: int(t["num_ops"]) for name, t in summary.by_backend.items() if t["num_ops"]}
        return cls(carried, ops_by_backend=ops, **context)

    @property
    def total(self) -> int:
        return sum(self.bytes_by_backend.values())

    def share(self, backend: str) -> float:
        return self.bytes_by_backend.get(backend, 0) / self.total if self.total else 0.0

    @property
    def gds_share(self) -> float:
        return self.share("GDS")

    @property
    def kind(self) -> str:
        """'GDS proper', 'mixed', 'compatibility mode' (no GDS byte) or 'nothing read'."""
        if not self.total:
            return "nothing read"
        if self.gds_share >= GDS_PROPER:
            return "GDS proper"
        return "mixed" if self.gds_share > 0 else "compatibility mode"

    def _why_posix(self) -> str:
        posix = self.bytes_by_backend.get("POSIX", 0)
        threshold = f"the {format_size(self.gds_threshold)} gds_threshold"
        if not posix:
            return ""
        if posix <= self.small_bytes:
            return f" (reads under {threshold})"
        if not self.bytes_by_backend.get("GDS"):
            flag = "" if self.gds_available is None else f", is_gds_available={self.gds_available}"
            return f" (cuFile compatibility mode: POSIX reads through host bounce buffers{flag})"
        return (f" (reads under {threshold}, and {format_size(posix - self.small_bytes)} more that "
                "KvikIO sent through POSIX)")

    def describe(self) -> str:
        """E.g. "GDS 97.3% of bytes, POSIX 2.7% (reads under the 16 KiB gds_threshold)"."""
        if not self.total:
            return "no bytes counted by KvikIO"
        order = sorted(self.bytes_by_backend, key=lambda name: (name != "GDS", -self.bytes_by_backend[name]))
        parts = [f"{name} {self.share(name):.1%}" + (" of bytes" if k == 0 else "") for k, name in enumerate(order)]
        scope = "" if self.scope == "this load" else f" [{self.scope}]"
        return ", ".join(parts) + self._why_posix() + scope

    @property
    def effective(self) -> str:
        return f"gds: {self.kind}: {self.describe()}"

    def record(self) -> dict:
        """Flat fields for a load's record."""
        return {
            "gds_bytes": self.bytes_by_backend.get("GDS", 0), "posix_bytes": self.bytes_by_backend.get("POSIX", 0),
            "gds_share": self.gds_share, "gds_kind": self.kind, "byte_split": self.describe(),
            "gds_threshold": self.gds_threshold, "gds_available": self.gds_available, "split_scope": self.scope,
        }


# --- KvikIO's process-wide settings ---------------------------------------------------------------

_settings_lock = threading.Lock()
_settings_owner: list = []  # the one active settings block of this process, if any


@contextlib.contextmanager
def kvikio_settings(threads: int, io_size: int, gds_threshold: int = DEFAULT_GDS_THRESHOLD):
    """KvikIO's settings (thread pool, task size, threshold) for one load, or for all ranks of a sharded load.

    KvikIO keeps one thread pool per process: setting it inside each rank's thread would
    reset it under the others. The outermost block sets it; blocks nested inside (the
    ranks' loads) change nothing. Yields whether this block is the one that set it.
    """
    import kvikio.defaults

    with _settings_lock:
        owner = not _settings_owner
        if owner:
            _settings_owner.append(threads)
    if not owner:
        yield False
        return
    try:
        with kvikio.defaults.set({"num_threads": threads, "task_size": io_size, "gds_threshold": gds_threshold}):
            yield True
    finally:
        with _settings_lock:
            _settings_owner.clear()


def settings_active() -> bool:
    """Whether an outer `kvikio_settings` block (a sharded load) holds KvikIO's settings now."""
    with _settings_lock:
        return bool(_settings_owner)


def gds_available() -> bool | None:
    try:
        import kvikio.cufile_driver

        return bool(kvikio.cufile_driver.get("is_gds_available"))
    except Exception:  # noqa: BLE001 - unknown is an answer
        return None


class Gds(Datapath):
    name = "gds"
    description = "KvikIO CuFile.pread into device tensors (GPUDirect Storage where the stack allows), byte split measured"
    options = {"gds_threshold": DEFAULT_GDS_THRESHOLD, "register": False}
    coalesce_below = COALESCE_BELOW

    def availability(self, device: torch.device) -> tuple[bool, str]:
        if device.type != "cuda":
            return False, "needs a CUDA device (the destination is host memory here)"
        from ..kvikio_info import kvikio_status

        return kvikio_status()

    def prepare(self, job: LoadJob) -> None:
        """Before the clock: KvikIO's settings (a new thread pool is made when they change) and cuFile's word."""
        self.check(job)
        stack = contextlib.ExitStack()
        shared = settings_active()
        stack.enter_context(kvikio_settings(job.threads, job.io_size, int(job.options["gds_threshold"])))
        job.staging = {"settings": stack, "shared": shared, "gds_available": gds_available()}

    def finish(self, job: LoadJob) -> None:
        if isinstance(job.staging, dict):
            job.staging["settings"].close()
            job.staging = None

    def run(self, job: LoadJob) -> str:
        self.check(job)
        import kvikio

        threshold = int(job.options["gds_threshold"])
        chunks = sorted(job.chunks(), key=lambda c: c.nbytes < threshold)  # large (async) first, small last
        small = sum(c.nbytes for c in chunks if c.nbytes < threshold)
        monitor = kvikio.SummaryMonitor()
        registered = self._register(job, chunks, threshold) if job.options["register"] else []
        try:
            self._read(job, chunks)
        finally:
            summary = monitor.get()
            monitor.stop()
            for view in registered:
                with contextlib.suppress(Exception):
                    kvikio.memory_deregister(view)
        scope = "process-wide: every rank loading in this process" if job.staging["shared"] else "this load"
        split = ByteSplit.from_summary(summary, gds_available=job.staging["gds_available"], gds_threshold=threshold,
                                       small_bytes=small, scope=scope)
        job.details.update(split.record(), registered=len(registered))
        return split.effective

    @staticmethod
    def _register(job: LoadJob, chunks: list[Chunk], threshold: int) -> list:
        """Register each destination of a large read with cuFile (an experiment knob: `register=True`)."""
        import kvikio

        done, views = set(), []
        for c in chunks:
            key = ("g", c.group) if c.group >= 0 else ("t", c.read)
            if c.nbytes < threshold or key in done:
                continue
            done.add(key)
            view = job.chunk_view(c)
            try:
                kvikio.memory_register(view)
                views.append(view)
            except Exception:  # noqa: BLE001 - e.g. the allocation was already registered
                pass
        return views

    @staticmethod
    def _read(job: LoadJob, chunks: list[Chunk]) -> None:
        import kvikio

        handles: dict = {}
        pending: collections.deque = collections.deque()
        try:
            for path in job.files:
                try:
                    handles[path] = kvikio.CuFile(path, "r")
                except Exception as e:  # noqa: BLE001 - cuFile raises RuntimeError subclasses
                    raise LoadError(path, f"KvikIO cannot open it: {e}") from None
            for chunk in chunks:
                job.check_cancel()
                dest = job.chunk_view(chunk)
                start = job.log.now()
                try:
                    future = handles[chunk.file].pread(dest, chunk.nbytes, chunk.file_offset)
                except Exception as e:  # noqa: BLE001
                    raise LoadError(chunk.file, f"KvikIO read failed at byte {chunk.file_offset}: {e}") from None
                pending.append((chunk, start, future))
                _land(job, pending, block=False)
            _land(job, pending, block=True)
        finally:
            for _, _, future in pending:  # drain reads in flight before their memory can go
                with contextlib.suppress(Exception):
                    future.get()
            for handle in handles.values():
                handle.close()


def _land(job: LoadJob, pending: collections.deque, block: bool) -> None:
    """Log the reads whose futures completed, stamped when seen complete.

    Not blocking (while issuing): only the oldest reads are looked at, which is cheap.
    Blocking: every pending read is polled until none is left, so a read that finishes
    early is stamped then, not when the reads before it in issue order are done.
    """
    while pending:
        if block:
            finished = [item for item in pending if item[2].done()]
        else:
            finished = []
            for item in pending:
                if not item[2].done():
                    break
                finished.append(item)
        for item in finished:
            pending.remove(item)
            chunk, start, future = item
            try:
                got = future.get()
            except Exception as e:  # noqa: BLE001
                raise LoadError(chunk.file, f"KvikIO read failed at byte {chunk.file_offset}: {e}") from None
            if got != chunk.nbytes:
                raise LoadError(chunk.file, f"short read at byte {chunk.file_offset}: {got} of {chunk.nbytes} "
                                            "bytes (truncated file?)")
            job.log.add("read", start, chunk.nbytes, chunk.file, job.device, landed=True)
        if not block or not pending:
            return
        if job.cancel.is_set() or job.stopping.is_set():
            raise LoadCancelled(None, "load cancelled")
        time.sleep(_POLL_S)

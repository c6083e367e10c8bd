"""`gdslab.load(...)`: one checkpoint into device memory by one data path, measured.

The loader opens and validates the checkpoint, resolves the device, checks that the
destination fits, measures page-cache residency just before the run, runs the data path
and hands back the tensors with what really happened. On any failure it hands back
nothing: the destinations are dropped, the data path has joined its threads and closed
its files, and one exception names the file and the reason.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import datapaths
from .cache import resident_fraction_all
from .checkpoint import Checkpoint
from .costs import LoadCosts
from .devices import resolve_device
from .datapaths.base import LoadJob, TensorRead
from .errors import GdslabError, LoadCancelled, LoadError
from .pausegc import paused_gc
from .policy import resolve
from .profile import Event, EventLog
from .sizes import format_size, parse_size

COLD_BELOW = 0.05  # resident fraction under which a run counts as cold
WARM_ABOVE = 0.95


def cache_state(resident: float) -> str:
    return "cold" if resident < COLD_BELOW else "warm" if resident > WARM_ABOVE else "partial"


@dataclass
class LoadResult:
    """The tensors of one load and what happened: the record every sweep and chart uses.

    `details` is what the data path and the loader measured besides time: the backend byte
    split of a gds run, the staging ring, the memory the load needed besides the weights.
    """

    tensors: dict[str, torch.Tensor]
    nbytes: int
    seconds: float
    datapath: str
    effective: str
    device: str
    threads: int
    io_size: int
    source: str
    files: list[str]
    resident_before: float
    events: list[Event] = field(repr=False, default_factory=list)
    probe: dict = field(repr=False, default_factory=dict)
    started: str = ""
    options: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def gbps(self) -> float:
        """Decimal GB/s (1e9 bytes per second), as storage and link vendors quote them."""
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def cache(self) -> str:
        return cache_state(self.resident_before)

    def record(self) -> dict:
        """A flat record without tensors or events, for CSV/JSON."""
        return {
            "started": self.started, "source": self.source, "datapath": self.datapath,
            "effective": self.effective, "device": self.device, "threads": self.threads,
            "io_size": self.io_size, "files": len(self.files), "tensors": len(self.tensors),
            "nbytes": self.nbytes, "seconds": self.seconds, "gbps": self.gbps,
            "cache": self.cache, "resident_before": self.resident_before,
            "fs_type": self.probe.get("fs_type", ""), "gds_verdict": self.probe.get("verdict", ""),
            **self.options, **self.details,
        }

    def __str__(self) -> str:
        return (f"{self.datapath} → {self.device}: {format_size(self.nbytes)} in {self.seconds:.3f} s = "
                f"{self.gbps:.2f} GB/s ({self.cache} cache; ran: {self.effective})")


def usable_device_memory(free: int, reserved: int, allocated: int) -> int:
    """Device memory a load can have: free on the card plus what torch's caching allocator holds unused."""
    return free + max(0, reserved - allocated)


def _check_fits(need: int, device: torch.device, source: Path) -> None:
    """Refuse, before reading a byte, a destination of `need` bytes that cannot fit where it must go."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        free = usable_device_memory(free, torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device))
        where = f"{device} ({format_size(free)} free, counting memory torch holds unused)"
    else:
        free = _host_available()
        where = f"host memory ({format_size(free)} available)"
    if free is not None and need > free:
        raise LoadError(source, f"destination of {format_size(need)} does not fit in {where}")


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _drop_frames(error: BaseException) -> None:
    """Clear the locals of a failed load's frames, so no destination outlives the failure."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error.__traceback__ = None  # a cleared frame still holds its function, and so the closures' buffers
        error = error.__cause__ or error.__context__


def load(
    source,
    datapath: str = "auto",
    device: str | torch.device | None = None,
    threads: int | str = "auto",
    io_size: int | str = "auto",
    *,
    reads: list[TensorRead] | None = None,
    log: EventLog | None = None,
    cancel: threading.Event | None = None,
    verify: bool = False,
    measure_costs: bool = True,
    destinations: list[torch.Tensor | None] | None = None,
    **options,
) -> LoadResult:
    """Load `source` (file, folder, index or `Checkpoint`) by `datapath` onto `device`.

    `datapath`, `threads` and `io_size` default to "auto": `gdslab.policy` chooses them from
    the machine and the checkpoint's page-cache residency (and a `gdslab tune` profile), and
    the record's `chosen` and `why` say what and why; an explicit value always wins.

    `reads` (default: every tensor, whole) lets tensor-parallel plans load slices. `log`
    collects events while the load runs (live charts read it); setting `cancel` stops the
    load with `LoadCancelled`. `verify` checksums every tensor where it landed against
    the file's bytes (not counted in `seconds`). `options` are the path's own knobs
    (`datapaths.get(name).options`: e.g. `buffers_per_thread` for pinned-bounce,
    `gds_threshold` and `register` for gds). The clock starts once the device is idle
    and the path's staging is ready (`Datapath.prepare`), and stops when every byte has
    landed. `measure_costs` records the memory the load needed besides the weights.
    `destinations` (one per read, None where the loader should allocate) are filled in
    place: `gdslab.load_into` passes a model's own tensors.
    """
    with paused_gc():  # many tensors make many small objects, none in a cycle: collect once, afterwards
        return _load(source, datapath, device, threads, io_size, reads, log, cancel, verify, measure_costs, options,
                     destinations)


def _load(source, datapath, device, threads, io_size, reads, log, cancel, verify, measure_costs,
          options, destinations=None) -> LoadResult:
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
    device = resolve_device(device)
    auto = resolve(ckpt.root if ckpt.root.is_dir() else ckpt.root.parent,  # "auto" knobs: the policy's, now
                   list(dict.fromkeys(r.file for r in reads)) if reads is not None else [f.path for f in ckpt.files],
                   device, datapath, threads, io_size, options)
    datapath, threads, io_size, options = auto.datapath, auto.threads, auto.io_size, auto.options
    path = datapaths.get(datapath)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    io_size = parse_size(io_size)
    if io_size < 1:
        raise ValueError("io_size must be at least 1 byte")
    options = path.resolve_options(options)
    reads = list(reads) if reads is not None else TensorRead.all_of(ckpt.tensors)
    nbytes = sum(r.nbytes for r in reads)
    fresh = nbytes if destinations is None else sum(r.nbytes for r, d in zip(reads, destinations) if d is None)
    path.check(LoadJob([], device, threads, io_size, EventLog(), threading.Event()))
    _check_fits(fresh, device, ckpt.root)

    from .probe import probe

    files = list(dict.fromkeys(r.file for r in reads))
    report = probe(ckpt.root if ckpt.root.is_dir() else ckpt.root.parent).as_dict()
    resident = resident_fraction_all(files)
    log = log if log is not None else EventLog()
    job = LoadJob(reads, device, threads, io_size, log, cancel if cancel is not None else threading.Event(),
                  options=options, coalesce_below=path.coalesce_below, known_files=files, provided=destinations)
    for shard in ckpt.files:  # a table is a plan: refuse to read a file that changed since
        why = shard.changed() if shard.path in files else None
        if why:
            raise LoadError(shard.path, why)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    costs = LoadCosts(device) if measure_costs else contextlib.nullcontext()
    try:
        with costs:
            try:
                path.prepare(job)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # nothing earlier runs on the clock, or races the copies
                job.start_clock()
                effective = path.run(job)
                tensors = job.result()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - log.origin
            finally:
                path.finish(job)
        if verify:  # checksums every tensor where it landed against the file; not counted in seconds
            from .verify import verify_tensors

            verify_tensors(tensors, reads, job.cancel)
    except LoadCancelled as e:
        _drop_frames(e)
        raise LoadCancelled(ckpt.root, e.reason) from None
    except GdslabError as e:
        _drop_frames(e)
        raise
    except KeyboardInterrupt as e:
        _drop_frames(e)
        raise
    except Exception as e:  # noqa: BLE001 - anything else becomes one clear LoadError
        _drop_frames(e)
        raise LoadError(ckpt.root, f"{datapath} failed: {type(e).__name__}: {e}") from None
    finally:
        job.destinations = []
    details = dict(job.details)
    details.update(auto.details)  # what the policy chose and why (nothing when every knob was given)
    if measure_costs:
        details.update(costs.costs(fresh if device.type == "cpu" else 0, job.host_memory).record())
    return LoadResult(
        tensors=tensors, nbytes=nbytes, seconds=seconds, datapath=datapath,
        effective=effective, device=str(device), threads=threads, io_size=io_size,
        source=str(ckpt.root), files=[str(f) for f in files], resident_before=resident,
        events=log.events, probe=report, started=started,
        options={k: options[k] for k in path.options}, details=details,
    )


class BackgroundLoad:
    """`load(...)` on a worker thread, for progress bars and live charts to watch.

    The worker never prints or draws; watchers read `log.landed_bytes`, `log.events` and
    `total`, and call `stop()` to cancel. `on_done(self)` runs on the worker when the load
    ends, however it ends. `wait()` returns the result or raises the load's error.
    """

    def __init__(self, source, *, on_done=None, thread_name: str = "gdslab-load", **load_kwargs):
        self.checkpoint = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
        reads = load_kwargs.get("reads")
        self.total = sum(r.nbytes for r in reads) if reads is not None else self.checkpoint.nbytes
        self.log = load_kwargs.pop("log", None) or EventLog()
        self.cancel = load_kwargs.pop("cancel", None) or threading.Event()
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self._kwargs = load_kwargs
        self._on_done = on_done
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = load(self.checkpoint, log=self.log, cancel=self.cancel, **self._kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            self.error = e
        finally:
            if self._on_done is not None:
                self._on_done(self)

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def stop(self) -> None:
        self.cancel.set()

    def wait(self, timeout: float | None = None) -> LoadResult:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("load still running")
        if self.error is not None:
            raise self.error
        return self.result


__all__ = ["BackgroundLoad", "LoadResult", "load", "resolve_device", "cache_state"]

"""gds: KvikIO `CuFile.pread` straight into device tensors, and what KvikIO really did with the bytes.

With a GDS-capable file system and the driver stack (nvidia-fs, or PCIe P2PDMA for local
NVMe), cuFile moves the bytes by DMA into GPU memory; unaligned head and tail bytes go
through cuFile's own GPU bounce buffers, so reads need no 4 KiB alignment. Otherwise
KvikIO reads through POSIX into host bounce buffers, then copies: a bounce under another
name. Neither an open O_DIRECT descriptor nor "not in compatibility mode" proves GDS
(KvikIO keeps the descriptor when cuFile registration fails, and reads under
`gds_threshold` always go through POSIX), so every run counts the bytes each backend
carried with KvikIO's own counters (`kvikio.SummaryMonitor`). Nor does KvikIO's "GDS"
counter prove DMA: cuFile serves reads by POSIX itself when its compatibility mode is
allowed. The run's label comes from evidence below cuFile (`gdslab.gds_evidence`): the
nvidia-fs counters read before and after, or a strict run (`strict=True`: compat off).

cuFile DMAs into GPU memory only where destination and file offset share their phase
within 4 KiB; large destinations are placed so (`match_phase`), and the bytes read at a
mismatched phase are counted (`phase_mismatched_bytes`). Reads are logged with the time
they waited in KvikIO's pool apart from the time they ran (`gds_queue_s`, `gds_service_s`).

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
import dataclasses
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import gds_evidence as evidence
from ..errors import DatapathUnavailable, LoadCancelled, LoadError
from ..gds_evidence import Evidence, decide
from ..sizes import format_size
from .base import BLOCK, Chunk, Datapath, LoadJob

GDS_PROPER = evidence.KVIKIO_GDS_SHARE  # KvikIO's GDS backend carried at least this share (not proof of DMA)
PHASE_MATCH_FROM = 1 << 20  # allocations this large are placed at their file offset's phase (4 KiB extra, < 0.4%)
DEFAULT_GDS_THRESHOLD = 16 << 10  # KvikIO 26.10's own default, set explicitly so the record can say it
COALESCE_BELOW = 1 << 20
_POLL_S = 0.0005


@dataclass(frozen=True)
class ByteSplit:
    """The bytes each KvikIO backend carried ("GDS", "POSIX", ...), from KvikIO's counters, and the label
    they earn with whatever evidence from below cuFile came with them (`gdslab.gds_evidence`)."""

    bytes_by_backend: dict[str, int]
    gds_available: bool | None = None  # kvikio.cufile_driver.get("is_gds_available")
    gds_threshold: int = DEFAULT_GDS_THRESHOLD
    small_bytes: int = 0  # bytes of the reads issued under gds_threshold (POSIX by design)
    scope: str = "this load"
    ops_by_backend: dict[str, int] = field(default_factory=dict)
    allow_compat_mode: bool | None = None  # kvikio.cufile_driver.get("allow_compat_mode"): cuFile may serve POSIX
    compat_setting: str | None = None      # kvikio.defaults.get("compat_mode"): ON / OFF / AUTO
    compat_preferred: bool | None = None   # kvikio.defaults.is_compat_mode_preferred()
    evidence: Evidence | None = None

    @classmethod
    def from_summary(cls, summary, **context) -> "ByteSplit":
        """From a `kvikio.Summary` (its `by_backend` totals); backends that carried nothing are left out."""
        carried = {name: int(t["bytes_transferred"]) for name, t in summary.by_backend.items()
                   if t["bytes_transferred"]}
        ops = {name: int(t["num_ops"]) for name, t in summary.by_backend.items() if t["num_ops"]}
        return cls(carried, ops_by_backend=ops, **context)

    def judged(self, **below) -> "ByteSplit":
        """This split with its label decided from `below` (nvfs_before/after, cufile_stats, strict)."""
        return dataclasses.replace(self, evidence=decide(
            self.bytes_by_backend, small_bytes=self.small_bytes, gds_threshold=self.gds_threshold,
            compat_setting=self.compat_setting, compat_preferred=self.compat_preferred, **below))

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
        """The label: "GDS (DMA proven)", "cuFile (DMA not proven)", "POSIX (KvikIO fallback: ...)" or "nothing read"."""
        return (self.evidence or self.judged().evidence).label

    def describe(self) -> str:
        """E.g. "GDS 97.3% of bytes, POSIX 2.7%; cuFile allow_compat_mode=True" (KvikIO's counters only)."""
        if not self.total:
            return "no bytes counted by KvikIO"
        order = sorted(self.bytes_by_backend, key=lambda name: (name != "GDS", -self.bytes_by_backend[name]))
        parts = [f"{name} {self.share(name):.1%}" + (" of bytes" if k == 0 else "") for k, name in enumerate(order)]
        said = ", ".join(parts)
        if self.small_bytes and self.bytes_by_backend.get("POSIX"):
            said += f" ({format_size(min(self.small_bytes, self.bytes_by_backend['POSIX']))} in reads under the " \
                    f"{format_size(self.gds_threshold)} gds_threshold)"
        if self.bytes_by_backend.get("GDS") and self.allow_compat_mode is not None:
            said += f"; cuFile allow_compat_mode={self.allow_compat_mode}"
        scope = "" if self.scope == "this load" else f" [{self.scope}]"
        return said + scope

    @property
    def effective(self) -> str:
        """The label first, exactly (records and tables match on it), then the byte split."""
        return f"{self.kind}; {self.describe()}"

    def record(self) -> dict:
        """Flat fields for a load's record."""
        evidence = self.evidence or self.judged().evidence
        return {
            "gds_bytes": self.bytes_by_backend.get("GDS", 0), "posix_bytes": self.bytes_by_backend.get("POSIX", 0),
            "gds_share": self.gds_share, "gds_kind": evidence.label, "byte_split": self.describe(),
            "gds_threshold": self.gds_threshold, "gds_available": self.gds_available,
            "allow_compat_mode": self.allow_compat_mode, "kvikio_compat_mode": self.compat_setting,
            "compat_mode_preferred": self.compat_preferred, "split_scope": self.scope, **evidence.record(),
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


def driver_state() -> dict:
    """What every gds record carries: cuFile's is_gds_available and allow_compat_mode, KvikIO's compat mode."""
    import kvikio.cufile_driver
    import kvikio.defaults

    state: dict = {}
    for key, ask in (("gds_available", lambda: bool(kvikio.cufile_driver.get("is_gds_available"))),
                     ("allow_compat_mode", lambda: bool(kvikio.cufile_driver.get("allow_compat_mode"))),
                     ("compat_setting", lambda: kvikio.defaults.get("compat_mode").name),
                     ("compat_preferred", lambda: bool(kvikio.defaults.is_compat_mode_preferred()))):
        try:
            state[key] = ask()
        except Exception:  # noqa: BLE001 - unknown is an answer
            state[key] = None
    return state


# --- strict runs: cuFile's compatibility mode off ----------------------------------------------------


@contextlib.contextmanager
def strict_gds(log_dir: str | os.PathLike | None = None):
    """cuFile with compatibility mode off and KvikIO compat OFF, for one load; yields the cufile.json used.

    Where `CUFILE_ENV_PATH_JSON` already names a config with compat off (`gdslab load
    --strict-gds` sets it before cuFile starts), that one is used. Otherwise a temporary copy of
    the config cuFile would read, with compat off, is written and the driver is reopened so that
    it reads it. Either way the driver must then report allow_compat_mode=False, or the load is
    refused: a strict run that cuFile could still serve by POSIX would prove nothing.
    """
    import kvikio
    import kvikio.cufile_driver
    import kvikio.defaults

    given = os.environ.get(evidence.CUFILE_ENV)
    previous_env = given
    made = None
    if given and not evidence.compat_allowed(evidence.read_cufile_json(given)):
        path = Path(given)
    else:
        base_path = evidence.default_cufile_json()
        base = evidence.read_cufile_json(base_path) if base_path else None
        made = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="gdslab-strict-"))
        path = evidence.write_strict_cufile_json(made, base)
        os.environ[evidence.CUFILE_ENV] = str(path)
        with contextlib.suppress(Exception):  # reopen, so that the driver reads the new config
            kvikio.cufile_driver.driver_close()
        kvikio.cufile_driver.driver_open()
    try:
        allowed = kvikio.cufile_driver.get("allow_compat_mode")
        if allowed is not False:
            raise DatapathUnavailable(
                f"strict GDS: cuFile still reports allow_compat_mode={allowed} after reading {path}; it read its "
                "configuration when it started in this process — run `gdslab load --strict-gds` in a fresh process")
        with kvikio.defaults.set("compat_mode", kvikio.CompatMode.OFF):
            yield path
    finally:
        if made is not None:
            if previous_env is None:
                os.environ.pop(evidence.CUFILE_ENV, None)
            else:
                os.environ[evidence.CUFILE_ENV] = previous_env


def cufile_log(config: str | os.PathLike | None) -> str:
    """The cufile.log text of the config's logging.dir (where a strict run's log goes), or ""."""
    if not config:
        return ""
    try:
        folder = evidence.read_cufile_json(config).get("logging", {}).get("dir")
    except ValueError:
        return ""
    if not folder:
        return ""
    return "\n".join(p.read_text(errors="replace") for p in sorted(Path(folder).glob("cufile*.log")))


def _phased_allocator(job: LoadJob):
    """An allocator for `job` that places large device destinations at their file offset's phase mod 4 KiB.

    cuFile DMAs straight into GPU memory only where the destination address and the file offset
    share their position within a 4 KiB page; elsewhere the bytes go through its internal
    bounce buffers. PyTorch's allocator knows nothing of file offsets, so each destination of
    at least `PHASE_MATCH_FROM` bytes gets 4 KiB more and starts at the right phase.
    """
    plain = job._allocate

    def allocate(shape, dtype, nbytes, file, what, phase=0):
        if nbytes < PHASE_MATCH_FROM or phase % dtype.itemsize:
            return plain(shape, dtype, nbytes, file, what, phase)
        start = job.log.now()
        try:
            raw = torch.empty(nbytes + BLOCK, dtype=torch.uint8, device=job.device)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            raise LoadError(file, f"cannot allocate {what} ({nbytes} bytes) on {job.device}: "
                                  f"{str(e).splitlines()[0]}") from None
        at = (phase - raw.data_ptr()) % BLOCK
        tensor = raw[at:at + nbytes].view(dtype).view(shape)
        job.log.add("alloc", start, nbytes, file, job.device)
        return tensor

    return allocate


class Gds(Datapath):
    name = "gds"
    description = "KvikIO CuFile.pread into device tensors (GPUDirect Storage where the stack allows), byte split measured"
    options = {"gds_threshold": DEFAULT_GDS_THRESHOLD, "register": False, "strict": False, "match_phase": True}
    coalesce_below = COALESCE_BELOW

    def availability(self, device: torch.device) -> tuple[bool, str]:
        if device.type != "cuda":
            return False, "needs a CUDA device (the destination is host memory here)"
        from ..kvikio_info import kvikio_status

        return kvikio_status()

    def prepare(self, job: LoadJob) -> None:
        """Before the clock: KvikIO's settings (a new thread pool is made when they change), strict mode,
        cuFile's word, the nvidia-fs counters, and destinations placed at their file offsets' phase."""
        self.check(job)
        stack = contextlib.ExitStack()
        try:
            shared = settings_active()
            stack.enter_context(kvikio_settings(job.threads, job.io_size, int(job.options["gds_threshold"])))
            config = stack.enter_context(strict_gds()) if job.options["strict"] else os.environ.get(evidence.CUFILE_ENV)
            state = driver_state()
            nvfs_before = evidence.read_nvfs_stats()
        except BaseException:
            stack.close()
            raise
        if job.options["match_phase"]:
            job._allocate = _phased_allocator(job)
        job.staging = {"settings": stack, "shared": shared, "state": state, "config": config,
                       "nvfs_before": nvfs_before}

    def finish(self, job: LoadJob) -> None:
        if isinstance(job.staging, dict):
            job.staging["settings"].close()
            job.staging = None

    def run(self, job: LoadJob) -> str:
        self.check(job)
        import kvikio

        staging = job.staging
        threshold = int(job.options["gds_threshold"])
        chunks = sorted(job.chunks(), key=lambda c: c.nbytes < threshold)  # large (async) first, small last
        small = sum(c.nbytes for c in chunks if c.nbytes < threshold)
        state = staging["state"]
        monitor = kvikio.SummaryMonitor()
        registered = self._register(job, chunks, threshold) if job.options["register"] else []
        timing = _Timing(job.threads)
        try:
            self._read(job, chunks, timing, staging["config"] if job.options["strict"] else None)
        finally:
            summary = monitor.get()
            monitor.stop()
            for view in registered:
                with contextlib.suppress(Exception):
                    kvikio.memory_deregister(view)
        nvfs_after = evidence.read_nvfs_stats()
        scope = "process-wide: every rank loading in this process" if staging["shared"] else "this load"
        strict = None
        if job.options["strict"]:
            strict = evidence.StrictRun(config_allows_compat=False, driver_allows_compat=state["allow_compat_mode"],
                                        kvikio_compat_setting=state["compat_setting"], all_reads_ok=True)
        split = ByteSplit.from_summary(
            summary, gds_available=state["gds_available"], gds_threshold=threshold, small_bytes=small, scope=scope,
            allow_compat_mode=state["allow_compat_mode"], compat_setting=state["compat_setting"],
            compat_preferred=state["compat_preferred"],
        ).judged(nvfs_before=staging["nvfs_before"], nvfs_after=nvfs_after, strict=strict)
        if split.bytes_by_backend.get("POSIX"):
            job.host_memory.cannot_count("KvikIO stages POSIX reads in bounce buffers of its own, which it does not expose")
        elif split.bytes_by_backend.get("GDS") and split.evidence.label != evidence.DMA_PROVEN:
            job.host_memory.cannot_count("cuFile may serve reads in compat mode through bounce buffers of its own, "
                                         "which it does not expose")
        # cuFile registers nothing in compatibility mode (KvikIO's memory_register is a no-op there)
        really = 0 if state["compat_preferred"] is not False else len(registered)
        job.details.update(split.record(), registered=really, strict=bool(job.options["strict"]),
                           phase_mismatched_bytes=timing.mismatched, **timing.record())
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
    def _read(job: LoadJob, chunks: list[Chunk], timing: "_Timing", strict_config=None) -> None:
        import kvikio

        def failed(path, what: str, e: Exception) -> LoadError:
            said = f"{what}: {e}"
            if strict_config is not None:
                said = evidence.explain_cufile_error(said, cufile_log(strict_config))
            return LoadError(path, said)

        handles: dict = {}
        pending: collections.deque = collections.deque()
        threshold = int(job.options["gds_threshold"])
        try:
            for path in job.files:
                try:
                    handles[path] = kvikio.CuFile(path, "r")
                except Exception as e:  # noqa: BLE001 - cuFile raises RuntimeError subclasses
                    raise failed(path, "KvikIO cannot open it", e) from None
            for chunk in chunks:
                job.check_cancel()
                dest = job.chunk_view(chunk)
                timing.address(dest.data_ptr(), chunk)
                queued = job.log.now()
                try:
                    future = handles[chunk.file].pread(dest, chunk.nbytes, chunk.file_offset)
                except Exception as e:  # noqa: BLE001
                    raise failed(chunk.file, f"KvikIO read failed at byte {chunk.file_offset}", e) from None
                if chunk.nbytes < threshold:  # KvikIO read it on this thread, now: no queue
                    timing.inline(queued, job.log.now())
                order = None
                if chunk.nbytes >= threshold:
                    order, timing.queued_count = timing.queued_count, timing.queued_count + 1
                pending.append((chunk, queued, future, order))
                _land(job, pending, timing, block=False, failed=failed)
            _land(job, pending, timing, block=True, failed=failed)
        finally:
            for _, _, future, _ in pending:  # drain reads in flight before their memory can go
                with contextlib.suppress(Exception):
                    future.get()
            for handle in handles.values():
                handle.close()


class _Timing:
    """Queue and service time of the reads, apart.

    A read is queued in KvikIO's thread pool when `pread` returns and runs when a pool thread
    takes it. The pool takes tasks in order and a read of at most `task_size` (gdslab's
    io_size) is one task, so with `threads` pool threads read k starts when it was queued or,
    if later, when the (k - threads + 1)-th of the reads queued before it finished, whichever
    is later. Finishes are seen by polling (0.5 ms), so the split is good to about that.
    """

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self.finished: list[float] = []  # completion times of pool reads, in the order seen
        self.queued_count = 0
        self.queue_s = 0.0
        self.service_s = 0.0
        self.mismatched = 0

    def address(self, address: int, chunk: Chunk) -> None:
        """Count the chunk's bytes if its destination is not at its file offset's phase."""
        if (address - chunk.file_offset) % BLOCK:
            self.mismatched += chunk.nbytes

    def inline(self, start: float, end: float) -> None:
        self.service_s += end - start

    def started(self, queued: float, order: int) -> float:
        """When pool read number `order` (0-based, in queue order) was taken by a pool thread."""
        need = order - self.threads + 1
        if need <= 0:
            return queued
        done = sorted(self.finished)
        return max(queued, done[need - 1]) if len(done) >= need else queued

    def record(self) -> dict:
        return {"gds_queue_s": self.queue_s, "gds_service_s": self.service_s}


def _land(job: LoadJob, pending: collections.deque, timing: _Timing, block: bool, failed) -> None:
    """Log the reads whose futures completed, stamped when seen complete, their queue time apart.

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
        now = job.log.now()
        timing.finished.extend(now for item in finished if item[3] is not None)  # seen done at this poll
        for item in finished:
            pending.remove(item)
            chunk, queued, future, order = item
            try:
                got = future.get()
            except Exception as e:  # noqa: BLE001
                raise failed(chunk.file, f"KvikIO read failed at byte {chunk.file_offset}", e) from None
            if got != chunk.nbytes:
                raise LoadError(chunk.file, f"short read at byte {chunk.file_offset}: {got} of {chunk.nbytes} "
                                            "bytes (truncated file?)")
            if order is not None:
                began = timing.started(queued, order)
                if began > queued:
                    job.log.add("wait", queued, 0, chunk.file, job.device, end=began)
                timing.queue_s += began - queued
                timing.service_s += now - began
            else:
                began = queued
            job.log.add("read", began, chunk.nbytes, chunk.file, job.device, landed=True, end=now)
        if not block or not pending:
            return
        if job.cancel.is_set() or job.stopping.is_set():
            raise LoadCancelled(None, "load cancelled")
        time.sleep(_POLL_S)

"""Faults in the middle of a load, for every data path that runs on this machine's CPU.

Each fault must end in one clear exception naming the file (a GdslabError, or the
KeyboardInterrupt itself), with nothing left behind: no thread (none named gdslab-*), no
file descriptor, no staging buffer or destination still alive (every tensor the load
allocated through torch.empty is tracked by a weak reference and must be gone while the
exception is still held, as a notebook holds `sys.last_value`).

How faults are injected, and why: we run as root, where chmod 000 blocks nothing, so
"permission denied" is os.open raising PermissionError for one file (a real chmod is
used when not root); short reads, I/O errors and exceptions in reader threads come from
a wrapped os.preadv. The safetensors path reads through the library's own mmap, out of
reach of those wrappers, as do the peers (runai-streamer, fastsafetensors: their own C++
readers): their faults come through the event log they write to (an exception, a
KeyboardInterrupt or a cancel at the first event) and through the file itself.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import signal
import sys
import time
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path

import pytest

from gdslab.datapaths.pinned_bounce import POOL, release_staging
import torch
from safetensors.torch import load_file, save_file

from gdslab import Checkpoint, GdslabError, LoadCancelled, LoadError, datapaths
from gdslab.checkpoint import INDEX_NAME
from gdslab.datapaths.base import TensorRead
from gdslab.loader import load
from gdslab.profile import EventLog

CPU_PATHS = [info.name for info in datapaths.available("cpu") if info.available]
# gdslab's own paths read with os.open/os.preadv; the library-backed ones (safetensors, peers) do not
OS_PATHS = [p for p in CPU_PATHS if p in {"pageable-bounce", "pinned-bounce", "host-direct"}]
IO_SIZE = 4096 + 13
THREADS = 4


# --- a small real checkpoint: two shards and an HF index ---------------------------------------


def shard_tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"s{seed}.w": (torch.randn(97, 131, generator=g) * 4).to(torch.bfloat16),
        f"s{seed}.b": torch.randn(5003, generator=g),
        f"s{seed}.i": torch.randint(-2**40, 2**40, (777,), generator=g, dtype=torch.int64),
        f"s{seed}.scalar": torch.tensor(seed + 0.5, dtype=torch.float16),
        f"s{seed}.empty": torch.zeros(3, 0, dtype=torch.int8),
    }


def write_sharded(root: Path, seeds=(1, 2)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for k, seed in enumerate(seeds):
        name = f"model-{k + 1:05d}-of-{len(seeds):05d}.safetensors"
        tensors = shard_tensors(seed)
        save_file(tensors, str(root / name), metadata={"format": "pt"})
        weight_map.update({t: name for t in tensors})
    (root / INDEX_NAME).write_text(__import__("json").dumps({"metadata": {}, "weight_map": weight_map}))
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_sharded(tmp_path_factory.mktemp("faults") / "ckpt")


@pytest.fixture()
def ckpt_dir(pristine, tmp_path) -> Path:
    """A fresh copy per test: several tests damage their checkpoint."""
    return Path(shutil.copytree(pristine, tmp_path / "ckpt"))


def shards(root: Path) -> list[Path]:
    return sorted(root.glob("*.safetensors"))


def raw(tensor: torch.Tensor) -> bytes:
    flat = tensor.reshape(-1) if tensor.dim() else tensor.reshape(1)
    return flat.view(torch.uint8).numpy().tobytes()


def assert_bit_exact(result, root: Path) -> None:
    reference = {}
    for shard in shards(root):
        reference.update(load_file(str(shard)))
    assert set(result.tensors) == set(reference)
    for name, ref in reference.items():
        got = result.tensors[name]
        assert (got.dtype, got.shape) == (ref.dtype, ref.shape), name
        assert raw(got) == raw(ref), name


# --- the leak check ---------------------------------------------------------------------------


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


class LeakCheck:
    """Records threads and descriptors before, and weak references to every torch.empty during."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.threads = {t.ident for t in threading.enumerate()}
        self.fds = open_fds()
        self.allocated: list[weakref.ref] = []
        real_empty = torch.empty

        def tracking_empty(*args, **kwargs):
            tensor = real_empty(*args, **kwargs)
            self.allocated.append(weakref.ref(tensor))
            return tensor

        monkeypatch.setattr(torch, "empty", tracking_empty)

    def assert_clean(self) -> None:
        deadline = time.monotonic() + 2  # polled, not joined: see test_ctrl_c_waits_for_the_reader_it_interrupted
        while time.monotonic() < deadline and any(t.ident not in self.threads for t in threading.enumerate()):
            time.sleep(0.01)
        alive = [t.name for t in threading.enumerate() if t.ident not in self.threads]
        assert not alive, f"threads left running: {alive}"
        assert not [t.name for t in threading.enumerate() if t.name.startswith("gdslab-")]
        assert open_fds() == self.fds, "file descriptors leaked"
        # The staging ring is pooled on purpose (reused by the next load); a load must hand it back.
        assert not POOL.busy, f"staging still held by a finished load: {POOL.busy}"
        release_staging()
        if any(ref() is not None for ref in self.allocated):
            gc.collect()  # only when needed: a full collection is slow with torch loaded
        survivors = [ref() for ref in self.allocated if ref() is not None]
        assert not survivors, f"{len(survivors)} tensor(s) allocated by the load still alive: " + \
            ", ".join(f"{t.dtype}{tuple(t.shape)}" for t in survivors[:5])


@contextmanager
def clean_failure(monkeypatch, expected: type[BaseException], *names):
    """Expect `expected`, whose message names one of `names`; then nothing may be left behind."""
    check = LeakCheck(monkeypatch)
    with pytest.raises(expected) as caught:
        yield check
    message = str(caught.value)
    if names and not isinstance(caught.value, KeyboardInterrupt):
        assert any(str(name) in message for name in names), f"{message!r} names none of {names}"
    check.assert_clean()  # while caught.value is still alive


def by_file(fd: int) -> str:
    return os.path.realpath(f"/proc/self/fd/{fd}")


def wrap_preadv(monkeypatch, target: Path, fault, after: int = 2) -> None:
    """os.preadv that calls `fault(fd, buffers, offset, real)` from the `after`-th read of `target` on."""
    real = os.preadv
    target = os.path.realpath(target)
    calls, lock = [0], threading.Lock()

    def preadv(fd, buffers, offset, *rest):
        if by_file(fd) == target:
            with lock:
                calls[0] += 1
                n = calls[0]
            if n >= after:
                return fault(fd, buffers, offset, real)
        return real(fd, buffers, offset, *rest)

    monkeypatch.setattr(os, "preadv", preadv)


class FaultyLog(EventLog):
    """An event log that does something bad at the first event with bytes in it."""

    def __init__(self, action):
        super().__init__()
        self.action, self.fired = action, False

    def add(self, stage, start, nbytes, *args, **kwargs):
        event = super().add(stage, start, nbytes, *args, **kwargs)
        if nbytes and not self.fired:
            self.fired = True
            self.action()
        return event


def go(source, datapath, **kwargs):
    kwargs = {"threads": THREADS, "io_size": IO_SIZE} | kwargs
    return load(source, datapath, "cpu", **kwargs)


# --- the file changes after planning ----------------------------------------------------------


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_truncated_after_planning(ckpt_dir, datapath, monkeypatch):
    plan = Checkpoint.open(ckpt_dir)
    victim = shards(ckpt_dir)[1]
    os.truncate(victim, victim.stat().st_size // 2)
    with clean_failure(monkeypatch, GdslabError, victim):
        go(plan, datapath)


def test_the_plan_notices_a_changed_shard(ckpt_dir):
    """ShardFile.changed(): what a loader needs to refuse a stale plan."""
    plan = Checkpoint.open(ckpt_dir)
    first, second = plan.files
    assert first.changed() is None and second.changed() is None
    replacement = ckpt_dir / "new.tmp"
    shutil.copyfile(first.path, replacement)
    os.replace(replacement, first.path)
    assert "replaced" in first.changed()
    os.truncate(second.path, second.size - 1)
    assert "modified" in second.changed()
    second.path.unlink()
    assert "cannot stat" in second.changed()


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_replaced_after_planning(ckpt_dir, datapath, monkeypatch):
    plan = Checkpoint.open(ckpt_dir)
    victim = shards(ckpt_dir)[0]
    replacement = ckpt_dir / "new.tmp"
    save_file(shard_tensors(1) | {"s1.b": torch.zeros(5003)}, str(replacement), metadata={"format": "pt"})
    assert replacement.stat().st_size == victim.stat().st_size
    os.replace(replacement, victim)
    with clean_failure(monkeypatch, GdslabError, victim):
        go(plan, datapath)


# --- reads that come back short, fail, or are refused ----------------------------------------


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_short_reads_are_completed(ckpt_dir, datapath, monkeypatch):
    """A read that returns fewer bytes than asked (not EOF) is continued, not an error."""

    def short(fd, buffers, offset, real):
        view = memoryview(buffers[0])
        return real(fd, [view[:max(1, len(view) // 3)]], offset)

    wrap_preadv(monkeypatch, shards(ckpt_dir)[0], short, after=1)
    check = LeakCheck(monkeypatch)
    result = go(ckpt_dir, datapath)
    assert_bit_exact(result, ckpt_dir)
    del result
    check.assert_clean()


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_read_hits_end_of_file_early(ckpt_dir, datapath, monkeypatch):
    """A read returning 0 before the planned end: the file shrank under the load."""
    victim = shards(ckpt_dir)[1]
    wrap_preadv(monkeypatch, victim, lambda fd, buffers, offset, real: 0, after=3)
    with clean_failure(monkeypatch, LoadError, victim):
        go(ckpt_dir, datapath)


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_io_error_in_a_reader_thread(ckpt_dir, datapath, monkeypatch):
    victim = shards(ckpt_dir)[0]

    def eio(fd, buffers, offset, real):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    wrap_preadv(monkeypatch, victim, eio, after=4)
    with clean_failure(monkeypatch, LoadError, victim):
        go(ckpt_dir, datapath)


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_permission_denied(ckpt_dir, datapath, monkeypatch):
    """os.open refuses one shard to the data path (as root chmod 000 blocks nothing).

    Only opens from gdslab.datapaths are refused: the page-cache probe before the run opens
    the file too, and would otherwise fail first (with its own CacheError).
    """
    plan = Checkpoint.open(ckpt_dir)
    victim = os.path.realpath(shards(ckpt_dir)[1])
    real_open = os.open

    def guarded_open(path, flags, *args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("gdslab.datapaths") and os.path.realpath(path) == victim:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    with clean_failure(monkeypatch, GdslabError, victim):
        go(plan, datapath)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode: see test_permission_denied")
@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_permission_denied_for_real(ckpt_dir, datapath, monkeypatch):
    plan = Checkpoint.open(ckpt_dir)
    victim = shards(ckpt_dir)[1]
    victim.chmod(0)
    try:
        with clean_failure(monkeypatch, GdslabError, victim):
            go(plan, datapath)
    finally:
        victim.chmod(0o644)


# --- destinations that cannot be allocated ------------------------------------------------------


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_destination_cannot_be_allocated(ckpt_dir, datapath, monkeypatch):
    check = LeakCheck(monkeypatch)
    tracking_empty = torch.empty

    def refusing_empty(*args, **kwargs):
        if shape_of(args, kwargs) == (777,):  # s1.i and s2.i: one destination tensor in each shard
            raise torch.OutOfMemoryError("out of memory (injected by the test)")
        return tracking_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", refusing_empty)
    with pytest.raises(LoadError) as caught:
        go(ckpt_dir, datapath)
    message = str(caught.value)
    assert "cannot allocate" in message and ("'s1.i'" in message or "'s2.i'" in message), message
    assert caught.value.path in shards(ckpt_dir)
    check.assert_clean()


def shape_of(args, kwargs) -> tuple:
    shape = args if args and isinstance(args[0], int) else args[0] if args else kwargs.get("size")
    return (shape,) if isinstance(shape, int) else tuple(shape)


@pytest.mark.parametrize("datapath", [p for p in OS_PATHS if p != "host-direct"])
def test_staging_cannot_be_allocated(ckpt_dir, datapath, monkeypatch):
    """The bounce paths' own buffers: a clear LoadError naming the checkpoint, nothing left."""
    release_staging()  # a ring pooled by an earlier test (any file) would be reused: nothing to refuse
    check = LeakCheck(monkeypatch)
    tracking_empty = torch.empty
    destination_shapes = {tuple(t.shape) for s in (1, 2) for t in shard_tensors(s).values()}

    def refusing_empty(*args, **kwargs):
        if shape_of(args, kwargs) not in destination_shapes:  # a staging buffer
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory (injected by the test)")
        return tracking_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", refusing_empty)
    with pytest.raises(GdslabError) as caught:
        go(ckpt_dir, datapath)
    assert str(ckpt_dir) in str(caught.value) and "allocate" in str(caught.value)
    check.assert_clean()


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_destination_larger_than_memory(ckpt_dir, datapath, monkeypatch):
    """A read plan far larger than the host: refused before a byte is read."""
    victim = shards(ckpt_dir)[0]
    huge = TensorRead("huge", victim, "U8", (1 << 50,), ((0, 1 << 50),))
    with clean_failure(monkeypatch, LoadError, ckpt_dir):
        go(ckpt_dir, datapath, reads=[huge])


# --- exceptions, Ctrl-C and Stop in the middle ---------------------------------------------------


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_exception_in_a_reader_thread(ckpt_dir, datapath, monkeypatch):
    def boom(fd, buffers, offset, real):
        raise RuntimeError("injected reader failure")

    wrap_preadv(monkeypatch, shards(ckpt_dir)[1], boom, after=3)
    with clean_failure(monkeypatch, LoadError, ckpt_dir):
        go(ckpt_dir, datapath)


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_keyboard_interrupt_in_a_reader_thread(ckpt_dir, datapath, monkeypatch):
    def interrupt(fd, buffers, offset, real):
        raise KeyboardInterrupt

    wrap_preadv(monkeypatch, shards(ckpt_dir)[0], interrupt, after=3)
    with clean_failure(monkeypatch, KeyboardInterrupt):
        go(ckpt_dir, datapath)


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, as an interactive session has, whatever the test harness set.

    mutmut's fork server ignores SIGINT and its test processes inherit that: a Ctrl-C sent
    there is dropped, so these tests failed for every mutant (and counted it killed).
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_ctrl_c_stops_the_load_promptly(ckpt_dir, datapath, monkeypatch, ctrl_c_raises):
    """A real SIGINT sent to the main thread (Ctrl-C) while readers are busy: the load stops soon.

    Reads are slowed to 2 ms each and the signal goes out at the third; the load must end
    in KeyboardInterrupt having done well under half of its reads.
    """
    calls, main = [0], threading.main_thread().ident

    def slow(fd, buffers, offset, real):
        calls[0] += 1
        if calls[0] == 3:
            signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.002)
        return real(fd, buffers, offset)

    for shard in shards(ckpt_dir):
        wrap_preadv(monkeypatch, shard, slow, after=1)
    total = sum(-(-e.nbytes // 512) for e in Checkpoint.open(ckpt_dir).tensors)
    with clean_failure(monkeypatch, KeyboardInterrupt):
        go(ckpt_dir, datapath, io_size=512)
    assert calls[0] < total / 2, f"{calls[0]} of {total} reads done after Ctrl-C"


@pytest.mark.parametrize("datapath", OS_PATHS)
def test_ctrl_c_waits_for_the_reader_it_interrupted(ckpt_dir, datapath, monkeypatch, ctrl_c_raises):
    """Ctrl-C while the main thread waits on reader 0, which is mid-read: it must be waited for."""
    main, fired = threading.main_thread().ident, threading.Event()

    def busy(fd, buffers, offset, real):
        me = threading.current_thread().name
        if me.endswith("-0") and not fired.is_set():
            fired.set()
            deadline = time.monotonic() + 1  # let the main thread start every reader and wait on reader 0
            while time.monotonic() < deadline and sum(t.name.startswith("gdslab-") for t in threading.enumerate()) < THREADS:
                time.sleep(0.001)
            time.sleep(0.05)
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.3)  # still reading when the main thread handles Ctrl-C
        return real(fd, buffers, offset)

    for shard in shards(ckpt_dir):
        wrap_preadv(monkeypatch, shard, busy, after=1)
    try:
        go(ckpt_dir, datapath, io_size=512)
    except KeyboardInterrupt:
        running = [t.name for t in threading.enumerate() if t.name.startswith("gdslab-")]
    else:
        pytest.fail("no KeyboardInterrupt")
    deadline = time.monotonic() + 2  # let a stray reader finish before the next test
    while time.monotonic() < deadline and any(t.name.startswith("gdslab-") for t in threading.enumerate()):
        time.sleep(0.01)
    assert not running, f"load raised while {running} still ran"


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_exception_at_the_first_event(ckpt_dir, datapath, monkeypatch):
    def fail():
        raise RuntimeError("injected failure in the middle")

    with clean_failure(monkeypatch, LoadError, ckpt_dir):
        go(ckpt_dir, datapath, log=FaultyLog(fail))


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_keyboard_interrupt_at_the_first_event(ckpt_dir, datapath, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    with clean_failure(monkeypatch, KeyboardInterrupt):
        go(ckpt_dir, datapath, log=FaultyLog(interrupt))


@pytest.mark.parametrize("datapath", CPU_PATHS)
def test_cancel_during_the_load(ckpt_dir, datapath, monkeypatch):
    """Stop from the live widget: the cancel event set once the first bytes moved."""
    cancel = threading.Event()
    with clean_failure(monkeypatch, LoadCancelled):
        go(ckpt_dir, datapath, cancel=cancel, log=FaultyLog(cancel.set))


def test_cancel_names_the_checkpoint(ckpt_dir):
    cancel = threading.Event()
    with pytest.raises(LoadCancelled) as caught:
        go(ckpt_dir, "host-direct", cancel=cancel, log=FaultyLog(cancel.set))
    assert caught.value.path is not None and str(ckpt_dir) in str(caught.value)


# --- two loads at once -------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [(p, CPU_PATHS[(k + 1) % len(CPU_PATHS)]) for k, p in enumerate(CPU_PATHS)])
def test_two_loads_at_once(pristine, tmp_path, pair, monkeypatch):
    other = write_sharded(tmp_path / "other", seeds=(3, 4))
    check = LeakCheck(monkeypatch)
    results, errors, barrier = {}, [], threading.Barrier(2)

    def worker(source: Path, datapath: str) -> None:
        try:
            barrier.wait()
            results[source] = go(source, datapath)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s, p)) for s, p in zip((pristine, other), pair)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert_bit_exact(results[pristine], pristine)
    assert_bit_exact(results[other], other)
    results.clear()
    check.threads |= {t.ident for t in threads}
    check.assert_clean()

"""Page-cache control: drop a file's pages, measure how much of it is resident, warm it.

A "cold" load must read from storage, so before one we evict the checkpoint's pages and
record the resident fraction that remained. Both go through KvikIO's own page-cache
utilities, `kvikio.drop_file_page_cache` (fdatasync, then posix_fadvise DONTNEED) and
`kvikio.get_page_cache_info` (mincore on a mapping of the file); they need neither a GPU nor
libcuda. KvikIO is an optional extra (`gds-cu12`/`gds-cu13`, Linux only) and older releases
lack these two functions, so where they are missing the same two system calls are made here
(fsync + posix_fadvise, and mincore through ctypes); `backend()` says which one runs.

Eviction is advice, not a command: dirty pages, pages mapped by a live process, and file
systems whose pages are the only copy of the data (tmpfs) keep them; `gdslab.holders` names
the processes that map a file. `can_evict(directory)` tries eviction for real on a small
file, so tests and sweeps can skip with the reason instead of mislabelling a warm run as cold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import CacheError, GdslabError
from .filesystem import filesystem_of

__all__ = [
    "CacheError", "evict", "evict_all", "resident_fraction", "resident_fraction_all",
    "resident_bytes", "warm", "can_evict", "eviction_must_work", "page_size", "MUST_EVICT_FS", "backend",
]

# Fallback only (no KvikIO page-cache utilities): pages counted per mincore() call, which
# bounds the status vector (1 byte a page) for huge files.
_MINCORE_WINDOW_PAGES = 1 << 18
_WARM_CHUNK = 16 << 20
_PROBE_FILE_SIZE = 4 << 20
_SAMPLE_MIN, _SAMPLE_MAX = 16 << 10, 256 << 20  # a stand-in file: a few pages, quick to read
# File systems whose pages cannot be dropped: there, the page cache is the storage.
_UNEVICTABLE_FS = {"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"}
# Local disk file systems where fsync + DONTNEED always drops clean, unmapped pages: there a
# failed eviction is a bug (or memory mapped elsewhere), never a property of the place.
MUST_EVICT_FS = {"ext4", "xfs", "btrfs"}

_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


def page_size() -> int:
    """The kernel's page size in bytes (the unit of mincore and of the page cache)."""
    return os.sysconf("SC_PAGE_SIZE")


@functools.lru_cache(maxsize=1)
def _kvikio_page_cache():
    """KvikIO's page-cache utilities (get_page_cache_info, drop_file_page_cache), or None where missing."""
    try:
        import kvikio  # type: ignore[import-not-found]
    except Exception:  # not installed (an optional extra), or its library does not load here
        return None
    if not (hasattr(kvikio, "get_page_cache_info") and hasattr(kvikio, "drop_file_page_cache")):
        return None  # a KvikIO older than these utilities
    return kvikio


def backend() -> str:
    """Which code evicts and counts pages here: KvikIO's utilities, or the fallback and why."""
    kvikio = _kvikio_page_cache()
    if kvikio is not None:
        return f"KvikIO {getattr(kvikio, '__version__', '')} (drop_file_page_cache, get_page_cache_info)"
    return "fallback: fsync + posix_fadvise(DONTNEED) and mincore (KvikIO's page-cache utilities are not installed)"


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.restype = ctypes.c_int
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return libc


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as e:
        raise CacheError(path, f"cannot open: {e.strerror or e}") from None


def evict(path: str | os.PathLike) -> None:
    """Ask the kernel to drop every cached page of `path` (written back first, so none stays dirty)."""
    path = Path(path)
    fd = _open(path)
    try:
        kvikio = _kvikio_page_cache()
        if kvikio is not None:
            try:
                kvikio.drop_file_page_cache(fd, sync_first=True)
            except RuntimeError as e:
                raise CacheError(path, f"kvikio.drop_file_page_cache failed: {e}") from None
            return
        try:
            os.fsync(fd)  # dirty pages cannot be dropped; write them back first
        except OSError as e:
            raise CacheError(path, f"fsync failed: {e.strerror or e}") from None
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as e:
            raise CacheError(path, f"posix_fadvise(DONTNEED) failed: {e.strerror or e}") from None
    finally:
        os.close(fd)


def resident_bytes(path: str | os.PathLike) -> tuple[int, int]:
    """(bytes of `path` now in the page cache, file size); the last page counts only its part."""
    path = Path(path)
    fd = _open(path)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        pagesize = page_size()
        kvikio = _kvikio_page_cache()
        if kvikio is not None:
            try:
                resident_pages, pages = kvikio.get_page_cache_info(fd)
                last_start = (pages - 1) * pagesize
                last_resident = bool(resident_pages) and kvikio.get_page_cache_info(fd, last_start, size - last_start)[0] > 0
            except RuntimeError as e:
                raise CacheError(path, f"kvikio.get_page_cache_info failed: {e}") from None
        else:
            pages, resident_pages, last_resident = _mincore(path, fd, size, pagesize)
    finally:
        os.close(fd)
    tail = size - (pages - 1) * pagesize  # bytes of the file in its last page
    resident = resident_pages * pagesize - ((pagesize - tail) if last_resident else 0)
    return resident, size


def _mincore(path: Path, fd: int, size: int, pagesize: int) -> tuple[int, int, bool]:
    """The fallback count: (pages, resident pages, whether the last page is resident), by mincore."""
    libc = _libc()
    addr = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise CacheError(path, f"mmap for mincore failed: {os.strerror(err)}")
    try:
        pages = -(-size // pagesize)
        vec = np.empty(min(pages, _MINCORE_WINDOW_PAGES), dtype=np.uint8)
        resident_pages = 0
        last_resident = False
        for first in range(0, pages, _MINCORE_WINDOW_PAGES):
            count = min(_MINCORE_WINDOW_PAGES, pages - first)
            start = addr + first * pagesize
            length = min(count * pagesize, size - first * pagesize)
            if libc.mincore(ctypes.c_void_p(start), length, vec.ctypes.data) != 0:
                err = ctypes.get_errno()
                raise CacheError(path, f"mincore failed: {os.strerror(err)}")
            flags = vec[:count] & 1  # bit 0: resident; the other bits are reserved
            resident_pages += int(flags.sum())
            last_resident = bool(flags[count - 1])
    finally:
        libc.munmap(ctypes.c_void_p(addr), size)
    return pages, resident_pages, last_resident


def resident_fraction(path: str | os.PathLike) -> float:
    """Fraction of `path`'s bytes in the page cache, 0.0 to 1.0 (an empty file has none: 0.0)."""
    resident, size = resident_bytes(path)
    return resident / size if size else 0.0


def resident_fraction_all(paths: Iterable[str | os.PathLike]) -> float:
    """Fraction of all bytes of `paths` in the page cache, weighted by file size (0.0 when empty)."""
    resident = total = 0
    for path in paths:
        r, s = resident_bytes(path)
        resident += r
        total += s
    return resident / total if total else 0.0


def evict_all(paths: Iterable[str | os.PathLike]) -> None:
    """`evict` each of `paths`."""
    for path in paths:
        evict(path)


def warm(paths: Iterable[str | os.PathLike]) -> int:
    """Read every byte of `paths` through the page cache so a following load is warm; returns bytes read."""
    total = 0
    buf = bytearray(_WARM_CHUNK)
    view = memoryview(buf)
    for path in paths:
        path = Path(path)
        fd = _open(path)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            with open(fd, "rb", buffering=0, closefd=False) as f:
                while n := f.readinto(view):
                    total += n
        except OSError as e:
            raise CacheError(path, f"read failed: {e.strerror or e}") from None
        finally:
            os.close(fd)
    return total


def _fstype(directory: Path) -> str | None:
    try:
        return filesystem_of(directory).fstype
    except Exception:  # the empirical test below decides anyway
        return None


def _try_eviction(path: str, what: str, folder: Path, fstype: str | None) -> tuple[bool, str]:
    """Read `path` in, evict it, and say whether mincore saw both happen."""
    where = f"{folder} (fs {fstype or 'unknown'})"
    try:
        warm([path])
        before = resident_fraction(path)
        if before < 0.9:
            return False, f"{what} just read in {where} is only {before:.0%} resident: the page cache is not measurable there"
        evict(path)
        after = resident_fraction(path)
    except GdslabError as e:
        return False, str(e)
    if after > 0.1:
        return False, f"eviction does not work in {where}: {after:.0%} of {what} stayed resident after fsync + DONTNEED"
    return True, f"eviction works in {where}: {what} went {before:.0%} -> {after:.0%} resident"


def _existing_sample(folder: Path) -> Path | None:
    """The smallest file of a few pages or more in `folder`: a stand-in where we may not write."""
    try:
        files = [(f.stat().st_size, f) for f in folder.iterdir() if f.is_file() and not f.is_symlink()]
    except OSError:
        return None
    sized = sorted((n, f) for n, f in files if _SAMPLE_MIN <= n <= _SAMPLE_MAX)
    return sized[0][1] if sized else None


@functools.lru_cache(maxsize=None)
def _can_evict(directory: str) -> tuple[bool, str]:
    folder = Path(directory)
    fstype = _fstype(folder)
    if fstype in _UNEVICTABLE_FS:
        return False, f"{folder} is on {fstype}: its pages are the only copy of the data and cannot be evicted"
    try:
        fd, name = tempfile.mkstemp(prefix=".gdslab-evict-check-", dir=folder)
    except OSError as e:
        # A read-only folder (a shared model on Lustre, say): try one of its own files instead.
        sample = _existing_sample(folder)
        if sample is None:
            return False, f"cannot write a test file in {folder} ({e.strerror or e}) and no file there to try"
        return _try_eviction(str(sample), sample.name, folder, fstype)
    try:
        try:
            block = os.urandom(1 << 20)
            for _ in range(_PROBE_FILE_SIZE // len(block)):
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        return _try_eviction(name, "a test file", folder, fstype)
    except OSError as e:
        return False, f"eviction check in {folder} failed: {e.strerror or e}"
    finally:
        try:
            os.unlink(name)
        except OSError:
            pass


def eviction_must_work(directory: str | os.PathLike) -> bool:
    """Whether `directory` is on a local disk file system where eviction cannot legitimately fail."""
    return _fstype(Path(directory).resolve()) in MUST_EVICT_FS


def can_evict(directory: str | os.PathLike) -> tuple[bool, str]:
    """(whether page-cache eviction really works for files in `directory`, why); tried once per process."""
    folder = Path(directory).resolve()
    while not folder.is_dir() and folder != folder.parent:  # a folder still to be created: ask its parent
        folder = folder.parent
    return _can_evict(str(folder))

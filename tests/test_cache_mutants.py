"""gdslab.cache where mutmut found it unchecked: every error path with the exact reason the
system gives, the mapping the mincore fallback must give back, the last page of a file whose
other pages are resident, the stand-in file of a read-only folder at its size bounds, the
eviction check's verdicts at their thresholds, `eviction_must_work` by file-system type, and
`backend()`'s text.

Oracles, none of them gdslab's own code: errors the kernel really returns (mmap of a directory
is ENODEV, fsync of /dev/null is EINVAL, read of a directory is EISDIR, mincore of an address
not on a page boundary is EINVAL) named by `os.strerror`; /proc/self/maps for what this
process still maps; pages this test reads itself with readahead off; sizes and fractions
written here as literals. Where the kernel cannot be made to fail on purpose
(posix_fadvise(DONTNEED) on a file fsync accepts), the call is replaced by one that raises.
"""

from __future__ import annotations

import ctypes
import errno
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import require_eviction, write_synced
from test_cache import counting  # noqa: F401  (fixture: KvikIO's utilities, then the fallback)

from gdslab import cache
from gdslab.cache import CacheError, backend, can_evict, evict, eviction_must_work, resident_bytes, warm

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def fallback(monkeypatch):
    """The fsync/posix_fadvise/mincore fallback, KvikIO's utilities set aside."""
    monkeypatch.setattr(cache, "_kvikio_page_cache", lambda: None)


@pytest.fixture
def kvikio_utils():
    if cache._kvikio_page_cache() is None:
        pytest.skip("KvikIO's page-cache utilities are not installed here")
    return cache._kvikio_page_cache()


def _mapped_here(path: Path) -> bool:
    """Whether this process still maps `path` (its line in /proc/self/maps)."""
    return str(path) in Path("/proc/self/maps").read_text()


# --- the mincore fallback: errors, the mapping given back ---------------------------------

def test_fallback_mmap_failure_names_the_file_and_the_kernels_reason(tmp_path, fallback):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    if os.stat(folder).st_size == 0:
        pytest.skip("a directory here has size 0: resident_bytes answers (0, 0) before mapping it")
    with pytest.raises(CacheError) as e:
        resident_bytes(folder)  # a directory cannot be mapped: ENODEV
    assert e.value.path == folder
    assert e.value.reason == f"mmap for mincore failed: {os.strerror(errno.ENODEV)}"
    assert str(e.value) == f"{folder}: mmap for mincore failed: No such device"


class _MisalignedMincore:
    """The real libc, whose mincore is asked one byte past the page: the kernel answers EINVAL."""

    def __init__(self, libc):
        self.libc = libc
        self.mmap, self.munmap = libc.mmap, libc.munmap

    def mincore(self, addr, length, vec):
        return self.libc.mincore(ctypes.c_void_p(addr.value + 1), length, vec)


def test_fallback_mincore_failure_names_the_file_and_unmaps_it(tmp_path, fallback, monkeypatch):
    path = write_synced(tmp_path / "weights.bin", 3 * PAGE + 1)
    libc = cache._libc()  # the real one, loaded before it is wrapped
    monkeypatch.setattr(cache, "_libc", lambda: _MisalignedMincore(libc))
    with pytest.raises(CacheError) as e:
        resident_bytes(path)
    assert e.value.path == path
    assert e.value.reason == f"mincore failed: {os.strerror(errno.EINVAL)}"
    assert str(e.value) == f"{path}: mincore failed: Invalid argument"
    assert not _mapped_here(path)  # unmapped on the way out, error or not


def test_fallback_gives_back_its_mapping(tmp_path, fallback):
    path = write_synced(tmp_path / "mapped.bin", 5 * PAGE + 3)
    warm([path])
    assert resident_bytes(path) == (5 * PAGE + 3, 5 * PAGE + 3)
    assert not _mapped_here(path)


# --- KvikIO's utilities: their failures, reported as theirs ------------------------------

def test_kvikio_count_failure_is_a_cache_error_naming_kvikio(tmp_path, kvikio_utils):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    if os.stat(folder).st_size == 0:
        pytest.skip("a directory here has size 0: resident_bytes answers (0, 0) before counting")
    with pytest.raises(CacheError) as e:
        resident_bytes(folder)  # KvikIO maps it, and the kernel says ENODEV
    assert e.value.path == folder
    assert e.value.reason.startswith("kvikio.get_page_cache_info failed: ")
    assert os.strerror(errno.ENODEV) in e.value.reason
    assert str(e.value).startswith(f"{folder}: kvikio.get_page_cache_info failed: ")


def test_kvikio_drop_failure_is_a_cache_error_naming_kvikio(kvikio_utils):
    devnull = Path(os.devnull)
    with pytest.raises(CacheError) as e:
        evict(devnull)  # fdatasync of a character device: EINVAL
    assert e.value.path == devnull
    assert e.value.reason.startswith("kvikio.drop_file_page_cache failed: ")
    assert os.strerror(errno.EINVAL) in e.value.reason
    assert str(e.value).startswith(f"{devnull}: kvikio.drop_file_page_cache failed: ")


# --- the fallback's eviction and warm: exact reasons ---------------------------------------

def test_fallback_fsync_failure_gives_the_bare_reason(fallback):
    devnull = Path(os.devnull)
    with pytest.raises(CacheError) as e:
        evict(devnull)  # fsync of a character device: EINVAL
    assert e.value.path == devnull
    assert e.value.reason == "fsync failed: Invalid argument"
    assert str(e.value) == f"{devnull}: fsync failed: Invalid argument"


def test_fallback_fadvise_failure_gives_the_bare_reason(tmp_path, fallback, monkeypatch):
    path = write_synced(tmp_path / "w.bin", PAGE)

    def refuses(fd, offset, length, advice):
        raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))

    monkeypatch.setattr(os, "posix_fadvise", refuses)
    with pytest.raises(CacheError) as e:
        evict(path)
    assert e.value.path == path
    assert e.value.reason == "posix_fadvise(DONTNEED) failed: Illegal seek"
    assert str(e.value) == f"{path}: posix_fadvise(DONTNEED) failed: Illegal seek"


def test_open_failure_gives_the_bare_reason(tmp_path):
    missing = tmp_path / "gone.bin"
    with pytest.raises(CacheError) as e:
        resident_bytes(missing)
    assert e.value.reason == "cannot open: No such file or directory"
    assert str(e.value) == f"{missing}: cannot open: No such file or directory"


def test_warm_read_failure_names_the_file_and_the_bare_reason(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(CacheError) as e:
        warm([folder])  # opens, but reading a directory is EISDIR
    assert e.value.path == folder
    assert e.value.reason == "read failed: Is a directory"
    assert str(e.value) == f"{folder}: read failed: Is a directory"


def test_warm_counts_every_byte_of_every_file_without_warnings(tmp_path):
    sizes = [3 * PAGE + 5, 1, 2 * PAGE]
    paths = [write_synced(tmp_path / f"f{k}.bin", n) for k, n in enumerate(sizes)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "line buffering isn't supported in binary mode"
        assert warm(paths) == 3 * PAGE + 5 + 1 + 2 * PAGE


# --- a resident file whose last page is not ---------------------------------------------

def test_the_last_page_counts_nothing_when_only_the_first_is_resident(tmp_path, counting):
    require_eviction(tmp_path)
    size = 3 * PAGE + 1  # 4 pages, the last holding 1 byte
    path = write_synced(tmp_path / "head.bin", size)
    evict(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: only page 0 comes in
        os.pread(fd, 1, 0)
    finally:
        os.close(fd)
    assert resident_bytes(path) == (PAGE, size)


# --- the stand-in file of a read-only folder --------------------------------------------

def _sized(path: Path, nbytes: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(nbytes)  # sparse: only its size matters here
    return path


def test_stand_in_sizes_are_16KiB_to_256MiB_inclusive(tmp_path):
    low = tmp_path / "low"
    low.mkdir()
    _sized(low / "under.bin", 16 * 1024 - 1)
    _sized(low / "at-min.bin", 16 * 1024)
    _sized(low / "bigger.bin", 16 * 1024 + 1)
    assert cache._existing_sample(low) == low / "at-min.bin"
    high = tmp_path / "high"
    high.mkdir()
    _sized(high / "at-max.bin", 256 * 1024 * 1024)
    _sized(high / "over.bin", 256 * 1024 * 1024 + 1)
    assert cache._existing_sample(high) == high / "at-max.bin"
    none = tmp_path / "none"
    none.mkdir()
    _sized(none / "under.bin", 16 * 1024 - 1)
    _sized(none / "over.bin", 256 * 1024 * 1024 + 1)
    assert cache._existing_sample(none) is None


def test_stand_in_is_never_a_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = _sized(elsewhere / "small.bin", 20 * 1024)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "link.bin").symlink_to(target)  # the smaller, but not this folder's own file
    _sized(folder / "shard.bin", 64 * 1024)
    assert cache._existing_sample(folder) == folder / "shard.bin"
    only_link = tmp_path / "links-only"
    only_link.mkdir()
    (only_link / "link.bin").symlink_to(target)
    assert cache._existing_sample(only_link) is None


# --- the eviction check's verdicts, with residency and the file system given -------------

@pytest.fixture
def fresh_check():
    cache._can_evict.cache_clear()
    yield
    cache._can_evict.cache_clear()


def _stage(monkeypatch, fractions, fstype="xfs"):
    """The check's reads and evictions replaced: resident_fraction answers `fractions` in turn."""
    answers = iter(fractions)

    def fraction(path):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def filesystem_of(directory):
        if fstype is None:
            raise OSError(errno.ENOENT, "no mount table here")
        return SimpleNamespace(fstype=fstype)

    monkeypatch.setattr(cache, "warm", lambda paths: 0)
    monkeypatch.setattr(cache, "evict", lambda path: None)
    monkeypatch.setattr(cache, "resident_fraction", fraction)
    monkeypatch.setattr(cache, "filesystem_of", filesystem_of)


def test_eviction_check_at_its_thresholds(tmp_path, monkeypatch, fresh_check):
    where = tmp_path.resolve()
    _stage(monkeypatch, [0.9, 0.1])  # both exactly at the limits: measurable, and evicted
    assert can_evict(tmp_path) == (True, f"eviction works in {where} (fs xfs): a test file went 90% -> 10% resident")
    cache._can_evict.cache_clear()
    _stage(monkeypatch, [0.89])
    assert can_evict(tmp_path) == (
        False, f"a test file just read in {where} (fs xfs) is only 89% resident: the page cache is not measurable there")
    cache._can_evict.cache_clear()
    _stage(monkeypatch, [1.0, 0.11])
    assert can_evict(tmp_path) == (
        False, f"eviction does not work in {where} (fs xfs): 11% of a test file stayed resident after fsync + DONTNEED")


def test_eviction_check_names_an_unknown_file_system(tmp_path, monkeypatch, fresh_check):
    _stage(monkeypatch, [1.0, 0.0], fstype=None)
    assert can_evict(tmp_path) == (
        True, f"eviction works in {tmp_path.resolve()} (fs unknown): a test file went 100% -> 0% resident")


def test_eviction_check_reports_a_cache_error_as_its_reason(tmp_path, monkeypatch, fresh_check):
    _stage(monkeypatch, [CacheError(Path("/models/shard.bin"), "mincore failed: Invalid argument")])
    assert can_evict(tmp_path) == (False, "/models/shard.bin: mincore failed: Invalid argument")


# --- eviction_must_work: by the file system of the resolved folder ------------------------

@pytest.mark.parametrize("fstype,must", [("ext4", True), ("xfs", True), ("btrfs", True), ("tmpfs", False),
                                         ("nfs4", False), ("lustre", False), ("overlay", False)])
def test_eviction_must_work_by_file_system_type(tmp_path, monkeypatch, fstype, must):
    real = tmp_path / "disk"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    table = {real.resolve(): fstype}

    def filesystem_of(directory):  # a mount table that knows the real folder only
        return SimpleNamespace(fstype=table[directory])

    monkeypatch.setattr(cache, "filesystem_of", filesystem_of)
    assert eviction_must_work(link) is must  # judged where the link leads
    assert eviction_must_work(real) is must


def test_eviction_must_work_is_false_where_the_file_system_is_unknown(tmp_path, monkeypatch):
    def filesystem_of(directory):
        raise OSError(errno.ENOENT, "no mount table here")

    monkeypatch.setattr(cache, "filesystem_of", filesystem_of)
    assert eviction_must_work(tmp_path) is False


# --- backend(): which code runs, in words --------------------------------------------------

def test_backend_names_kvikio_and_its_version(monkeypatch):
    fake = SimpleNamespace(__version__="25.06.01", get_page_cache_info=None, drop_file_page_cache=None)
    monkeypatch.setattr(cache, "_kvikio_page_cache", lambda: fake)
    assert backend() == "KvikIO 25.06.01 (drop_file_page_cache, get_page_cache_info)"
    unversioned = SimpleNamespace(get_page_cache_info=None, drop_file_page_cache=None)
    monkeypatch.setattr(cache, "_kvikio_page_cache", lambda: unversioned)
    assert backend() == "KvikIO  (drop_file_page_cache, get_page_cache_info)"


def test_backend_names_the_fallback_and_why(fallback):
    assert backend() == ("fallback: fsync + posix_fadvise(DONTNEED) and mincore "
                         "(KvikIO's page-cache utilities are not installed)")

"""Page-cache control on real files: read -> resident, evict -> not resident.

gdslab counts with KvikIO's `get_page_cache_info` (or its mincore fallback); the oracle is
util-linux `fincore`, a separate program, wherever it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_eviction, write_synced

from gdslab.cache import (CacheError, can_evict, evict, evict_all, page_size, resident_bytes,
                          resident_fraction, resident_fraction_all, warm)

MiB = 1 << 20


@pytest.fixture
def evictable(tmp_path) -> Path:
    require_eviction(tmp_path)
    return tmp_path


@pytest.fixture(params=["kvikio", "fallback"])
def counting(request, monkeypatch):
    """Run a test with KvikIO's page-cache utilities, and again with the mincore/fadvise fallback."""
    from gdslab import cache

    if request.param == "kvikio":
        if cache._kvikio_page_cache() is None:
            pytest.skip("KvikIO's page-cache utilities are not installed here")
        assert cache.backend().startswith("KvikIO")
    else:
        monkeypatch.setattr(cache, "_kvikio_page_cache", lambda: None)
        assert cache.backend().startswith("fallback")
    return request.param


def fincore_pages(path: Path) -> int | None:
    """Resident pages of `path` as util-linux fincore counts them (None where fincore is missing)."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--noheadings", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def agrees_with_fincore(path: Path) -> None:
    """gdslab's resident bytes, rounded up to pages, equal fincore's resident pages."""
    expected = fincore_pages(path)
    if expected is None:
        return
    resident, _ = resident_bytes(path)
    assert -(-resident // page_size()) == expected, (path, resident, expected)


def test_read_makes_resident_and_evict_drops_it(evictable, counting):
    path = write_synced(evictable / "weights.bin", 8 * MiB + 123)  # not a multiple of the page size
    assert warm([path]) == path.stat().st_size
    assert resident_fraction(path) == pytest.approx(1.0, abs=0.01)
    resident, size = resident_bytes(path)
    assert size == 8 * MiB + 123 and resident == size  # the last page counts only the file's part of it
    agrees_with_fincore(path)
    evict(path)
    assert resident_fraction(path) <= 0.02
    agrees_with_fincore(path)
    warm([path])
    assert resident_fraction(path) >= 0.99
    agrees_with_fincore(path)


def test_fincore_is_there_to_check_us():
    if shutil.which("fincore") is None:
        pytest.skip("util-linux fincore is not installed: the page counts are checked against nothing else")
    assert fincore_pages(Path(__file__)) is not None


def test_partial_read_is_measured_to_the_page(evictable, counting):
    path = write_synced(evictable / "part.bin", 8 * MiB)
    evict(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: only what we read comes in
        os.pread(fd, 2 * MiB, 0)
    finally:
        os.close(fd)
    resident, _ = resident_bytes(path)
    assert 2 * MiB <= resident <= 2 * MiB + 64 * page_size()
    agrees_with_fincore(path)


def test_fraction_of_many_files_is_weighted_by_bytes(evictable, counting):
    big = write_synced(evictable / "big.bin", 8 * MiB)
    small = write_synced(evictable / "small.bin", 4 * MiB)
    empty = write_synced(evictable / "empty.bin", 0)
    warm([big])
    evict(small)
    assert resident_fraction_all([big, small, empty]) == pytest.approx(8 / 12, abs=0.02)
    evict_all([big, small, empty])
    assert resident_fraction_all([big, small, empty]) <= 0.02
    warm([big, small])
    assert resident_fraction_all([big, small]) >= 0.99


def test_zero_size_file(tmp_path, counting):
    path = write_synced(tmp_path / "empty.bin", 0)
    assert resident_bytes(path) == (0, 0)
    assert resident_fraction(path) == 0.0
    assert resident_fraction_all([path]) == 0.0
    assert resident_fraction_all([]) == 0.0
    evict(path)
    assert warm([path]) == 0


@pytest.mark.parametrize("call", [evict, resident_fraction, lambda p: warm([p])])
def test_missing_file_is_a_cache_error_naming_it(tmp_path, call, counting):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CacheError, match="nope.safetensors") as e:
        call(missing)
    assert e.value.path == missing and "cannot open" in e.value.reason


def test_can_evict_answers_with_a_reason(tmp_path):
    ok, why = can_evict(tmp_path / "not" / "made" / "yet")  # judged by its nearest existing parent
    assert isinstance(ok, bool) and str(tmp_path.resolve()) in why
    assert not list(tmp_path.iterdir())  # the test file is gone


def test_tmpfs_cannot_evict():
    shm = Path("/dev/shm")
    from gdslab.probe import filesystem_of

    if not shm.is_dir() or filesystem_of(shm).fstype != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    ok, why = can_evict(shm)
    assert not ok and "tmpfs" in why


def test_can_evict_in_a_read_only_folder_tries_a_file_of_its_own(tmp_path, monkeypatch):
    import errno
    import tempfile

    ok_here, _ = can_evict(tmp_path / "writable")
    folder = tmp_path / "model"
    folder.mkdir()
    write_synced(folder / "config.json", 100)  # too small to say anything
    write_synced(folder / "shard.bin", 1 * MiB)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    write_synced(empty / "config.json", 100)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # as on a read-only mount (root ignores chmod)
    ok, why = can_evict(folder)
    assert "shard.bin" in why and ok == ok_here
    ok, why = can_evict(empty)
    assert not ok and "Read-only file system" in why and "no file there to try" in why


def test_a_broken_eviction_fails_the_tests_instead_of_skipping_them(tmp_path, monkeypatch):
    import os

    from gdslab import cache

    if not cache.eviction_must_work(tmp_path):
        pytest.skip("this folder's file system may legitimately refuse eviction")
    monkeypatch.setattr(cache, "evict", lambda path: None)  # eviction turned into a no-op
    cache._can_evict.cache_clear()
    try:
        assert can_evict(tmp_path)[0] is False
        with pytest.raises(pytest.fail.Exception, match="must work on this file system"):
            require_eviction(tmp_path)
    finally:
        cache._can_evict.cache_clear()

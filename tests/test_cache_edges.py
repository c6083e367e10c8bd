"""gdslab.cache at its edges: dirty pages never written back, sizes a byte either side of a page,
a resident last page that holds only part of a page, and the fallback's mincore windows.

The oracle is the arithmetic of the file's own size and the pages this test itself reads (with
readahead off), and util-linux `fincore` wherever it is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import require_eviction
from test_cache import agrees_with_fincore, counting, fincore_pages  # noqa: F401  (fixture)

from gdslab import cache
from gdslab.cache import evict, page_size, resident_bytes, warm

PAGE = page_size()


@pytest.fixture
def folder(tmp_path) -> Path:
    require_eviction(tmp_path)
    return tmp_path


def _write(path: Path, nbytes: int, sync: bool = True) -> Path:
    with open(path, "wb") as f:
        f.write(os.urandom(nbytes))
        f.flush()
        if sync:
            os.fsync(f.fileno())
    return path


def _read_pages(path: Path, pages: list[int]) -> None:
    """Bring exactly these pages in (readahead off)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in pages:
            os.pread(fd, 1, page * PAGE)
    finally:
        os.close(fd)


def test_a_file_just_written_and_never_synced_is_still_evicted(folder, counting):
    path = _write(folder / "dirty.bin", 8 << 20, sync=False)  # its pages are dirty: DONTNEED alone keeps them
    evict(path)
    assert resident_bytes(path) == (0, 8 << 20)
    if fincore_pages(path) is not None:
        assert fincore_pages(path) == 0


@pytest.mark.parametrize("size", [1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, 3 * PAGE + 1])
def test_a_warm_file_is_exactly_its_size_resident_and_a_cold_one_nothing(folder, counting, size):
    path = _write(folder / f"f{size}.bin", size)
    warm([path])
    assert resident_bytes(path) == (size, size)
    assert cache.resident_fraction(path) == 1.0
    evict(path)
    assert resident_bytes(path) == (0, size)
    agrees_with_fincore(path)


@pytest.mark.parametrize("size", [3 * PAGE + 1, 3 * PAGE + PAGE // 2, 4 * PAGE])
def test_the_last_page_counts_only_the_bytes_of_the_file_in_it(folder, counting, size):
    path = _write(folder / "tail.bin", size)
    evict(path)
    last = -(-size // PAGE) - 1
    _read_pages(path, [last])
    assert resident_bytes(path) == (size - last * PAGE, size)
    _read_pages(path, [0])
    assert resident_bytes(path) == (PAGE + size - last * PAGE, size)
    agrees_with_fincore(path)


def test_the_fallback_counts_across_its_mincore_windows(folder, monkeypatch):
    monkeypatch.setattr(cache, "_kvikio_page_cache", lambda: None)
    monkeypatch.setattr(cache, "_MINCORE_WINDOW_PAGES", 4)  # windows of 4 pages: 0-3, 4-7, 8-11
    size = 10 * PAGE + 7  # 11 pages, the last holding 7 bytes
    path = _write(folder / "windows.bin", size)
    evict(path)
    chosen = [3, 4, 7, 8]  # either side of each window's edge
    _read_pages(path, chosen)
    assert resident_bytes(path) == (len(chosen) * PAGE, size)
    _read_pages(path, [10])  # the partial last page, alone in the last window
    assert resident_bytes(path) == (len(chosen) * PAGE + 7, size)
    agrees_with_fincore(path)

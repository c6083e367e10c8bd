"""The read floor reads every byte of the files; the H2D ceiling refuses a host device."""

import pytest

from gdslab.floors import h2d_ceiling, read_floor


def test_read_floor_reads_every_byte(tmp_path):
    files = []
    for k, size in enumerate([0, 1, 4097, 3 * 65536 + 5]):
        path = tmp_path / f"f{k}"
        path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
        files.append(path)
    result = read_floor(files, threads=3, io_size="64KiB")
    assert result.nbytes == sum(p.stat().st_size for p in files)
    assert result.seconds > 0 and result.gbps > 0


def test_h2d_ceiling_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        h2d_ceiling("cpu")


def test_direct_read_floor_reads_every_byte_around_the_page_cache(tmp_path):
    from gdslab.cache import evict_all, resident_fraction_all
    from gdslab.floors import direct_read_floor

    files = []
    for k, size in enumerate([1, 4097, 3 * 65536 + 5, 2 << 20]):
        path = tmp_path / f"f{k}"
        path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
        files.append(path)
    evict_all(files)
    result = direct_read_floor(files, threads=3, io_size="64KiB")
    assert result.nbytes == sum(p.stat().st_size for p in files) and result.gbps > 0
    assert "O_DIRECT" in result.what
    assert resident_fraction_all(files) < 0.05  # nothing went through the page cache

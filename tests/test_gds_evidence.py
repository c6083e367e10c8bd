"""The label a gds run earns: "DMA proven" only from evidence below cuFile, every threshold at and just under.

Oracles: recorded nvidia-fs stats files (tests/fixtures/nvidia-fs, the layout of gds-nvidia-fs's
nvfs-stat.c), cufile.json variants (tests/fixtures/cufile), and byte splits taken from
`kvikio.Summary` values built through KvikIO's own API.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdslab import gds_evidence as ev

FIXTURES = Path(__file__).parent / "fixtures"
NVFS = FIXTURES / "nvidia-fs"
CUFILE = FIXTURES / "cufile"
MIB = 1 << 20


def stats(name: str) -> ev.NvfsStats:
    return ev.parse_nvfs_stats((NVFS / name).read_text(), name)


def summary(**carried: int):
    """A `kvikio.Summary` as KvikIO builds it (from a real monitor's reading), with these bytes per backend."""
    kvikio = pytest.importorskip("kvikio", reason="KvikIO is not installed")
    monitor = kvikio.SummaryMonitor()
    fields = json.loads(monitor.get().to_json())
    monitor.stop()
    for name, nbytes in carried.items():
        fields["by_backend"][name] = {"num_ops": 1, "bytes_transferred": nbytes, "total_duration_ns": 1,
                                      "num_errors": 0}
    fields["bytes_transferred"] = fields["bytes_read"] = sum(carried.values())
    return kvikio.Summary(**fields)


def carried(s) -> dict[str, int]:
    return {name: int(t["bytes_transferred"]) for name, t in s.by_backend.items() if t["bytes_transferred"]}


# --- nvidia-fs stats -----------------------------------------------------------------------------


def test_the_recorded_stats_parse():
    before, after = stats("stats_before.txt"), stats("stats_after_dma.txt")
    assert before.io_stats_enabled and (before.reads, before.reads_ok, before.read_errors, before.read_mib) == \
        (1200, 1200, 0, 10240)
    assert after.read_mib == 10340
    off = stats("stats_disabled.txt")
    assert not off.io_stats_enabled and off.read_mib == 0


def test_not_nvfs_stats_is_an_error_naming_the_source():
    with pytest.raises(ValueError, match="mystats: not nvidia-fs statistics"):
        ev.parse_nvfs_stats("hello\n", "mystats")
    text = (NVFS / "stats_before.txt").read_text().replace("readMiB=", "readKiB=")
    with pytest.raises(ValueError, match="x: IO stats are enabled but the 'Reads' line lacks"):
        ev.parse_nvfs_stats(text, "x")


def test_read_from_a_recorded_tree(tmp_path):
    from gdslab.sysroot import SysRoot

    assert ev.read_nvfs_stats(SysRoot(tmp_path)) is None  # module not loaded
    (tmp_path / "proc/driver/nvidia-fs").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia-fs/stats").write_text((NVFS / "stats_before.txt").read_text())
    assert ev.read_nvfs_stats(SysRoot(tmp_path)).read_mib == 10240


def test_the_counter_proves_dma_exactly_at_its_threshold_and_not_just_under():
    before, after = stats("stats_before.txt"), stats("stats_after_dma.txt")  # grew by 100 MiB
    # The rule: readMiB must grow by floor(95% of the cuFile bytes / MiB). 100 MiB of growth covers every
    # load up to the last byte count whose 95% is under 101 MiB, and no byte more.
    last = (101 * MIB * 100 - 1) // 95          # 95% of it (floored) is 101 MiB - 1 byte
    assert last * 95 // 100 < 101 * MIB <= (last + 1) * 95 // 100
    assert ev.nvfs_dma_proves(before, after, last)[0]
    assert not ev.nvfs_dma_proves(before, after, last + 1)[0]
    assert ev.nvfs_dma_proves(before, after, 100 * MIB)[0]


def test_a_counter_that_did_not_move_proves_nothing():
    before, after = stats("stats_before.txt"), stats("stats_after_none.txt")
    ok, why = ev.nvfs_dma_proves(before, after, 100 * MIB)
    assert not ok and "grew by 0 MiB" in why
    # under a MiB the counter cannot move at all: at least one whole MiB is needed
    assert not ev.nvfs_dma_proves(before, after, 1000)[0]


def test_disabled_or_missing_counters_say_how_to_turn_them_on():
    ok, why = ev.nvfs_dma_proves(stats("stats_disabled.txt"), stats("stats_disabled.txt"), MIB)
    assert not ok and "rw_stats_enabled" in why
    assert not ev.nvfs_dma_proves(None, None, MIB)[0]


# --- cuFile stats ------------------------------------------------------------------------------------


def test_cufile_stats_prove_at_the_threshold_and_not_just_under():
    total = 100 * MIB
    need = total * 95 // 100                     # exactly 95% (100 MiB divides by 100)
    assert need * 100 == 95 * total
    assert ev.cufile_stats_prove(ev.CuFileStats(need, total - need), total)[0]
    assert not ev.cufile_stats_prove(ev.CuFileStats(need - 1, total - need + 1), total)[0]
    assert not ev.cufile_stats_prove(ev.CuFileStats(0, 0), 0)[0]
    assert not ev.cufile_stats_prove(None, total)[0]


# --- cufile.json --------------------------------------------------------------------------------------


def test_cufile_json_with_and_without_compat():
    assert ev.compat_allowed(ev.read_cufile_json(CUFILE / "with_compat.json"))  # comments stripped, URL kept
    assert ev.read_cufile_json(CUFILE / "with_compat.json")["properties"]["rdma_dev_addr_list"] == \
        ["http://not-a-comment"]
    assert not ev.compat_allowed(ev.read_cufile_json(CUFILE / "without_compat.json"))
    assert ev.compat_allowed(ev.read_cufile_json(CUFILE / "compat_unset.json"))  # cuFile's default allows it


def test_a_broken_cufile_json_is_named():
    with pytest.raises(ValueError, match="broken.json: not JSON"):
        ev.read_cufile_json(CUFILE / "broken.json")
    with pytest.raises(ValueError, match="missing.json: cannot read"):
        ev.read_cufile_json(CUFILE / "missing.json")


def test_the_strict_config_keeps_the_base_and_turns_compat_off(tmp_path):
    base = ev.read_cufile_json(CUFILE / "with_compat.json")
    path = ev.write_strict_cufile_json(tmp_path / "strict", base)
    written = json.loads(path.read_text())
    assert not ev.compat_allowed(written) and written["profile"]["cufile_stats"] == 3
    assert written["logging"]["dir"] == str(tmp_path / "strict")
    assert written["fs"] == base["fs"] and ev.compat_allowed(base)  # the base is not changed
    env = ev.strict_environment(path)
    assert env == {"CUFILE_ENV_PATH_JSON": str(path), "KVIKIO_COMPAT_MODE": "OFF"}


def test_strict_needs_every_part():
    assert ev.StrictRun(False, False, "OFF", True).proves()[0]
    assert not ev.StrictRun(False, False, "OFF", False).proves()[0]          # a read failed
    assert not ev.StrictRun(True, False, "OFF", True).proves()[0]            # config allows compat
    assert not ev.StrictRun(False, True, "OFF", True).proves()[0]            # the driver did not take it
    assert not ev.StrictRun(False, None, "OFF", True).proves()[0]
    assert "KvikIO compat_mode=AUTO" in ev.StrictRun(False, False, "AUTO", True).proves()[1]


# --- the decision, on KvikIO's own Summary values -------------------------------------------------


def test_all_gds_with_only_kvikios_counter_is_not_proven():
    e = ev.decide(carried(summary(GDS=100 * MIB)))
    assert e.label == ev.CUFILE_NOT_PROVEN == "cuFile (DMA not proven)"


def test_all_gds_with_the_nvidia_fs_counter_is_proven():
    e = ev.decide(carried(summary(GDS=100 * MIB)), nvfs_before=stats("stats_before.txt"),
                  nvfs_after=stats("stats_after_dma.txt"))
    assert e.label == ev.DMA_PROVEN == "GDS (DMA proven)" and e.proven_by == "nvidia-fs"
    assert e.record()["gds_label"] == "GDS (DMA proven)"


def test_compat_inside_cufile_is_not_proven_even_with_gds_counted():
    e = ev.decide(carried(summary(GDS=100 * MIB)), nvfs_before=stats("stats_before.txt"),
                  nvfs_after=stats("stats_after_none.txt"))
    assert e.label == ev.CUFILE_NOT_PROVEN and "grew by 0 MiB" in e.record()["gds_evidence"]


def test_a_strict_run_proves_and_a_cufile_stats_reading_proves():
    split = carried(summary(GDS=64 * MIB))
    assert ev.decide(split, strict=ev.StrictRun(False, False, "OFF", True)).proven_by == "strict run"
    assert ev.decide(split, cufile_stats=ev.CuFileStats(64 * MIB, 0)).proven_by == "cuFile stats"
    assert ev.decide(split, strict=ev.StrictRun(True, True, "AUTO", True)).label == ev.CUFILE_NOT_PROVEN


def test_all_posix_names_kvikios_reason():
    split = carried(summary(POSIX=100 * MIB))
    assert ev.decide(split, compat_setting="ON", compat_preferred=True).label == \
        "POSIX (KvikIO fallback: compat mode ON)"
    assert ev.decide(split, compat_setting="AUTO", compat_preferred=True).label == \
        "POSIX (KvikIO fallback: is_compat_mode_preferred() is True)"
    small = ev.decide(carried(summary(POSIX=4096)), small_bytes=4096, gds_threshold=16384, compat_setting="OFF",
                      compat_preferred=False)
    assert small.label == "POSIX (KvikIO fallback: reads under gds_threshold (16384 B))"
    # below-cuFile evidence cannot lift a run KvikIO itself sent through POSIX
    assert ev.decide(split, nvfs_before=stats("stats_before.txt"), nvfs_after=stats("stats_after_dma.txt"),
                     compat_setting="ON").label.startswith("POSIX (KvikIO fallback:")


def test_mixed_is_judged_at_the_kvikio_share_exactly_and_just_under():
    at = carried(summary(GDS=95, POSIX=5))        # exactly 95%: cuFile's share is enough to look further
    under = carried(summary(GDS=94, POSIX=6))     # just under
    assert ev.decide(at, small_bytes=5, strict=ev.StrictRun(False, False, "OFF", True)).label == ev.DMA_PROVEN
    e = ev.decide(under, small_bytes=6, gds_threshold=16384, strict=ev.StrictRun(False, False, "OFF", True))
    assert e.label == "POSIX (KvikIO fallback: reads under gds_threshold (16384 B))"
    more = ev.decide(carried(summary(GDS=50, POSIX=50)), small_bytes=10, gds_threshold=16384)
    assert more.label.startswith("POSIX (KvikIO fallback: reads under gds_threshold (16384 B) and 40 B more")


def test_nothing_read():
    assert ev.decide(carried(summary())).label == ev.NOTHING_READ


def test_a_cufile_failure_is_explained_with_its_log():
    log = ("09:14:02:13 [pid=1 tid=2] ERROR  cufio-fs:199 ext4 journal options not supported for GDS\n"
           "09:14:02:13 [pid=1 tid=2] INFO   cufio:100 nothing to see\n")
    said = ev.explain_cufile_error("cuFile error: CU_FILE_IO_NOT_SUPPORTED (5008)", log)
    assert "file system is not supported" in said and "ext4 journal options" in said and "nothing to see" not in said
    assert "nvidia-fs is missing" in ev.explain_cufile_error("error 5001 from cuFileDriverOpen")
    assert "IOMMU" in ev.explain_cufile_error("CU_FILE_PLATFORM_NOT_SUPPORTED")
    assert "aligned" in ev.explain_cufile_error("CU_FILE_INVALID_VALUE")

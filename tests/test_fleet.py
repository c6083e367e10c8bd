"""The fleet model against numbers worked by hand from its stated inputs.

Inputs as published (coldstart.Inputs defaults): one P5en client over EFA with GDS
1,200 Gbit/s = 150 GB/s; 8 PCIe links × 53 GB/s (assumed) = 424 GB/s; the published 96 TiB
FSx measured at 94 GiB/s from one P5en; FSx Persistent-2 at 1000 MB/s/TiB: 2,600 MB/s/TiB of
network and 27.3 GiB/TiB of server cache; Llama 3.1 405B in FP8 as Meta's release:
487,229,259,776 bytes, in bf16: 811,706,777,600 bytes.
"""

from __future__ import annotations

import pytest

from gdslab import fleet
from gdslab.coldstart import model_bytes

FP8 = 487_229_259_776
BF16 = 811_706_777_600
FSX96 = 94 * 2**30 / 1e9  # GB/s, as measured
CLIENT = 1200 / 8  # GB/s


def test_model_bytes_are_the_stated_ones():
    assert model_bytes("llama-3.1-405b", "fp8_e4m3") == FP8 and model_bytes("llama-3.1-405b", "bf16") == BF16


def test_published_fsx_every_byte_from_disk_is_shared_from_the_first_node():
    p1, p4 = fleet.point(1), fleet.point(4)
    assert p1.gbps == pytest.approx(FSX96) and p1.seconds == pytest.approx(FP8 / 1e9 / FSX96)  # 4.83 s
    assert p1.kind == "predicted"  # the measured rate, no sharing assumed
    assert p4.gbps == pytest.approx(FSX96 / 4) and p4.seconds == pytest.approx(19.309, abs=0.001)
    assert p4.aggregate_gbps == pytest.approx(FSX96) and p4.kind == "assumed"  # fair shares are assumed
    assert fleet.knee(fleet.fsx(96)) == 1  # adding nodes never shortens a node's wait


def test_published_fsx_with_the_servers_cache():
    two = fleet.point(2, server_cache=True)  # max(disks once 4.827 s, network 124.8 GB/s 3.90 s, client 3.25 s)
    assert two.seconds == pytest.approx(FP8 / 1e9 / FSX96)
    four = fleet.point(4, server_cache=True)  # network 96 × 2.6 = 249.6 GB/s over 4 nodes = 62.4 GB/s each
    assert four.gbps == pytest.approx(62.4) and four.seconds == pytest.approx(7.808, abs=0.001)
    assert four.kind == "assumed" and "cache" in four.basis
    assert fleet.point(16, server_cache=True).seconds == pytest.approx(FP8 * 16 / 249.6e9)  # 31.2 s
    assert fleet.knee(fleet.fsx(96), server_cache=True) == 2  # 3 nodes: 249.6 / 3 = 83.2 GB/s → 5.86 s


def test_a_larger_fsx_is_client_bound_until_the_disks_are_shared():
    big = fleet.fsx(480)
    one = fleet.point(1, big)
    assert one.gbps == pytest.approx(CLIENT) and one.kind == "predicted" and "EFA+GDS" in one.binding.name
    assert fleet.point(4, big).gbps == pytest.approx(480 / 4)  # disks 480 TiB × 1 GB/s/TiB = 480 GB/s
    assert fleet.knee(big) == 3  # 480 / 3 = 160 > 150; 480 / 4 = 120 < 150
    assert fleet.knee(big, server_cache=True) == 8  # network 480 × 2.6 = 1,248 GB/s: / 8 = 156, / 9 = 138.7


def test_one_replica_over_two_nodes_reads_half_each():
    p = fleet.point(2, dtype="bf16", nodes_per_replica=2)
    assert p.node_bytes == BF16 / 2 and p.gbps == pytest.approx(FSX96 / 2)
    assert p.seconds == pytest.approx(BF16 / 2 / 1e9 / (FSX96 / 2))  # 8.04 s: as one node reading all of it
    assert fleet.knee(fleet.fsx(96), dtype="bf16", nodes_per_replica=2) == 2


def test_a_model_larger_than_the_servers_cache_is_read_from_disk():
    small = fleet.fsx(4.8, tier=125)  # cache 4.8 × 3.4 = 16.3 GiB < 453.8 GiB; disks 4.8 × 0.125 = 0.6 GB/s
    p = fleet.point(2, small, server_cache=True)
    assert p.gbps == pytest.approx(0.6 / 2) and "shared by 2" in p.binding.name


def test_bad_fleets_are_refused():
    with pytest.raises(ValueError, match="positive integer"):
        fleet.point(0)
    with pytest.raises(ValueError, match="multiple of nodes_per_replica"):
        fleet.point(3, nodes_per_replica=2)
    with pytest.raises(ValueError, match="tier must be one of"):
        fleet.fsx(96, tier=300)


def test_table_labels_every_row_a_projection():
    text = fleet.table(fleet.curve())
    assert text.count("(projection)") == len(fleet.NODE_COUNTS)
    assert set(fleet.scenarios()) == {"96 TiB FSx, every byte from disk", "96 TiB FSx, servers' cache shared",
                                      "480 TiB FSx, every byte from disk", "480 TiB FSx, servers' cache shared"}


def test_fleet_slider_follows_the_node_count():
    from gdslab.widgets import fleet_slider

    s = fleet_slider(4, display=False)
    assert s.points["96 TiB FSx, every byte from disk"].seconds == pytest.approx(19.309, abs=0.001)
    s.set(16)
    assert s.points["96 TiB FSx, servers' cache read once"].seconds == pytest.approx(FP8 * 16 / 249.6e9)
    assert "16 node(s) marked" in s.figure.axes[0].get_title() and len(s.figure.axes[0].lines) == 5

"""gdslab.costs: the record's host figure is the counted one, the RSS estimate beside it under its own name."""

import threading

import torch

from gdslab.costs import RSS_NOTE, LoadCosts
from gdslab.hostmem import load_ledger


def test_the_counted_figure_is_the_ledgers_peak_and_the_rss_estimate_stands_beside_it():
    ledger = load_ledger()
    with LoadCosts(torch.device("cpu")) as costs:
        with ledger.holding(5 << 20):
            pass
    record = costs.costs(0, ledger).record()
    assert record["host_overhead_bytes"] == 5 << 20 and record["host_overhead_method"] == "counted"
    assert record["host_overhead_note"] == ""
    assert record["host_peak_method"] in ("VmHWM", "sampled") and record["host_rss_note"] == RSS_NOTE
    assert "process-wide" in RSS_NOTE and record["host_rss_overhead_bytes"] is not None


def test_without_a_ledger_the_window_counts_every_load_of_the_process_together():
    """As sharded loads measure: all ranks' staging at once, above what was held before."""
    before = load_ledger()
    before.take(1 << 20)  # held by a load already running: not this window's
    ranks = [load_ledger() for _ in range(2)]
    barrier = threading.Barrier(2)

    def rank(ledger):
        ledger.take(3 << 20)
        barrier.wait()  # both held at once
        ledger.give(3 << 20)

    with LoadCosts(torch.device("cpu")) as costs:
        threads = [threading.Thread(target=rank, args=(r,)) for r in ranks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    before.give(1 << 20)
    assert costs.costs(0).record()["host_overhead_bytes"] == 6 << 20


def test_a_peer_that_cannot_be_counted_gets_no_figure_and_says_why():
    ledger = load_ledger()
    with LoadCosts(torch.device("cpu")) as costs:
        ledger.cannot_count("its own buffers")
    record = costs.costs(0, ledger).record()
    assert record["host_overhead_bytes"] is None and record["host_overhead_note"] == "its own buffers"


def test_each_path_counts_its_own_staging_and_a_peer_says_it_cannot(tmp_path):
    import gdslab

    folder = gdslab.write_checkpoint(tmp_path / "c", size="8MiB", shards=1, seed=3)
    records = {p: gdslab.load(folder, p, "cpu", threads=2, io_size="1MiB").record()
               for p in ("host-direct", "pinned-bounce", "safetensors")}
    assert records["host-direct"]["host_overhead_bytes"] == 0  # reads straight into the weights
    pinned = records["pinned-bounce"]
    assert pinned["host_overhead_bytes"] >= pinned["staging_bytes"]  # the pooled ring, all of it held by the load
    peer = records["safetensors"]
    assert peer["host_overhead_bytes"] is None and "safetensors" in peer["host_overhead_note"]
    direct = gdslab.load(folder, "host-direct", "cpu", threads=2, io_size="1MiB", direct=True).record()
    if direct["direct_bytes"]:  # O_DIRECT ran: one bounce block (two pages, to align) per reading thread
        assert direct["host_overhead_bytes"] in (8192, 16384)

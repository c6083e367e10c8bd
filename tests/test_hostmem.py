"""gdslab.hostmem: host staging counted where it is taken, checked against the kernel's RSS.

The count must not depend on what the process did before (the notebook pattern: earlier
loads' results dropped, their memory recycled by the allocator); the RSS, which does, is
the kernel's independent witness only in a fresh process, so those checks run in one.
"""

import json
import subprocess
import sys
import textwrap
import threading

import pytest

from gdslab.hostmem import PROCESS, Ledger, load_ledger


def test_a_ledger_counts_held_bytes_and_their_peak():
    ledger = Ledger("t")
    ledger.take(100)
    with ledger.holding(50):
        assert ledger.held == 150
    ledger.give(100)
    assert (ledger.held, ledger.peak, ledger.overhead) == (0, 150, 150)
    with pytest.raises(ValueError, match="gives back 1 bytes but holds only 0"):
        ledger.give(1)
    with pytest.raises(ValueError, match="negative"):
        ledger.take(-1)


def test_threads_taking_and_giving_leave_nothing_held():
    ledger = Ledger("t")

    def work():
        for _ in range(2000):
            ledger.take(7)
            ledger.give(7)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.held == 0 and 7 <= ledger.peak <= 28


def test_a_window_sees_the_peak_of_every_load_above_where_it_started():
    parent = Ledger("process")
    a, b = Ledger("a", parent), Ledger("b", parent)
    a.take(10)  # held before the window: not its cost
    with parent.window() as window:
        b.take(30)
        a.take(5)
        b.give(30)
    assert window.overhead == 35 and parent.held == 15
    b.take(1000)  # after the window closed: not seen
    assert window.overhead == 35


def test_memory_that_cannot_be_counted_gives_no_figure_but_a_reason():
    parent = Ledger("process")
    child = Ledger("load", parent)
    with parent.window() as window:
        child.take(10)
        child.cannot_count("peer X holds buffers of its own")
    assert child.overhead is None and window.overhead is None
    assert child.record() == {"host_overhead_bytes": None, "host_overhead_note": "peer X holds buffers of its own"}


def test_each_load_gets_its_own_ledger_reporting_to_the_process():
    one, two = load_ledger(), load_ledger()
    assert one is not two and one.parent is PROCESS


def _fresh(code: str, timeout: float = 300) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


RSS = """
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
"""


def test_rss_grows_by_the_counted_bytes_in_a_fresh_process():
    out = _fresh(RSS + """
import json
from gdslab.costs import trim_heap
from gdslab.datapaths.base import host_staging
from gdslab.hostmem import Ledger
# Pay the process's one-time costs first (torch's thread pool, allocator arenas, lazily loaded code):
# they would land in the window and are not staging.
with host_staging(Ledger("warm-up"), 8 << 20) as warm:
    warm.fill_(1)
del warm
ledger = Ledger("t")
trim_heap()
before = rss()
with host_staging(ledger, 96 << 20) as buffer:
    buffer.fill_(1)  # touch every page: resident
    grown = rss() - before
    del buffer
print(json.dumps({"grown": grown, "counted": ledger.peak, "after": rss() - before}))
""")
    assert out["counted"] == (96 << 20) + 4096  # what aligned_host allocates
    assert abs(out["grown"] - out["counted"]) < 0.03 * out["counted"], out
    assert out["after"] < 0.03 * out["counted"], out  # given back when the ledger stops counting it


LOADS = """
import gc, json
import gdslab
folder, first, tiny = {folder!r}, {first!r}, {tiny!r}
def bounce(source=folder):
    return gdslab.load(source, "pageable-bounce", "cpu", threads=4, io_size="4MiB").record()
if first:
    bounce(tiny)  # a first load's one-time costs (thread stacks, malloc arenas, lazy code) are not staging
    print(json.dumps(bounce()))
else:
    kept = [gdslab.load(folder, p, "cpu", threads=4, io_size="4MiB")
            for p in ("host-direct", "pinned-bounce", "pageable-bounce", "safetensors")]
    del kept  # the notebook pattern: earlier results dropped, their memory recycled
    gc.collect()
    runs = []
    for _ in range(3):
        keep = gdslab.load(folder, "host-direct", "cpu", threads=2, io_size="1MiB")
        runs.append(bounce())
        del keep
        gc.collect()
    print(json.dumps(runs))
"""


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    import gdslab

    folder = tmp_path_factory.mktemp("hostmem")
    gdslab.write_checkpoint(folder / "tiny", size="4MiB", shards=2, seed=12)
    return gdslab.write_checkpoint(folder / "ckpt", size="96MiB", shards=2, seed=11)


def test_the_bounce_counts_one_file_fresh_and_after_earlier_loads_were_freed(two_shards):
    fresh = _fresh(LOADS.format(folder=str(two_shards), first=True, tiny=str(two_shards.parent / "tiny")))
    later = _fresh(LOADS.format(folder=str(two_shards), first=False, tiny=""))
    # Oracle: the bytes of tensor data in the largest file, from its own header length (not the loader's plan).
    sizes = []
    for f in sorted(two_shards.glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
        sizes.append(f.stat().st_size - 8 - header)
    largest = max(sizes)
    assert abs(fresh["host_overhead_bytes"] - largest) < 0.01 * largest  # one file staged, not two
    for run in later:  # the counted figure does not move at all
        assert run["host_overhead_bytes"] == fresh["host_overhead_bytes"], (fresh, later)
        assert run["host_overhead_method"] == "counted" and "process-wide" in run["host_rss_note"]
    # In a fresh process (after a tiny warm-up load) the kernel agrees: the RSS peak above the start,
    # weights off, is about the count.
    assert abs(fresh["host_rss_overhead_bytes"] - fresh["host_overhead_bytes"]) < 0.1 * largest, fresh

"""The `threads` knob, observed: a load with `threads=N` really has N reads in flight at once, on N threads.

A load's speed figures all assume that the reader pool runs the reads it was asked to run
in parallel; a pool forced to one worker (or one that ignores the knob) would pass every
bit-exact test. The oracle here is the kernel call itself: `os.preadv` is wrapped so that
the first N reads of a load wait for each other at a barrier. They all get through only if
N reads are in flight at the same moment, on N distinct threads; with fewer threads the
barrier times out and the test says so. No timing is asserted.
"""

from __future__ import annotations

import os
import threading

import pytest
import torch
from safetensors.torch import load_file

import gdslab

THREADS = 3
WAIT_S = 20.0  # a barrier nobody else joins would wait this long: long enough on a loaded machine


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return gdslab.write_checkpoint(tmp_path_factory.mktemp("pool") / "ckpt", size="16MiB", shards=2, seed=5)


class InFlight:
    """Wraps os.preadv for the loader's reader threads: the first `parties` reads meet at a barrier."""

    def __init__(self, parties: int):
        self.barrier = threading.Barrier(parties, timeout=WAIT_S)
        self.lock = threading.Lock()
        self.waiting = parties
        self.in_flight = self.most = 0
        self.readers: set[str] = set()
        self.broken = False
        self._real = os.preadv

    def preadv(self, fd, buffers, offset, *rest):
        name = threading.current_thread().name
        if not name.startswith("gdslab-"):
            return self._real(fd, buffers, offset, *rest)
        with self.lock:
            self.readers.add(name)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            meet = self.waiting > 0
            self.waiting -= meet
        try:
            if meet:
                try:
                    self.barrier.wait()
                except threading.BrokenBarrierError:
                    self.broken = True
            return self._real(fd, buffers, offset, *rest)
        finally:
            with self.lock:
                self.in_flight -= 1


CASES = [("host-direct", {}), ("host-direct", {"direct": True}), ("pageable-bounce", {}),
         ("pageable-bounce", {"direct": True}), ("pinned-bounce", {})]


@pytest.mark.parametrize("datapath,options", CASES, ids=[f"{d}{'-direct' if o else ''}" for d, o in CASES])
def test_threads_n_means_n_reads_in_flight_on_n_threads(checkpoint, monkeypatch, datapath, options):
    seen = InFlight(THREADS)
    monkeypatch.setattr(os, "preadv", seen.preadv)
    result = gdslab.load(checkpoint, datapath, "cpu", threads=THREADS, io_size="1MiB", **options)
    monkeypatch.undo()
    assert not seen.broken, f"{datapath}: fewer than {THREADS} reads were ever in flight at once"
    assert seen.most == THREADS, (datapath, seen.most)  # never more reads at once than threads asked
    assert len(seen.readers) == THREADS, (datapath, sorted(seen.readers))
    # The reads that met at the barrier still landed the right bytes.
    expected = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        expected.update(load_file(f))
    assert set(result.tensors) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(result.tensors[name], tensor), name


def test_one_thread_means_one_read_at_a_time(checkpoint, monkeypatch):
    seen = InFlight(1)
    monkeypatch.setattr(os, "preadv", seen.preadv)
    gdslab.load(checkpoint, "host-direct", "cpu", threads=1, io_size="1MiB")
    monkeypatch.undo()
    assert (seen.most, len(seen.readers)) == (1, 1)

"""Profiler arithmetic on synthetic events whose answers are worked out by hand."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

from gdslab.profile import (
    STAGES, DeviceMemorySampler, Event, EventLog, FillCurve, curve_gap, fill_curve, fill_curves, fill_rate, interval_union,
    rate_at, summarize, thread_timeline, time_split,
)


def ev(stage, start, end, nbytes=0, thread="t0", device="cpu", landed=False, file="f"):
    return Event(stage, start, end, nbytes, thread, file, device, landed)


# Two reader threads on one device, a copy stage and a wait, with overlaps across threads:
#   t0: read [0,2] ─ copy [2,3] (lands 100 B at 3)
#   t1:     read [1,3] ─ wait [3,3.5] ─ copy [3.5,4] (lands 300 B at 4)
#   t2 (other GPU): alloc [0,0.5], read [0.5,1.5] (lands 50 B at 1.5)
TWO_THREADS = [
    ev("read", 0.0, 2.0, 100, "t0", "host"),
    ev("copy", 2.0, 3.0, 100, "t0", "cuda:0", landed=True),
    ev("read", 1.0, 3.0, 300, "t1", "host"),
    ev("wait", 3.0, 3.5, 0, "t1", "cuda:0"),
    ev("copy", 3.5, 4.0, 300, "t1", "cuda:0", landed=True),
    ev("alloc", 0.0, 0.5, 50, "t2", "cuda:1"),
    ev("read", 0.5, 1.5, 50, "t2", "cuda:1", landed=True),
]


def test_interval_union_counts_overlaps_once():
    assert interval_union([]) == 0.0
    assert interval_union([(0, 2), (1, 3)]) == 3.0  # overlap
    assert interval_union([(0, 1), (2, 3)]) == 2.0  # gap
    assert interval_union([(0, 4), (1, 2)]) == 4.0  # nested
    assert interval_union([(0, 1), (1, 2)]) == 2.0  # touching
    assert interval_union([(5, 6), (0, 1), (0.5, 5.5)]) == 6.0  # unsorted chain


def test_time_split_busy_sums_and_wall_union_per_stage():
    split = time_split(TWO_THREADS)
    assert list(split)[:len(STAGES)] == list(STAGES)
    read = split["read"]
    assert (read.count, read.nbytes) == (3, 450)
    assert read.busy_s == pytest.approx(2 + 2 + 1)  # thread-seconds
    assert read.wall_s == pytest.approx(3.0)  # [0,3]: t0 and t1 overlap on [1,2], t2 inside
    assert (split["copy"].busy_s, split["copy"].wall_s) == pytest.approx((1.5, 1.5))
    assert (split["wait"].busy_s, split["wait"].wall_s) == pytest.approx((0.5, 0.5))
    assert (split["alloc"].count, split["overhead"].count) == (1, 0)
    assert split["overhead"].busy_s == 0.0


def test_time_split_keeps_unknown_stages_after_the_known_ones():
    split = time_split([ev("read", 0, 1), ev("decompress", 0, 2)])
    assert list(split) == [*STAGES, "decompress"]
    assert split["decompress"].busy_s == 2.0


def test_fill_curves_per_device_from_landed_events_only():
    curves = fill_curves(TWO_THREADS)
    assert list(curves) == ["cuda:0", "cuda:1"]  # 'host' reads never landed
    c0 = curves["cuda:0"]
    assert c0.times.tolist() == [0.0, 3.0, 4.0]
    assert c0.nbytes.tolist() == [0, 100, 400]
    assert c0.total == 400 and c0.end == 4.0
    assert curves["cuda:1"].nbytes.tolist() == [0, 50]
    # the step function: bytes land at the end of their event, not before
    assert c0.at(np.array([0.0, 2.999, 3.0, 3.5, 4.0, 10.0])).tolist() == [0, 0, 100, 100, 400, 400]
    assert fill_curve(TWO_THREADS).total == 450  # every device together
    assert fill_curve(TWO_THREADS).device == "all"


def test_fill_curve_orders_by_landing_time_not_by_start():
    events = [ev("copy", 0.0, 5.0, 10, landed=True), ev("copy", 1.0, 2.0, 20, landed=True)]
    curve = fill_curve(events, "cpu")
    assert curve.times.tolist() == [0.0, 2.0, 5.0]
    assert curve.nbytes.tolist() == [0, 20, 30]


def test_fill_rate_known_answers():
    # 100 B land at t=1, 300 B at t=2; 1-second intervals, a 2-second window.
    curve = fill_curve([ev("read", 0.5, 1.0, 100, landed=True), ev("read", 1.2, 2.0, 300, landed=True)])
    rate = fill_rate(curve, interval=1.0, window=2.0)
    assert rate.times.tolist() == [1.0, 2.0]
    assert rate.instantaneous.tolist() == [100.0, 300.0]  # (k-1, k]: a landing at exactly k counts in k
    assert rate.smoothed.tolist() == [100.0, 200.0]  # window clipped to 1 s at t=1, then 400 B / 2 s
    assert rate.mean == 200.0  # 400 B from the load's start to the last landing at 2 s
    assert rate.peak == 200.0


def test_fill_rate_defaults_and_finer_intervals():
    events = [ev("read", 0, 0.25 * k, 100, landed=True) for k in range(1, 9)]  # 100 B every 0.25 s up to 2 s
    rate = fill_rate(fill_curve(events), interval=0.5)
    assert rate.window == 2.5  # 5 intervals
    assert rate.instantaneous.tolist() == [400.0] * 4
    assert rate.mean == 400.0
    default = fill_rate(fill_curve(events))
    assert default.interval == pytest.approx(0.02) and len(default.times) == 100
    assert default.instantaneous.sum() * default.interval == pytest.approx(800)  # every byte counted once


def test_fill_rate_of_nothing_and_bad_arguments():
    empty = fill_rate(fill_curve([]))
    assert (len(empty.times), empty.mean, empty.peak) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="interval"):
        fill_rate(fill_curve(TWO_THREADS), interval=0)


def test_curve_gap_between_event_and_sampled_curves():
    events = fill_curve([ev("copy", 0, 1.0, 100, landed=True), ev("copy", 0, 2.0, 100, landed=True)])
    # a sampler that saw each allocation 0.5 s before its bytes landed, and 4 B of allocator rounding
    sampled = FillCurve("cpu", np.array([0.0, 0.5, 1.5]), np.array([0, 102, 204]))
    largest, mean = curve_gap(events, sampled, points=401)  # every 5 ms over [0, 2]
    assert largest == pytest.approx(104 / 200)  # on [1.5, 2): 204 sampled, 100 landed
    # 0 on [0, 0.5), 102 on [0.5, 1), 2 on [1, 1.5), 104 on [1.5, 2): mean 52 B of 200
    assert mean == pytest.approx((0.5 * 102 + 0.5 * 2 + 0.5 * 104) / 2 / 200, rel=0.01)
    assert curve_gap(events, events) == (0.0, 0.0)
    with pytest.raises(ValueError):
        curve_gap(fill_curve([]), events)


def test_rate_at_uses_a_trailing_window():
    curve = fill_curve([ev("read", 0, 1.0, 100, landed=True), ev("read", 0, 3.0, 200, landed=True)])
    assert rate_at(curve, 3.0, 1.0) == 200.0  # (2, 3]
    assert rate_at(curve, 2.5, 1.0) == 0.0
    assert rate_at(curve, 1.0, 4.0) == 100.0  # window clipped at 0 s
    assert rate_at(curve, 0.0, 1.0) == 0.0


def test_thread_timeline_groups_and_orders_lanes():
    lanes = thread_timeline(TWO_THREADS)
    assert [lane.thread for lane in lanes] == ["t0", "t2", "t1"]  # by first event: 0, 0 (t0 < t2), 1
    t1 = lanes[2]
    assert [e.stage for e in t1.events] == ["read", "wait", "copy"]
    assert (t1.start, t1.end, t1.busy_s) == (1.0, 4.0, 3.0)
    nested = thread_timeline([ev("read", 0, 4, thread="x"), ev("alloc", 1, 2, thread="x")])[0]
    assert nested.busy_s == 4.0  # nested events count once


def test_summarize_known_answers_and_flat_record():
    summary = summarize(TWO_THREADS + [ev("overhead", 5.0, 6.0, thread="main")], window=1.0)
    assert summary.events == 8 and summary.threads == 4
    assert summary.devices == ("cuda:0", "cuda:1")
    assert summary.landed_bytes == 450
    assert summary.landed_by_device == {"cuda:0": 400, "cuda:1": 50}
    assert summary.span_s == 6.0 and summary.fill_s == 4.0
    assert summary.mean_gbps == pytest.approx(450 / 4 / 1e9)
    assert summary.peak_gbps == pytest.approx(300 / 1e9)  # 300 B landed in (3, 4]
    assert summary.unrecorded_s == pytest.approx(1.0)  # (4, 5]: no thread in any stage
    assert summary.stage_seconds("wall")["read"] == pytest.approx(3.0)
    assert summary.stage_seconds("busy")["read"] == pytest.approx(5.0)
    with pytest.raises(ValueError):
        summary.stage_seconds("cpu")
    record = summary.as_dict()
    assert record["landed_bytes[cuda:0]"] == 400
    assert record["read_busy_s"] == pytest.approx(5.0) and record["read_wall_s"] == pytest.approx(3.0)
    assert record["devices"] == "cuda:0,cuda:1"
    assert all(isinstance(v, (int, float, str)) for v in record.values())
    json.dumps(record)


def test_summarize_events_logged_from_real_threads():
    log = EventLog()

    def work(k):
        for _ in range(5):
            start = log.now()
            time.sleep(0.001)
            log.add("read", start, 1000 + k, "f", "cpu", landed=True)

    threads = [threading.Thread(target=work, args=(k,), name=f"reader-{k}") for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = summarize(log.events)
    assert summary.threads == 3 and summary.events == 15
    assert summary.landed_bytes == log.landed_bytes == 5 * (1000 + 1001 + 1002)
    assert summary.stages["read"].busy_s >= summary.stages["read"].wall_s > 0
    assert {lane.thread for lane in thread_timeline(log.events)} == {"reader-0", "reader-1", "reader-2"}


def test_summary_of_no_events():
    summary = summarize([])
    assert (summary.landed_bytes, summary.span_s, summary.mean_gbps, summary.unrecorded_s) == (0, 0.0, 0.0, 0.0)


def test_sampler_is_a_noop_with_a_reason_on_cpu():
    before = threading.active_count()
    with DeviceMemorySampler("cpu") as sampler:
        assert threading.active_count() == before
    assert not sampler.available
    assert "host memory" in sampler.reason
    assert sampler.times == [] and sampler.curve().total == 0


def test_sampler_samples_in_the_background_and_stops_cleanly():
    counter = {"bytes": 1000}
    log = EventLog()
    before = threading.active_count()
    with DeviceMemorySampler("cuda:0", hz=100, log=log, read=lambda: counter["bytes"]) as sampler:
        assert threading.active_count() == before + 1
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:
            counter["bytes"] += 10
            time.sleep(0.005)
    assert threading.active_count() == before
    assert sampler.available and sampler.source == "custom"
    assert 5 <= len(sampler.times) <= 40  # ~30 at 100 Hz; a busy machine may take fewer
    assert sampler.achieved_hz <= 120
    assert sampler.values[0] == 0  # relative to the level at start
    assert sampler.values == sorted(sampler.values) and sampler.values[-1] > 0
    curve = sampler.curve()
    assert curve.source == "sampled: custom"
    assert curve.times[0] == pytest.approx(sampler.times[0] - log.origin)
    sampler.stop()  # a second stop is harmless


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError):
        DeviceMemorySampler("cuda:0", hz=0)
    with pytest.raises(ValueError):
        DeviceMemorySampler("cuda:0", source="magic")


HAS_CUDA = torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")
def test_sampled_device_memory_matches_the_event_curve_on_a_gpu(tmp_path):
    from gdslab.loader import load
    from gdslab.synthetic import write_checkpoint

    path = write_checkpoint(tmp_path, size="512MiB", shards=2, seed=1)
    log = EventLog()
    with DeviceMemorySampler("cuda:0", hz=100, log=log) as sampler:
        result = load(path, datapath="pinned-bounce", device="cuda:0", threads=4, io_size="4MiB", log=log)
    assert sampler.available and sampler.reason == ""
    events, sampled = fill_curve(result.events, "cuda:0"), sampler.curve()
    assert events.total == result.nbytes
    # destinations stay allocated while `result` lives: the plateau is the checkpoint, plus allocator rounding
    assert abs(sampled.total - events.total) <= 0.01 * events.total
    largest, mean = curve_gap(events, sampled)
    assert mean < 0.10, (largest, mean)


def test_overlap_of_two_stages_is_wall_clock_seconds():
    from gdslab.profile import overlap_seconds

    def ev(stage, start, end):
        return Event(stage, start, end, 1, "t", "f", "cpu")

    assert overlap_seconds([ev("read", 0, 1), ev("copy", 1, 2)]) == 0.0  # one after the other
    assert overlap_seconds([ev("read", 0, 2), ev("copy", 1, 3)]) == pytest.approx(1.0)
    # two reads at once over one copy count once, not twice
    assert overlap_seconds([ev("read", 0, 2), ev("read", 0, 2), ev("copy", 1, 3)]) == pytest.approx(1.0)
    assert overlap_seconds([ev("read", 0, 1)]) == 0.0

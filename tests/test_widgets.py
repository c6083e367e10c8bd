"""The live load widget, driven from here during real background loads on the CPU."""

from __future__ import annotations

import _thread
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from gdslab.checkpoint import Checkpoint
from gdslab.errors import CheckpointError, DatapathUnavailable, LoadCancelled
from gdslab.profile import EventLog
from gdslab.synthetic import write_checkpoint
from gdslab.widgets import LiveLoad, live_load

GB = 1e9
KNOBS = dict(datapath="host-direct", device="cpu", threads=2, io_size="64KiB")


class PacedLog(EventLog):
    """A real EventLog that takes `delay` longer to record each landed event.

    The load itself is real (real files, real preads into real tensors); the pause only
    keeps it in flight long enough (~0.7 s here) for a test to watch it and stop it.
    """

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def add(self, *args, **kwargs):
        event = super().add(*args, **kwargs)
        if event.landed:
            time.sleep(self.delay)
        return event


class GatedLog(EventLog):
    """A real EventLog that holds each landed event until the test lets it through.

    The load is real; the test sets its pace (`allow(n)` more landings, `open()` for all),
    so what the chart must show at each step is known, however busy the machine is.
    """

    def __init__(self):
        super().__init__()
        self._permits = threading.Semaphore(0)
        self._open = threading.Event()

    def add(self, *args, **kwargs):
        event = super().add(*args, **kwargs)
        if event.landed:
            while not self._open.is_set() and not self._permits.acquire(timeout=0.01):
                pass
        return event

    def allow(self, n: int) -> None:
        self._permits.release(n)

    def open(self) -> None:
        self._open.set()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("live"), size="2MiB", shards=2, seed=7)


def fill_line(live: LiveLoad):
    return live._fill_lines["cpu"]


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_figure_and_widget_exist_before_the_run_starts(checkpoint):
    before = threading.active_count()
    live = LiveLoad(checkpoint, **KNOBS)
    assert live.state == "ready" and threading.active_count() == before
    assert live.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert live.total == Checkpoint.open(checkpoint).nbytes
    assert live.stop_button.description == "Stop" and live.progress.value == 0.0
    fill_ax, rate_ax = live.figure.axes
    assert fill_ax.get_ylabel() == "bytes at destination (GB)" and rate_ax.get_ylabel() == "fill rate (GB/s)"
    with pytest.raises(RuntimeError, match="not been started"):
        live.wait()


def test_bad_input_is_refused_before_any_thread_starts(tmp_path):
    before = threading.active_count()
    with pytest.raises(CheckpointError):
        live_load(tmp_path / "missing", **KNOBS)
    with pytest.raises(ValueError):
        LiveLoad(tmp_path, max_fps=0)
    assert threading.active_count() == before


def test_live_chart_follows_a_real_background_load(checkpoint):
    before = threading.active_count()
    log = GatedLog()
    live = live_load(checkpoint, log=log, **KNOBS)
    assert live.running and threading.active_count() == before + 2  # the load and the redraw thread
    seen = []
    try:
        for _ in range(3):  # let 10 more chunks land (of about 40), then look
            landed_before = log.landed_bytes
            log.allow(10)
            wait_for(lambda: log.landed_bytes > landed_before)
            assert live.redraw(force=True)
            seen.append((live.landed, live.progress.value, live.image.value, live.readout.value))
    finally:
        log.open()
    result = live.wait()
    assert threading.active_count() == before
    landed = [s[0] for s in seen]
    assert 0 < landed[0] < landed[1] < landed[2] < live.total, landed  # watched it grow mid-load
    assert [s[1] for s in seen] == pytest.approx([n / live.total for n in landed])
    assert len({s[2] for s in seen}) == 3  # a new PNG went to the widget each time
    assert all("GB/s" in s[3] and "running" in s[3] for s in seen)
    assert live.state == "done" and live.error is None and result is live.result
    assert result.nbytes == live.total and live.landed == live.total
    assert live.progress.value == 1.0 and live.progress.bar_style == "success"
    assert fill_line(live).get_ydata()[-1] == pytest.approx(live.total / GB)
    assert live.stop_button.disabled and live.stop_button.description == "Done"
    assert live.frames >= len(seen) + 1
    assert "loaded" in live.figure.get_suptitle() and "host-direct" in live.figure.get_suptitle()


def test_redraw_is_throttled(checkpoint):
    live = LiveLoad(checkpoint, max_fps=1, **KNOBS)
    assert live.redraw() is True
    assert live.redraw() is False  # within 1 s of the last frame
    assert live.redraw(force=True) is True
    assert live.frames == 2


def test_stop_button_cancels_with_no_thread_left(checkpoint):
    before = threading.active_count()
    log = GatedLog()
    live = live_load(checkpoint, log=log, **KNOBS)
    wait_for(lambda: live.log.landed_bytes > 0)
    live.stop_button.click()  # what a click in the front end does
    log.open()
    assert live.wait() is None
    assert threading.active_count() == before
    assert live.state == "cancelled" and isinstance(live.error, LoadCancelled) and live.result is None
    assert live.log.landed_bytes < live.total
    assert "stopped by request" in live.figure.get_suptitle() and "nothing kept" in live.figure.get_suptitle()
    assert live.stop_button.disabled and live.stop_button.description == "Stopped"
    assert live.progress.bar_style == "warning" and "cancelled" in live.readout.value


def test_interrupt_while_waiting_cancels_cleanly(checkpoint):
    before = threading.active_count()
    live = live_load(checkpoint, log=PacedLog(0.01), **KNOBS)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        live.wait()
    timer.join()
    assert live.cancel.is_set() and live.state == "cancelled"
    assert threading.active_count() == before


def test_blocking_runs_to_the_end_and_keeps_the_static_figure(checkpoint):
    before = threading.active_count()
    live = live_load(checkpoint, blocking=True, **KNOBS)
    assert threading.active_count() == before
    assert live.state == "done" and live.frames == 1  # no live redraws, one final figure
    assert fill_line(live).get_ydata()[-1] == pytest.approx(live.total / GB)
    expected = {}
    for file in Checkpoint.open(checkpoint).files:
        expected.update(load_file(file.path if hasattr(file, "path") else file))
    assert live.result.tensors.keys() == expected.keys()
    for name, tensor in expected.items():
        got = live.result.tensors[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(got.view(torch.uint8), tensor.view(torch.uint8)), name


def test_a_failed_load_is_reported_and_raised(checkpoint):
    before = threading.active_count()
    with pytest.raises(DatapathUnavailable):
        live_load(checkpoint, blocking=True, datapath="gds", device="cpu")
    live = live_load(checkpoint, datapath="gds", device="cpu")
    with pytest.raises(DatapathUnavailable):
        live.wait()
    assert live.state == "failed" and "failed" in live.figure.get_suptitle()
    assert live.progress.bar_style == "danger"
    assert threading.active_count() == before


def test_wait_with_a_timeout_while_the_load_runs(checkpoint):
    live = live_load(checkpoint, log=PacedLog(0.01), **KNOBS)
    with pytest.raises(TimeoutError):
        live.wait(timeout=0.05)
    assert live.wait().nbytes == live.total


def test_coldstart_explorer_follows_its_controls():
    from gdslab import coldstart as cs
    from gdslab.widgets import ColdStartExplorer

    explorer = ColdStartExplorer()
    assert explorer.widget is not None and set(explorer.controls) == set(explorer.values)
    base = explorer.projection
    assert base.scenario.storage.measured and base.label == cs.LABEL
    assert explorer.set(client="tcp").projection.unavailable  # GDS on Lustre needs EFA
    halved = explorer.set(client="efa+gds", capacity_tib=48.0).projection
    assert halved.seconds == pytest.approx(halved.nbytes / 48e9)  # capacity × tier binds once not the published FS
    explorer.controls["dtype"].value = "bf16"  # a click in the front end does the same
    assert explorer.projection.scenario.dtype == "bf16" and explorer.projection.nbytes > halved.nbytes
    assert "projection" in explorer.figure.axes[0].get_title()
    with pytest.raises(ValueError, match="no control named"):
        explorer.set(speed=9)

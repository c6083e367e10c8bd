"""Watch a load fill device memory, live, in a notebook — and the same call headless.

`live_load(source, **load_kwargs)` creates the chart first, then runs `gdslab.load` on a
background thread with an `EventLog` and a cancel event. A second thread calls the one
redraw function, `LiveLoad.redraw`, at no more than `max_fps` (10 by default): it reads
the log, moves the fill curve of every device and the rate, renders the figure to PNG for
an ipywidgets `Image` (no ipympl needed) and updates a progress bar and a read-out. The
load's own threads never draw, display or print. Stop sets the cancel event: the load
raises `LoadCancelled`, hands nothing back, and every thread ends.

Headless (nbval, scripts) pass `blocking=True`: the load runs to the end before the call
returns and the final static figure is displayed (in a kernel) or kept in `.figure`.
Either way `.wait()` returns the `LoadResult` (also in `.result`).

The Stop button works while the kernel is idle. While a cell is blocked in `.wait()`,
use the kernel's interrupt instead: `wait()` turns it into a clean cancel.
"""

from __future__ import annotations

import io
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .checkpoint import Checkpoint
from .errors import LoadCancelled
from .loader import BackgroundLoad, LoadResult, resolve_device
from .plots import GB, TIME_AXIS, costs_words, describe_run
from .profile import EventLog, fill_curves, fill_rate, rate_at
from .sizes import format_size

RATE_WINDOW_S = 0.5  # the read-out's trailing window


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (where `display` reaches a front end or an nbval run)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class LiveLoad:
    """One load running on a background thread, with its live chart, progress bar and Stop button.

    Attributes: `figure` (matplotlib, created before the run), `widget` (the ipywidgets box,
    None without ipywidgets), `state` ('ready', 'running', 'done', 'cancelled', 'failed'),
    `result` (the `LoadResult` once done), `error` (the exception of a cancelled or failed
    load), `log` (the `EventLog` the load fills), `landed` and `frames` (bytes shown and
    redraws made so far).
    """

    def __init__(self, source: Any, *, max_fps: float = 10.0, rate_window: float = RATE_WINDOW_S, **load_kwargs):
        if not 0 < max_fps <= 30:
            raise ValueError(f"max_fps must be within (0, 30], got {max_fps}")
        self.source = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
        self.log: EventLog = load_kwargs.pop("log", None) or EventLog()
        self.cancel: threading.Event = load_kwargs.pop("cancel", None) or threading.Event()
        self.load_kwargs = load_kwargs
        self.datapath = load_kwargs.get("datapath", "pinned-bounce")
        self.device = str(resolve_device(load_kwargs.get("device")))
        reads = load_kwargs.get("reads")
        self.total = sum(r.nbytes for r in reads) if reads is not None else self.source.nbytes
        self.max_fps, self.rate_window = float(max_fps), float(rate_window)
        self.state = "ready"
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self.landed = 0
        self.frames = 0
        self.redraw_error: Exception | None = None
        self._draw_lock = threading.Lock()
        self._last_draw = float("-inf")
        self._finished = threading.Event()
        self._worker: threading.Thread | None = None
        self._redrawer: threading.Thread | None = None
        self._final_drawn = False
        self._build_figure()
        self.widget = self._build_widget()

    # --- the chart ------------------------------------------------------------------------

    def _build_figure(self) -> None:
        # Fixed margins: a layout engine would double the cost of every frame.
        self.figure = Figure(figsize=(7.5, 4.6))
        self.figure.subplots_adjust(left=0.1, right=0.97, top=0.86, bottom=0.1, hspace=0.12)
        self._fill_ax, self._rate_ax = self.figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
        self._fill_ax.axhline(self.total / GB, color="black", linewidth=0.8, linestyle=":",
                              label=f"total {format_size(self.total)}")
        self._fill_ax.set_ylim(0, max(self.total / GB, 1e-9) * 1.05)
        self._fill_ax.set_ylabel("bytes at destination (GB)")
        self._fill_ax.grid(alpha=0.3)
        self._rate_ax.set_ylabel("fill rate (GB/s)")
        self._rate_ax.set_xlabel(TIME_AXIS)
        self._rate_ax.grid(alpha=0.3)
        self._fill_ax.set_xlim(0, 0.1)
        self._fill_lines: dict[str, Any] = {}
        self._rate_lines: dict[str, Any] = {}
        self._set_title("ready")

    def _set_title(self, status: str) -> None:
        if self.result is not None:
            detail = describe_run(self.result.record())
        else:
            detail = f"{self.datapath} · {self.device}"
        lines = textwrap.wrap(f"{Path(str(self.source.root)).name}: {status}", 95) + textwrap.wrap(detail, 95)
        self.figure.suptitle("\n".join(lines), fontsize=9)

    def _lines_for(self, device: str) -> tuple[Any, Any]:
        if device not in self._fill_lines:
            (fill,) = self._fill_ax.plot([], [], drawstyle="steps-post", label=f"{device} (events)")
            (rate,) = self._rate_ax.plot([], [], color=fill.get_color(), label=device)
            self._fill_lines[device], self._rate_lines[device] = fill, rate
            self._fill_ax.legend(loc="lower right", fontsize=8)
        return self._fill_lines[device], self._rate_lines[device]

    # --- the widget -----------------------------------------------------------------------

    def _build_widget(self):
        try:
            import ipywidgets as w
        except ImportError:
            return None
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="0%",
                                        layout=w.Layout(width="45%"))
        self.readout = w.HTML(value=self._readout_text(0.0, 0.0))
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="cancel the load (nothing is kept)")
        self.stop_button.on_click(lambda _button: self.stop())
        self.image = w.Image(format="png", layout=w.Layout(max_width="760px"))
        self.image.value = self.png()
        return w.VBox([w.HBox([self.progress, self.stop_button, self.readout]), self.image])

    def _readout_text(self, elapsed: float, rate: float) -> str:
        if self.result is not None:  # done: the whole load's rate, not a window after the end
            speed = f"<b>{self.result.gbps:.2f} GB/s</b> (whole load)"
        else:
            speed = f"<b>{rate / GB:.2f} GB/s</b> (last {self.rate_window:g} s)"
        return f"{format_size(self.landed)} of {format_size(self.total)} · {elapsed:.2f} s · {speed} · {self.state}"

    def png(self, dpi: int = 80) -> bytes:
        """The figure as it stands, as PNG bytes."""
        with self._draw_lock:
            return self._render(dpi)

    def _render(self, dpi: int = 80) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()

    def redraw(self, force: bool = False) -> bool:
        """The one redraw: read the log, move the curves, refresh the widget. Throttled to max_fps.

        Returns False (and does nothing) when called sooner than 1/max_fps after the last
        redraw, unless `force`. Safe to call from any thread; calls are serialised.
        """
        with self._draw_lock:
            now = time.perf_counter()
            if not force and now - self._last_draw < 1.0 / self.max_fps:
                return False
            self._last_draw = now
            events = self.log.events
            elapsed = self.log.now() if self.state == "running" else max((e.end for e in events), default=0.0)
            curves = fill_curves(events)
            rate_now, rate_top = 0.0, 0.0
            for device, curve in curves.items():
                fill_line, rate_line = self._lines_for(device)
                times, nbytes = curve.times.tolist(), (curve.nbytes / GB).tolist()
                if self.state == "running":  # hold the last level up to now
                    times, nbytes = times + [elapsed], nbytes + [nbytes[-1]]
                fill_line.set_data(times, nbytes)
                if curve.end > 0:
                    rate = fill_rate(curve)
                    rate_line.set_data(rate.times, rate.smoothed / GB)
                    rate_top = max(rate_top, rate.peak / GB)
                rate_now += rate_at(curve, elapsed, self.rate_window)
            self.landed = sum(curve.total for curve in curves.values())
            self._fill_ax.set_xlim(0, max(elapsed, 0.01) * 1.05)
            self._rate_ax.set_ylim(0, rate_top * 1.1 if rate_top > 0 else 1.0)
            self._set_title(self._status_words())
            self.frames += 1
            if self.widget is not None:
                fraction = self.landed / self.total if self.total else 1.0
                self.progress.value = fraction
                self.progress.description = f"{fraction:.0%}"
                self.readout.value = self._readout_text(elapsed, rate_now if self.state == "running" else 0.0)
                self.image.value = self._render()
            return True

    def _status_words(self) -> str:
        if self.state == "done":
            costs = costs_words(self.result.record())
            return (f"loaded {format_size(self.total)} in {self.result.seconds:.3f} s ({self.result.gbps:.2f} GB/s)"
                    + (f"; {costs}" if costs else ""))
        if self.state == "cancelled":
            return f"stopped by request after {format_size(self.landed)} of {format_size(self.total)}; nothing kept"
        if self.state == "failed":
            return f"failed: {self.error}"
        return f"{self.state}: {format_size(self.landed)} of {format_size(self.total)}"

    # --- running --------------------------------------------------------------------------

    def _ended(self, run: BackgroundLoad) -> None:
        """Called on the load's worker thread when the load ends: record how, then let waiters go."""
        if run.error is None:
            self.result, self.state = run.result, "done"
        elif isinstance(run.error, LoadCancelled):
            self.error, self.state = run.error, "cancelled"
        else:
            self.error, self.state = run.error, "failed"  # re-raised by wait() on the caller's thread
        self._finished.set()

    def _redraw_loop(self) -> None:
        period = 1.0 / self.max_fps
        while not self._finished.wait(period):
            try:
                self.redraw()
            except Exception as e:  # noqa: BLE001 - a broken chart must not stop the load
                self.redraw_error = e
                return

    def _finish_display(self) -> None:
        self._final_drawn = True
        self.redraw(force=True)
        if self.widget is not None:
            self.stop_button.disabled = True
            self.stop_button.description = {"cancelled": "Stopped", "failed": "Failed"}.get(self.state, "Done")
            self.progress.bar_style = {"done": "success", "cancelled": "warning"}.get(self.state, "danger")

    def start(self, live: bool = True) -> "LiveLoad":
        """Start the load (and, with `live`, the redraw thread); returns at once."""
        if self.state != "ready":
            raise RuntimeError(f"this load was already started (state: {self.state})")
        self.state = "running"
        self._worker = BackgroundLoad(self.source, log=self.log, cancel=self.cancel, on_done=self._ended,
                                      thread_name="gdslab-live-load", **self.load_kwargs).thread
        if live:
            self._redrawer = threading.Thread(target=self._live_loop, name="gdslab-live-redraw", daemon=True)
            self._redrawer.start()
        return self

    def _live_loop(self) -> None:
        self._redraw_loop()
        self._worker.join()
        try:
            self._finish_display()
        except Exception as e:  # noqa: BLE001 - kept for the notebook side, never printed from here
            self.redraw_error = e

    def stop(self) -> None:
        """Ask the load to stop: it raises LoadCancelled inside and hands nothing back."""
        self.cancel.set()

    @property
    def running(self) -> bool:
        return self.state == "running" and not self._finished.is_set()

    def wait(self, timeout: float | None = None) -> LoadResult | None:
        """Block until the load and the chart are finished; return the result (None if stopped).

        A failed load re-raises its error here. An interrupt (Ctrl-C, the kernel's ■) while
        waiting cancels the load, waits for its threads, then propagates.
        """
        if self._worker is None:
            raise RuntimeError("this load has not been started")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for thread in (self._worker, self._redrawer):
                # Short joins, so an interrupt is seen at once whichever thread the signal hit.
                while thread is not None and thread.is_alive():
                    left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                    if left <= 0:
                        break
                    thread.join(left)
        except KeyboardInterrupt:
            self.stop()
            for thread in (self._worker, self._redrawer):
                if thread is not None:
                    thread.join()
            raise
        if any(t is not None and t.is_alive() for t in (self._worker, self._redrawer)):
            raise TimeoutError(f"load still running after {timeout} s")
        if not self._final_drawn:
            self._finish_display()
        if self.state == "failed":
            raise self.error
        return self.result

    def show(self) -> None:
        """Display the live widget (in a kernel); after the load, the static figure."""
        from IPython.display import Image, display

        if self.widget is not None and self.state in ("ready", "running"):
            display(self.widget)
        else:
            display(Image(self.png(), format="png"))

    def __repr__(self) -> str:
        return f"<LiveLoad {self.datapath} → {self.device}: {self._status_words()}>"


def live_load(source: Any, blocking: bool = False, *, max_fps: float = 10.0, display: bool = True,
              **load_kwargs) -> LiveLoad:
    """Load `source` with `gdslab.load(**load_kwargs)` while a live chart shows every device fill.

    Non-blocking (default): the widget is displayed (inside a kernel) and the call returns
    at once; `.wait()` or `.result` gives the `LoadResult`, the Stop button or `.stop()`
    cancels. `blocking=True` (headless: nbval, scripts): runs to the end without live
    redraws, displays the final static figure (inside a kernel) and returns; a failed load
    raises. Example::

        live = live_load(path, datapath="pinned-bounce", threads=8, io_size="16MiB")
        result = live.wait()
    """
    live = LiveLoad(source, max_fps=max_fps, **load_kwargs)
    show = display and _in_kernel()
    if blocking:
        live.start(live=False)
        try:
            live.wait()
        finally:
            if show:
                live.show()
        return live
    if show:
        live.show()
    return live.start()





# --- a sweep to launch ---------------------------------------------------------------------------


class SweepControls:
    """Choose a small sweep's grid (paths, io sizes, threads, shards, cache, repeats) and run it into a fresh folder.

    `run()` runs the current choice (the Run button calls it) and shows the report's tables;
    it returns `(SweepResult, Report)`. Without ipywidgets the defaults are the choice.
    """

    def __init__(self, paths, results, *, size, device, default_path, checkpoint=None):
        from pathlib import Path

        self.results, self.size, self.device = Path(results), size, device
        self.checkpoint = str(checkpoint or "")  # a real checkpoint instead of the synthetic ones
        self.values = {"datapaths": (default_path,), "io_sizes": ("1MiB", "4MiB"), "threads": (1, 4),
                       "shards": (1, 4), "caches": ("warm",), "repeats": 1}
        self.options = {"datapaths": list(paths), "io_sizes": ["256KiB", "1MiB", "4MiB", "16MiB"],
                        "threads": [1, 2, 4, 8], "shards": [1, 2, 4], "caches": ["cold", "warm"]}
        self.controls, self.output, self.widget = None, None, None
        try:
            import ipywidgets as w
        except ImportError:
            return
        self.controls = {name: w.SelectMultiple(options=self.options[name], value=self.values[name], description=name)
                         for name in self.options}
        self.controls["repeats"] = w.IntSlider(value=1, min=1, max=5, description="repeats")
        button = w.Button(description="Run sweep", button_style="primary")
        button.on_click(lambda _button: self.run())
        self.output = w.Output()
        row = list(self.controls.values())
        self.widget = w.VBox([w.HBox(row[:3]), w.HBox(row[3:] + [button]), self.output])

    def run(self):
        import tempfile
        from pathlib import Path

        from .report import report
        from .sweep import Grid, sweep

        if self.controls is not None:
            self.values = {name: c.value for name, c in self.controls.items()}
        grid = Grid(**self.values, size=self.size, checkpoint=self.checkpoint)
        folder = Path(tempfile.mkdtemp(prefix="sweep-", dir=self.results))
        done = sweep(folder, grid, device=self.device, progress=self.output is not None)
        made = report(folder)
        if self.output is not None and _in_kernel():
            from IPython.display import Markdown, display

            with self.output:
                self.output.clear_output()
                display(Markdown(made.text.split("## Figures")[0]))
        return done, made


def sweep_controls(paths, results, *, size, device, default_path, checkpoint=None,
                   display: bool = True) -> SweepControls:
    """`SweepControls`, shown in a notebook."""
    controls = SweepControls(paths, results, size=size, device=device, default_path=default_path,
                             checkpoint=checkpoint)
    if display and _in_kernel() and controls.widget is not None:
        from IPython.display import display as show

        show(controls.widget)
    return controls


# --- the cold-start model's knobs -------------------------------------------------------------


class ColdStartExplorer:
    """The cold-start model's choices that matter, as controls; the projection and its chart follow them.

    Starts from a preset (default: the published GDS set-up) and changes what a reader would:
    the client's path (TCP, EFA, EFA with GDS), the file system's capacity and tier, the
    weights' dtype, their layout (pre-sharded, sliced on the fly, whole files), the loader.
    Everything shown is labelled a projection. `set(...)` changes controls from code (tests,
    headless runs); `.projection` is the current one.
    """

    CAPACITIES = (4.8, 9.6, 24.0, 48.0, 96.0, 192.0, 480.0)
    TIERS = (125.0, 250.0, 500.0, 1000.0)

    def __init__(self, inputs=None, scenario=None):
        from . import coldstart as cs

        self.cs = cs
        self.inputs = inputs if inputs is not None else cs.Inputs()
        self.base = scenario if scenario is not None else cs.presets()[0]
        storage = self.base.storage
        self.values = {"model": self.base.model, "dtype": self.base.dtype, "client": storage.client,
                       "capacity_tib": storage.capacity_tib or 96.0, "tier": storage.tier_mbps_per_tib,
                       "layout": self.base.layout, "loader": self.base.loader}
        self.projection = None
        self.figure = None
        self.widget = self._build()
        self.update()

    def scenario(self):
        """The scenario the controls describe (the published FSx measurement applies only to its own set-up)."""
        v, cs = self.values, self.cs
        published = v["capacity_tib"] == 96.0 and v["tier"] == 1000.0 and v["client"] != "tcp"
        storage = cs.Storage("fsx-lustre", v["client"], v["capacity_tib"], v["tier"], measured=published)
        return cs.Scenario("explorer", "your choice", model=v["model"], dtype=v["dtype"], layout=v["layout"],
                           storage=storage, loader=v["loader"])

    def set(self, **values) -> "ColdStartExplorer":
        unknown = set(values) - set(self.values)
        if unknown:
            raise ValueError(f"no control named {', '.join(sorted(unknown))}; controls: {', '.join(self.values)}")
        self.values.update(values)
        for name, value in values.items():
            if self.controls is not None:
                self.controls[name].value = value  # the observer recomputes
        if self.controls is None:
            self.update()
        return self

    def update(self, *_):
        from .plots import plot_cold_start

        if self.controls is not None:
            self.values.update({name: c.value for name, c in self.controls.items()})
        self.projection = self.cs.project(self.scenario(), self.inputs)
        startup = sum(step.seconds for step in self.cs.startup(self.inputs))
        self.figure = plot_cold_start([self.projection], startup=startup)
        if self.output is not None and _in_kernel():
            from IPython.display import display

            with self.output:
                self.output.clear_output(wait=True)
                print(self.projection.summary())
                if not self.projection.unavailable:
                    print(f"    with the rest of a server's start: "
                          f"{self.cs.format_seconds(self.cs.time_to_serve(self.projection, self.inputs))} "
                          f"until it serves ({self.cs.LABEL})")
                display(self.figure)
        return self.projection

    def _build(self):
        self.controls, self.output = None, None
        try:
            import ipywidgets as w
        except ImportError:
            return None
        cs = self.cs
        style = {"description_width": "150px"}
        self.controls = {
            "model": w.ToggleButtons(options=["llama-3.1-405b", "llama-3.1-70b"], value=self.values["model"],
                                     description="model", style=style),
            "dtype": w.ToggleButtons(options=["bf16", "fp8_e4m3"], value=self.values["dtype"],
                                     description="weights", style=style),
            "client": w.ToggleButtons(options=list(cs.CLIENTS), value=self.values["client"],
                                      description="client path", style=style),
            "capacity_tib": w.SelectionSlider(options=list(self.CAPACITIES), value=self.values["capacity_tib"],
                                              description="FSx capacity (TiB)", style=style),
            "tier": w.ToggleButtons(options=list(self.TIERS), value=self.values["tier"],
                                    description="tier (MB/s/TiB)", style=style),
            "layout": w.ToggleButtons(options=list(cs.LAYOUTS), value=self.values["layout"],
                                      description="layout", style=style),
            "loader": w.Dropdown(options=[n for n in cs.LOADERS if n != "s5cmd"], value=self.values["loader"],
                                 description="loader", style=style),
        }
        self.output = w.Output()
        for control in self.controls.values():
            control.observe(self.update, names="value")
        return w.VBox([*self.controls.values(), self.output])


def coldstart_explorer(inputs=None, scenario=None, display: bool = True) -> ColdStartExplorer:
    """Controls for the cold-start model (`ColdStartExplorer`), shown in a notebook."""
    explorer = ColdStartExplorer(inputs, scenario)
    if display and _in_kernel() and explorer.widget is not None:
        from IPython.display import display as show

        show(explorer.widget)
    return explorer

__all__ = ["LiveLoad", "live_load", "ColdStartExplorer", "coldstart_explorer", "SweepControls", "sweep_controls", "fleet_slider"]


def fleet_slider(nodes: int = 2, max_nodes: int = 32, display: bool = True, **options):
    """A slider for the node count of a fleet starting at once (`gdslab.fleet`): time to ready against nodes.

    Lines: the published 96 TiB FSx and one of `fleet.LARGER_TIB`, each with every byte from
    disk and with the servers' cache read once; the slider marks N and prints each line's
    point there. `options` go to `fleet.point` (dtype, nodes_per_replica, inputs). Returns a
    namespace with `.set(n)`, `.points` (at the current N), `.figure` and `.widget` (None
    without ipywidgets). Every number is a projection.
    """
    from types import SimpleNamespace

    from matplotlib.figure import Figure

    from . import fleet

    step = options.get("nodes_per_replica", 1)
    counts = list(range(step, max_nodes + 1, step))
    setups = {f"{tib:g} TiB FSx, " + ("servers' cache read once" if cache else "every byte from disk"):
              dict(storage=fleet.fsx(tib), server_cache=cache) for tib in (96.0, fleet.LARGER_TIB) for cache in
              (False, True)}
    curves = {name: fleet.curve(node_counts=counts, **setup, **options) for name, setup in setups.items()}
    state = SimpleNamespace(widget=None, figure=None, points={}, curves=curves, output=None)

    def draw(n: int) -> None:
        state.points = {name: fleet.point(n, **setup, **options) for name, setup in setups.items()}
        fig = Figure(figsize=(8, 4.2))
        ax = fig.add_subplot()
        for name, points in curves.items():
            ax.plot([p.nodes for p in points], [p.seconds for p in points], marker=".", label=name)
        ax.axvline(n, color="0.5", linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("P5en nodes starting at once")
        ax.set_ylabel("each node's time to ready, weights (s)")
        ax.set_title(f"A fleet's cold start ({fleet.LABEL}): {n} node(s) marked", fontsize=10)
        ax.legend(fontsize=8)
        state.figure = fig
        if state.output is not None and _in_kernel():
            from IPython.display import display as show

            with state.output:
                state.output.clear_output(wait=True)
                for name, p in state.points.items():
                    print(f"{name}: {p.seconds:.1f} s each ({p.label}, {p.kind}); binds: {p.binding.name}")
                show(fig)

    def set_nodes(n: int):
        if state.widget is not None:
            state.slider.value = n  # the observer redraws
        else:
            draw(n)
        return state

    state.set = set_nodes
    try:
        import ipywidgets as w
    except ImportError:
        w = None
    if w is not None:
        state.slider = w.IntSlider(value=nodes, min=step, max=max_nodes, step=step, description="nodes")
        state.output = w.Output()
        state.slider.observe(lambda change: draw(change["new"]), names="value")
        state.widget = w.VBox([state.slider, state.output])
    draw(nodes)
    if display and _in_kernel() and state.widget is not None:
        from IPython.display import display as show

        show(state.widget)
    return state

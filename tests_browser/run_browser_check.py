"""Run every lab notebook in real JupyterLab in headless Chromium, as a person would.

`make test-browser` runs this script (after installing Debian's chromium where it is
missing). nbval proves that the notebooks execute; this proves what a person sees: it
starts JupyterLab on 127.0.0.1 (a free port, no token, no password, its own temporary
config, runtime, data, settings and workspace folders, GDSLAB_LAB_SIZE=32MiB unless set),
opens each notebook through Playwright's Python package driving /usr/bin/chromium
(Playwright's own browser download does not work here), clicks Run → Run All Cells,
waits until the kernel is idle and every cell has run, and checks what follows.

Every notebook under notebooks/ (in name order: 00, 01, … so a new one joins by itself)
runs twice, in two passes, each in its own JupyterLab:

* **one lab**: all notebooks in one JupyterLab, one after the other, no kernel shut down
  between them, as a workshop room runs them. After each notebook its kernel must not keep
  any file of the lab's checkpoints memory-mapped (a mapped page cannot be evicted, and the
  next notebooks' cold runs would be refused): the check names the kernel and the files.
* **fresh kernels**: each notebook in a new kernel, shut down after it.

Both passes must pass. In each, every notebook is checked for this:

* no cell shows an error: no error output in the model, and no stderr output in the page
  that holds a Traceback (warnings on stderr are fine);
* widgets rendered: no "Error displaying widget" anywhere, and every cell whose outputs
  hold a widget view shows a `.jupyter-widgets` element;
* the live chart drew (see the convention below);
* no figure is printed as text (`<Figure size 640x480 with 1 Axes>`: `display(fig)` of a
  matplotlib Figure before the inline backend is active) instead of drawn.

Findings are read once the page has settled: kernel idle, no kernel message for 3 s and
nothing changing (a widget such as `interactive` may call back into the kernel after the
run), 30 s at most. It saves a screenshot of each executed notebook under
results/screenshots/PASS/NAME.png (PASS: one-lab, fresh) and ends with the line
`N passed, M failed` over both passes; the exit status is 1 when any notebook failed.

Live-chart convention: a live-chart cell is a code cell whose source calls
`live_load(` (gdslab.widgets) or that carries the cell tag `live-chart` (cell metadata
`"tags": ["live-chart"]`; in JupyterLab: Property Inspector → Cell Tags) — tag the cell
that displays the chart when that is not the cell calling `live_load`. After the run the
page must show, inside each live-chart cell's outputs, a drawn picture (an `<img>` that
has loaded, a `<canvas>`, or an `<svg>`) of at least 100×60 px: the `ipywidgets.Image`
that `live_load` updates, a matplotlib figure, or a figure inside an `ipywidgets.Output`.
A notebook without a live-chart cell has no live-chart check; the report says so.

Nothing is saved back into the notebooks: autosave is off, and the script checks that
every notebook file is byte-identical afterwards.

Cells are named by their 0-based position in the notebook (markdown cells count) and
their prompt number, e.g. `cell 6 (In [4])`.

Usage: python tests_browser/run_browser_check.py [NOTEBOOK.ipynb ...] [--root DIR]
       [--timeout SECONDS] [--screenshots DIR] [--passes one-lab,fresh]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_CHART_TAG = "live-chart"
# The two ways a room runs the notebooks: (name, whether each kernel is shut down after its notebook).
PASSES = {"one-lab": False, "fresh": True}
PASS_TITLES = {"one-lab": "one JupyterLab, notebooks in order, kernels left running",
               "fresh": "each notebook in a fresh kernel"}
TEST_LAB_SIZE = "32MiB"  # the notebooks' test size, as in `make test` (read by gdslab/lab.py)
SERVER_START_TIMEOUT_S = 120.0
RENDER_GRACE_S = 30.0  # at most this long for the page to settle after the run ended
QUIET_S = 3.0  # settled: no kernel message for this long and the page unchanged
VIEWPORT = {"width": 1280, "height": 900}
MAX_SCREENSHOT_HEIGHT = 16000

# JupyterLab user settings for the test only: nothing written back into the notebooks
# (autosave off), every cell attached to the DOM (no windowing), no news/update toasts,
# no extension manager reaching out to a package index.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}

# The notebook panel for a path, found through the app object that
# LabApp.expose_app_in_browser puts on window.jupyterapp.
_FIND_PANEL = """
const findPanel = (path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.content && w.sessionContext) return w;
  }
  return null;
};
"""

_JS_KERNEL_READY = _FIND_PANEL + """
(path) => {
  const panel = findPanel(path);
  if (!panel || !panel.context.isReady || !panel.sessionContext.isReady) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  if (!panel.gdslabWatched) {  // note the time of every kernel message (see _JS_QUIET_MS)
    panel.gdslabWatched = true;
    const touch = () => { window.gdslabLastKernelActivity = Date.now(); };
    touch();
    panel.sessionContext.iopubMessage.connect(touch);
    panel.sessionContext.statusChanged.connect(touch);
  }
  window.jupyterapp.shell.activateById(panel.id);
  window.jupyterapp.shell.collapseLeft();
  window.jupyterapp.shell.collapseRight();
  return true;
}
"""

_JS_QUIET_MS = "() => Date.now() - (window.gdslabLastKernelActivity || 0)"

_JS_RUN_STATE = _FIND_PANEL + """
(path) => {
  const panel = findPanel(path);
  if (!panel) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    const model = cell.model;
    const prompt = cell.node.querySelector('.jp-InputPrompt');
    cells.push({
      index,
      type: model.type,
      source: model.sharedModel.getSource(),
      executionCount: model.type === 'code' ? model.executionCount : null,
      queued: !!prompt && prompt.textContent.includes('*'),
      errorOutputs: model.type === 'code'
        ? model.outputs.toJSON().filter((o) => o.output_type === 'error').length : 0,
    });
  });
  return {kernel: kernel ? kernel.status : 'none', cells};
}
"""

_JS_CHECK = _FIND_PANEL + r"""
(args) => {
  const [path, chartTag] = args;
  const panel = findPanel(path);
  if (!panel) return null;
  const drawn = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width < 100 || r.height < 60) return false;
    if (el.tagName === 'IMG') return el.complete && el.naturalWidth > 0;
    return true;
  };
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    const model = cell.model;
    if (model.type !== 'code') return;
    const outputs = model.outputs.toJSON();
    const tags = model.getMetadata('tags') || [];
    const tracebacks = [...cell.node.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map((el) => el.innerText).filter((t) => t.includes('Traceback'));
    const figureTexts = [...cell.node.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="text/plain"]')]
      .map((el) => el.innerText.trim()).filter((t) => /^<Figure size [0-9.]+x[0-9.]+ with/.test(t));
    const outputNode = cell.node.querySelector('.jp-Cell-outputWrapper');
    const pictures = outputNode ? [...outputNode.querySelectorAll('img, canvas, svg')] : [];
    cells.push({
      index,
      executionCount: model.executionCount,
      source: model.sharedModel.getSource(),
      errors: outputs.filter((o) => o.output_type === 'error')
        .map((o) => `${o.ename}: ${o.evalue}`),
      tracebacks,
      figureTexts,
      widgetOutputs: outputs.filter((o) => o.data &&
        'application/vnd.jupyter.widget-view+json' in o.data).length,
      widgetViews: cell.node.querySelectorAll('.jupyter-widgets').length,
      widgetErrors: (outputNode && outputNode.innerText.includes('Error displaying widget')) ? 1 : 0,
      liveChart: tags.includes(chartTag) || /\blive_load\s*\(/.test(model.sharedModel.getSource()),
      drawnPictures: pictures.filter(drawn).length,
    });
  });
  const pageText = document.body.innerText;
  return {cells, widgetErrorInPage: pageText.includes('Error displaying widget')};
}
"""

_JS_OVERFLOW = _FIND_PANEL + """
(path) => {
  // How far the last cell reaches below the visible notebook area, scrolled to the top
  // (not scrollHeight: JupyterLab pads the end of a notebook in proportion to the window).
  const panel = findPanel(path);
  const cells = panel.content.widgets;
  const outer = panel.content.node.querySelector('.jp-WindowedPanel-outer') || panel.content.node;
  outer.scrollTop = 0;
  if (!cells.length) return 0;
  const last = cells[cells.length - 1].node.getBoundingClientRect();
  return Math.ceil(last.bottom - outer.getBoundingClientRect().bottom);
}
"""

_JS_SHUTDOWN_KERNEL = _FIND_PANEL + """
async (path) => {
  const panel = findPanel(path);
  if (panel) await panel.sessionContext.shutdown();
  return true;
}
"""


class HarnessError(Exception):
    """The harness itself could not do its job (no browser, server did not start)."""


class NotebookTimeout(Exception):
    """A notebook did not reach the awaited state within its time."""


@dataclass
class NotebookResult:
    """What happened to one notebook in the browser, in one pass."""

    name: str
    run: str = ""  # the pass: one-lab or fresh
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_lab_config(tmp: Path, root: Path, port: int) -> dict[str, str]:
    """Write the test-only Jupyter config and settings; return the server's environment."""
    dirs = {name: tmp / name for name in ("config", "runtime", "data", "settings", "workspaces", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True)
    config = {
        "ServerApp": {
            "ip": "127.0.0.1",
            "port": port,
            "port_retries": 0,
            "root_dir": str(root),
            "open_browser": False,
            "allow_root": os.geteuid() == 0,  # CI and these machines run as root
            "terminals_enabled": False,
        },
        "IdentityProvider": {"token": ""},
        "PasswordIdentityProvider": {"hashed_password": "", "password_required": False},
        "LabApp": {
            "expose_app_in_browser": True,
            "news_url": None,
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        },
    }
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(config, indent=1))
    for plugin, values in LAB_SETTINGS.items():
        target = dirs["settings"] / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_PREFER_ENV_PATH="1",
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        IPYTHONDIR=str(dirs["ipython"]),
        GDSLAB_LAB_SIZE=os.environ.get("GDSLAB_LAB_SIZE") or TEST_LAB_SIZE,
    )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server politely (it shuts its kernels down), then by force."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def jupyterlab(root: Path) -> Iterator[tuple[str, int]]:
    """A JupyterLab server on 127.0.0.1 for this run only; yields its base URL and pid."""
    with tempfile.TemporaryDirectory(prefix="gdslab-lab-") as tmp_name:
        tmp = Path(tmp_name)
        port = _free_port()
        env = _write_lab_config(tmp, root, port)
        log_path = tmp / "server.log"
        with log_path.open("wb") as log:
            # stdin is no terminal: one SIGINT stops the server (on a terminal it asks first).
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser"],
                cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for_status(base, proc, log_path)
            yield base, proc.pid
        finally:
            _stop(proc)


def _wait_for_status(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until /api/status answers; a server that exits or hangs is a HarnessError."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while True:
        if proc.poll() is not None:
            raise HarnessError(f"JupyterLab exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            with direct.open(f"{base}/api/status", timeout=5) as reply:
                if reply.status == 200:
                    json.load(reply)
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        if time.monotonic() > deadline:
            raise HarnessError(f"JupyterLab did not answer /api/status in {SERVER_START_TIMEOUT_S:.0f} s:\n"
                               f"{_tail(log_path)}")
        time.sleep(0.5)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium with a fresh profile, driven by Playwright; yields the context."""
    if not CHROMIUM.exists():
        raise HarnessError(f"{CHROMIUM} is missing: apt-get install -y chromium (make test-browser does)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="gdslab-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


def _dismiss_dialogs(page: Any, result: NotebookResult) -> None:
    """Accept any modal dialog (kernel choice, a server notice) so that it blocks nothing."""
    for dialog in page.locator(".jp-Dialog").all():
        text = " ".join(dialog.inner_text().split())[:200]
        result.notes.append(f"dismissed dialog: {text}")
        accept = dialog.locator(".jp-Dialog-button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        else:
            page.keyboard.press("Escape")
    for toast in page.locator(".Toastify__toast .Toastify__close-button").all():
        toast.click()


def _poll(page: Any, js: str, arg: Any, deadline: float, what: str, result: NotebookResult) -> Any:
    """Evaluate `js` until it returns something truthy, dismissing dialogs meanwhile."""
    while True:
        _dismiss_dialogs(page, result)
        value = page.evaluate(js, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise NotebookTimeout(what)
        page.wait_for_timeout(250)


def _click_run_all(page: Any) -> None:
    """Run → Run All Cells, through the menu bar."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    item = page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel",
                                                          has_text=re.compile(r"^Run All Cells$")))
    item.wait_for(state="visible", timeout=10_000)
    if "lm-mod-disabled" in (item.get_attribute("class") or ""):
        raise HarnessError("Run All Cells is disabled in the Run menu")
    item.click()


def _finished(state: dict[str, Any] | None, before: dict[int, Any]) -> bool:
    """The kernel is idle, nothing is queued, and every code cell ran (or an error stopped the run)."""
    if not state or state["kernel"] != "idle":
        return False
    code = [c for c in state["cells"] if c["type"] == "code" and c["source"].strip()]
    if any(c["queued"] for c in code):
        return False
    ran = all(c["executionCount"] is not None and c["executionCount"] != before.get(c["index"]) for c in code)
    return ran or any(c["errorOutputs"] for c in code)


def _wait_until_finished(page: Any, path: str, before: dict[int, Any], deadline: float,
                         result: NotebookResult) -> dict[str, Any]:
    """Poll until `_finished` holds on two polls in a row (a run does not blink idle between cells)."""
    streak = 0
    while True:
        _dismiss_dialogs(page, result)
        state = page.evaluate(_JS_RUN_STATE, path)
        streak = streak + 1 if _finished(state, before) else 0
        if streak >= 2:
            return state
        if time.monotonic() > deadline:
            raise NotebookTimeout("the run to finish (kernel idle, every cell run)")
        page.wait_for_timeout(500)


def _settled_check(page: Any, rel: str, deadline: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run state and the page's findings once the page has settled.

    After Run All ends, widget views still render, a live chart may keep drawing, and a
    widget may call back into the kernel (an `interactive` re-running its function when
    its sliders sync): wait until the kernel sent nothing for QUIET_S, the findings did
    not change between two looks, and nothing awaited is missing, RENDER_GRACE_S at most.
    """
    until = min(deadline, time.monotonic() + RENDER_GRACE_S)
    previous: dict[str, Any] | None = None
    while True:
        page.wait_for_timeout(500)
        state = page.evaluate(_JS_RUN_STATE, rel)
        check = page.evaluate(_JS_CHECK, [rel, LIVE_CHART_TAG])
        missing = any((c["liveChart"] and not c["drawnPictures"]) or
                      (c["widgetOutputs"] and not c["widgetViews"] and not c["widgetErrors"])
                      for c in check["cells"])
        settled = (state["kernel"] == "idle" and page.evaluate(_JS_QUIET_MS) >= QUIET_S * 1000
                   and check == previous and not missing)
        if settled or time.monotonic() > until:
            return state, check
        previous = check


def _problems(check: dict[str, Any], state: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Turn the page's findings into problems (failures) and notes."""
    problems: list[str] = []
    notes: list[str] = []
    for c in state["cells"]:
        if c["type"] == "code" and c["source"].strip() and c["executionCount"] is None:
            problems.append(f"cell {c['index']} did not run")
    charts = [c for c in check["cells"] if c["liveChart"]]
    for c in check["cells"]:
        where = f"cell {c['index']}" + (f" (In [{c['executionCount']}])" if c.get("executionCount") else "")
        problems += [f"{where} error output: {e}" for e in c["errors"]]
        if c["tracebacks"] and not c["errors"]:
            first = c["tracebacks"][0].strip().splitlines()
            problems.append(f"{where} shows a traceback: {first[-1] if first else ''}")
        if c["figureTexts"]:
            problems.append(f"{where} prints a figure as text instead of drawing it: {c['figureTexts'][0]}"
                            " (display(fig) without the inline backend active)")
        if c["widgetErrors"]:
            problems.append(f"{where} shows 'Error displaying widget'")
        if c["widgetOutputs"] and not c["widgetViews"]:
            problems.append(f"{where} displays {c['widgetOutputs']} widget(s) but no .jupyter-widgets element rendered")
        if c["liveChart"] and not c["drawnPictures"]:
            problems.append(f"{where} is a live-chart cell but shows no drawn image/canvas/svg")
    if check["widgetErrorInPage"] and not any("Error displaying widget" in p for p in problems):
        problems.append("the page shows 'Error displaying widget'")
    widgets = sum(c["widgetViews"] for c in check["cells"])
    notes.append(f"{widgets} widget element(s) rendered")
    notes.append(f"live chart: {len(charts)} cell(s) checked" if charts else
                 f"live chart: no cell calls live_load( or is tagged {LIVE_CHART_TAG!r}, not checked")
    return problems, notes


def check_notebook(context: Any, base: str, root: Path, notebook: Path, timeout_s: float,
                   shots: Path, run_id: int, shutdown: bool = True, run: str = "") -> NotebookResult:
    """Open one notebook in a fresh workspace, run all cells, check the page, screenshot it.

    With `shutdown` its kernel is shut down afterwards; without, it keeps running (a room).
    """
    rel = notebook.resolve().relative_to(root.resolve()).as_posix()
    result = NotebookResult(notebook.name, run=run)
    start = time.monotonic()
    deadline = start + timeout_s
    page = context.new_page()
    page.set_default_timeout(30_000)
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    try:
        page.goto(f"{base}/lab/workspaces/check{run_id}/tree/{rel}", wait_until="domcontentloaded")
        _poll(page, _JS_KERNEL_READY, rel, deadline, "the notebook to open with an idle kernel", result)
        before = {c["index"]: c["executionCount"] for c in page.evaluate(_JS_RUN_STATE, rel)["cells"]}
        _click_run_all(page)
        _wait_until_finished(page, rel, before, deadline, result)
        _fit_viewport(page, rel)  # now, so that the findings and the screenshot agree
        state, check = _settled_check(page, rel, deadline)
        result.problems, notes = _problems(check, state)
        result.notes += notes
    except NotebookTimeout as exc:
        result.problems.append(f"timed out after {timeout_s:.0f} s waiting for {exc}")
    except Exception as exc:  # the browser or page broke: record it, keep checking the others
        result.problems.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        result.screenshot = _screenshot(page, rel, shots / f"{notebook.stem}.png", result)
        if shutdown:
            try:
                page.evaluate(_JS_SHUTDOWN_KERNEL, rel)
            except Exception:
                pass  # the server's shutdown stops the kernel anyway
        page.close()
    result.notes += [f"page error: {e}" for e in console_errors[:3]]
    result.seconds = time.monotonic() - start
    return result


def _fit_viewport(page: Any, rel: str) -> None:
    """Make the window as tall as the notebook, so one picture shows all of it."""
    for _ in range(8):  # the layout settles after each resize
        height = page.viewport_size["height"]
        target = max(VIEWPORT["height"], min(height + page.evaluate(_JS_OVERFLOW, rel) + 60, MAX_SCREENSHOT_HEIGHT))
        if abs(target - height) < 30:
            return
        page.set_viewport_size({"width": VIEWPORT["width"], "height": target})
        page.wait_for_timeout(300)


def _screenshot(page: Any, rel: str, target: Path, result: NotebookResult) -> Path | None:
    """The whole page as it is now, the window first made as tall as the notebook."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            _fit_viewport(page, rel)
        except Exception:
            pass  # a notebook that never opened: take the page as it is
        page.screenshot(path=str(target), full_page=True)
        return target
    except Exception as exc:
        result.notes.append(f"no screenshot: {exc}")
        return None


def lab_checkpoint_files() -> list[Path]:
    """The safetensors files the notebooks load: the lab's synthetic checkpoints and $GDSLAB_CHECKPOINT's."""
    from gdslab.synthetic import checkpoints_home

    files = sorted(checkpoints_home().glob("*/*.safetensors"))
    real = os.environ.get("GDSLAB_CHECKPOINT", "").strip()
    if real:
        path = Path(real).expanduser()
        files += sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]
    return files


def parent_pid(pid: int) -> int | None:
    """The parent of `pid` (from /proc/PID/stat), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # after the command name: state, ppid, ...


def leftover_mappings(found: list[Any], notebook: str, is_ours: Any) -> list[str]:
    """Problems for a notebook whose kernel, its run over, still maps checkpoint files.

    `found` are `gdslab.holders.Holder`s; only this lab's kernels (`is_ours(pid)`) whose
    notebook is `notebook` count: in a room, what they keep mapped stays in the page cache
    and every later cold run on it is refused.
    """
    return [f"its kernel (pid {h.pid}) still maps {', '.join(h.mapped)} after the run: the notebooks after it "
            f"cannot make cold runs on that checkpoint (release it in the notebook: load from bytes, or delete "
            f"what views the file)"
            for h in found if h.mapped and not h.is_self and h.notebook == notebook and is_ours(h.pid)]


def _running_kernels(base: str) -> int | None:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(f"{base}/api/kernels", timeout=5) as reply:
            return len(json.load(reply))
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return None


def _report(result: NotebookResult) -> None:
    verdict = "PASS" if result.passed else "FAIL"
    print(f"{verdict} [{result.run}] {result.name} ({result.seconds:.1f} s)"
          + (f" -> {result.screenshot}" if result.screenshot else ""), flush=True)
    for problem in result.problems:
        print(f"    problem: {problem}", flush=True)
    for note in result.notes:
        print(f"    note: {note}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to check, in this order (default: notebooks/*.ipynb in name order)")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="folder JupyterLab serves; notebooks must be inside it (default: the repository)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per notebook (default 300)")
    parser.add_argument("--screenshots", type=Path, default=REPO / "results" / "screenshots")
    parser.add_argument("--passes", default=",".join(PASSES),
                        help=f"which passes to run, in order (default {','.join(PASSES)}): "
                             + "; ".join(f"{k}: {v}" for k, v in PASS_TITLES.items()))
    args = parser.parse_args(argv)
    args.passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    unknown = [p for p in args.passes if p not in PASSES]
    if unknown or not args.passes:
        parser.error(f"--passes: unknown {unknown or 'none given'}; choose from {', '.join(PASSES)}")
    return args


def default_notebooks() -> list[Path]:
    """Every notebook of the lab, in name order (00, 01, …): a new one is checked without a change here."""
    return sorted((REPO / "notebooks").glob("*.ipynb"))


def run_pass(name: str, notebooks: list[Path], root: Path, args: argparse.Namespace,
             hashes: dict[Path, str]) -> list[NotebookResult]:
    """One pass over the notebooks in its own JupyterLab (see PASSES)."""
    shutdown = PASSES[name]
    results: list[NotebookResult] = []
    with jupyterlab(root) as (base, server_pid), chromium() as context:
        print(f"== {name}: {PASS_TITLES[name]}; JupyterLab at {base}; {len(notebooks)} notebook(s), "
              f"{args.timeout:.0f} s each at most", flush=True)
        for run_id, nb in enumerate(notebooks):
            result = check_notebook(context, base, root, nb, args.timeout, args.screenshots / name, run_id,
                                    shutdown=shutdown, run=name)
            if _sha256(nb) != hashes[nb]:
                result.problems.append("the notebook file changed on disk during the check")
            if not shutdown:
                from gdslab.holders import holders

                found, _ = holders(lab_checkpoint_files())
                result.problems += leftover_mappings(found, nb.name, lambda pid: parent_pid(pid) == server_pid)
            _report(result)
            results.append(result)
        if not shutdown:
            print(f"   kernels still running at the end of the pass: {_running_kernels(base)} "
                  f"(one per notebook, as in a room)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    notebooks = args.notebooks or default_notebooks()
    root = args.root.resolve()
    for nb in notebooks:
        if not nb.is_file() or root not in nb.resolve().parents:
            print(f"error: {nb} is not a notebook inside {root}", file=sys.stderr)
            return 2
    if not notebooks:
        print("no notebooks in notebooks/: nothing to check")
        print("0 passed, 0 failed")
        return 0
    # make's or CI's SIGTERM unwinds like Ctrl-C, so the server and browser still get shut down.
    signal.signal(signal.SIGTERM, _interrupt)
    hashes = {nb: _sha256(nb) for nb in notebooks}
    results: list[NotebookResult] = []
    interrupted = False
    try:
        for name in args.passes:
            results += run_pass(name, notebooks, root, args, hashes)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: server and browser are down by now
        print(f"interrupted ({exc or 'Ctrl-C'})", file=sys.stderr)
        interrupted = True
    for name in args.passes:
        checked = {r.name for r in results if r.run == name}
        for nb in notebooks:
            if nb.name not in checked:
                results.append(NotebookResult(nb.name, run=name, problems=["not checked: the harness stopped"]))
    for name in args.passes:
        mine = [r for r in results if r.run == name]
        bad = [r.name for r in mine if not r.passed]
        print(f"{name}: {len(mine) - len(bad)} passed, {len(bad)} failed" + (f" ({', '.join(bad)})" if bad else ""))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())

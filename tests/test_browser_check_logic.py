"""The browser check's verdicts, without a browser: when a run counts as finished, and
which page findings fail a notebook (tests_browser/run_browser_check.py).

The browser run itself is `make test-browser`; these tests keep its decisions honest
where a mistake would hang the check or let a broken notebook pass.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tests_browser" / "run_browser_check.py"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_browser_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _cell(index: int, count: int | None, *, kind: str = "code", source: str = "x = 1",
          queued: bool = False, errors: int = 0) -> dict:
    return {"index": index, "type": kind, "source": source, "executionCount": count,
            "queued": queued, "errorOutputs": errors}


def test_finished_only_when_idle_and_every_code_cell_ran(check: ModuleType) -> None:
    before = {0: None, 1: None, 2: None}
    done = [_cell(0, None, kind="markdown", source="# T"), _cell(1, 1), _cell(2, 2)]
    assert check._finished({"kernel": "idle", "cells": done}, before)
    assert not check._finished({"kernel": "busy", "cells": done}, before)
    assert not check._finished({"kernel": "idle", "cells": [done[0], _cell(1, 1), _cell(2, None)]}, before)
    assert not check._finished({"kernel": "idle", "cells": [done[0], _cell(1, 1), _cell(2, None, queued=True)]},
                               before)
    # Empty code cells never get a count; they do not hold the run open.
    assert check._finished({"kernel": "idle", "cells": done + [_cell(3, None, source="  \n")]}, before)


def test_an_error_ends_the_run_and_stale_counts_do_not(check: ModuleType) -> None:
    stopped = [_cell(0, 1, errors=1), _cell(1, None)]
    assert check._finished({"kernel": "idle", "cells": stopped}, {0: None, 1: None})
    # Counts left over from before the click do not count as a run.
    assert not check._finished({"kernel": "idle", "cells": [_cell(0, 5)]}, {0: 5})


def _found(index: int = 1, **overrides: object) -> dict:
    found = {"index": index, "source": "x", "errors": [], "tracebacks": [], "figureTexts": [],
             "widgetOutputs": 0, "widgetViews": 0, "widgetErrors": 0, "liveChart": False, "drawnPictures": 0}
    found.update(overrides)
    return found


def _verdict(check: ModuleType, *cells: dict, page_error: bool = False) -> list[str]:
    state = {"kernel": "idle", "cells": [_cell(c["index"], 1) for c in cells]}
    problems, _ = check._problems({"cells": list(cells), "widgetErrorInPage": page_error}, state)
    return problems


def test_clean_page_passes(check: ModuleType) -> None:
    assert _verdict(check, _found(widgetOutputs=1, widgetViews=3), _found(2, liveChart=True, drawnPictures=1)) == []


@pytest.mark.parametrize(
    "cell, expected",
    [
        (_found(errors=["ValueError: bad"]), "error output: ValueError: bad"),
        (_found(tracebacks=["Traceback (most recent call last):\n...\nZeroDivisionError: division by zero"]),
         "shows a traceback: ZeroDivisionError"),
        (_found(widgetOutputs=1, widgetViews=0), "no .jupyter-widgets element"),
        (_found(widgetOutputs=1, widgetViews=1, widgetErrors=1), "Error displaying widget"),
        (_found(liveChart=True, drawnPictures=0), "live-chart cell but shows no drawn"),
        (_found(figureTexts=["<Figure size 640x480 with 1 Axes>"]), "prints a figure as text"),
    ],
    ids=["error", "traceback", "widget-missing", "widget-error", "chart-missing", "figure-as-text"],
)
def test_each_finding_fails_the_notebook(check: ModuleType, cell: dict, expected: str) -> None:
    problems = _verdict(check, cell)
    assert len(problems) == 1 and expected in problems[0]


def test_unrun_cell_and_page_wide_widget_error_fail(check: ModuleType) -> None:
    state = {"kernel": "idle", "cells": [_cell(1, 1), _cell(2, None)]}
    problems, _ = check._problems({"cells": [_found(1)], "widgetErrorInPage": True}, state)
    assert problems == ["cell 2 did not run", "the page shows 'Error displaying widget'"]


def test_every_notebook_is_checked_in_name_order(check: ModuleType) -> None:
    folder = SCRIPT.parent.parent / "notebooks"
    expected = [folder / name for name in sorted(os.listdir(folder)) if name.endswith(".ipynb")]
    assert check.default_notebooks() == expected and len(expected) >= 7


def test_both_passes_run_by_default_and_only_known_ones(check: ModuleType) -> None:
    assert check._parse([]).passes == ["one-lab", "fresh"]
    assert check.PASSES == {"one-lab": False, "fresh": True}  # the room keeps kernels; the fresh pass shuts them
    assert check._parse(["--passes", "fresh"]).passes == ["fresh"]
    with pytest.raises(SystemExit):
        check._parse(["--passes", "one-lab,sometimes"])


def test_a_kernel_left_mapping_the_checkpoint_fails_its_notebook_in_the_room(check: ModuleType) -> None:
    from gdslab.holders import Holder

    ours = {101, 102}
    found = [
        Holder(101, "the kernel of 01_checkpoints.ipynb", "01_checkpoints.ipynb", False, ("model-00001-of-00004.safetensors",), ()),
        Holder(102, "the kernel of 02_bounce_vs_gds.ipynb", "02_bounce_vs_gds.ipynb", False, (), ("model.safetensors",)),
        Holder(555, "the kernel of 01_checkpoints.ipynb", "01_checkpoints.ipynb", False, ("x.safetensors",), ()),  # another lab's
        Holder(os.getpid(), "this process", None, True, ("y.safetensors",), ()),
    ]
    problems = check.leftover_mappings(found, "01_checkpoints.ipynb", ours.__contains__)
    assert len(problems) == 1 and "pid 101" in problems[0] and "model-00001-of-00004.safetensors" in problems[0]
    assert check.leftover_mappings(found, "02_bounce_vs_gds.ipynb", ours.__contains__) == []  # open, not mapped


def test_parent_pid_reads_proc(check: ModuleType) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux /proc")
    assert check.parent_pid(os.getpid()) == os.getppid()
    assert check.parent_pid(2 ** 22 + 12345) is None  # no such process

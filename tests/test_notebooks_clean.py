"""Notebooks are committed clean: no outputs, no execution counts, no saved widget state,
and each opens with a markdown cell that says what it teaches.

Outputs in a committed notebook go stale, bloat diffs, and would show a reader results
that this machine never produced; nbval (`make test`) and the browser check
(`make test-browser`) run the notebooks fresh instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MIN_INTRO_WORDS = 8  # a title alone does not say what a notebook teaches


def notebook_problems(path: Path) -> list[str]:
    """Everything that keeps `path` from being a clean, self-introducing notebook."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises several types for unreadable notebooks
        return [f"not a valid nbformat 4 notebook: {type(exc).__name__}: {exc}"]
    problems: list[str] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {index} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {index} has execution count {cell.execution_count}")
    if "widgets" in nb.metadata:
        problems.append("notebook metadata holds saved widget state ('widgets')")
    problems += _intro_problems(nb.cells[0] if nb.cells else None)
    return problems


def _intro_problems(cell: nbformat.NotebookNode | None) -> list[str]:
    """The first cell is markdown: a `# ` title, then prose saying what the notebook teaches."""
    if cell is None:
        return ["the notebook has no cells"]
    if cell.cell_type != "markdown":
        return [f"the first cell is {cell.cell_type}, not markdown saying what the notebook teaches"]
    lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
    problems = []
    if not lines or not re.match(r"#\s+\S", lines[0]):
        problems.append("the first cell does not start with a '# ' title")
    prose = " ".join(line for line in lines if not line.startswith("#"))
    if len(re.findall(r"\w+", prose)) < MIN_INTRO_WORDS:
        problems.append(f"the first cell has fewer than {MIN_INTRO_WORDS} words beyond its title: "
                        "say what the notebook teaches")
    return problems


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebook_is_clean(path: Path) -> None:
    assert notebook_problems(path) == []


def _write(tmp_path: Path, cells: list[nbformat.NotebookNode], **metadata: object) -> Path:
    nb = nbformat.v4.new_notebook(cells=cells, metadata=metadata)
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    return path


INTRO = nbformat.v4.new_markdown_cell(
    "# Bounce vs GDS\n\nThis notebook teaches why the CPU bounce costs two copies and what GDS removes."
)


def test_clean_notebook_passes(tmp_path: Path) -> None:
    path = _write(tmp_path, [INTRO, nbformat.v4.new_code_cell("import gdslab")])
    assert notebook_problems(path) == []


def test_outputs_and_execution_counts_are_found(tmp_path: Path) -> None:
    ran = nbformat.v4.new_code_cell("print(1)", execution_count=3,
                                    outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")])
    counted = nbformat.v4.new_code_cell("x = 1", execution_count=4)
    problems = notebook_problems(_write(tmp_path, [INTRO, ran, counted]))
    assert problems == ["cell 1 has outputs", "cell 1 has execution count 3", "cell 2 has execution count 4"]


def test_saved_widget_state_is_found(tmp_path: Path) -> None:
    state = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}}
    path = _write(tmp_path, [INTRO], widgets=state)
    assert notebook_problems(path) == ["notebook metadata holds saved widget state ('widgets')"]


@pytest.mark.parametrize(
    "first, expected",
    [
        (nbformat.v4.new_code_cell("import gdslab"), "the first cell is code"),
        (nbformat.v4.new_markdown_cell("# Sweeps"), "fewer than 8 words"),
        (nbformat.v4.new_markdown_cell("Some words here that say nothing of a title at all."), "'# ' title"),
    ],
    ids=["code-first", "title-only", "no-title"],
)
def test_missing_introduction_is_found(tmp_path: Path, first: nbformat.NotebookNode, expected: str) -> None:
    problems = notebook_problems(_write(tmp_path, [first, nbformat.v4.new_code_cell("pass")]))
    assert len(problems) == 1 and expected in problems[0]


def test_empty_and_broken_notebooks_are_found(tmp_path: Path) -> None:
    assert notebook_problems(_write(tmp_path, [])) == ["the notebook has no cells"]
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": [')
    assert notebook_problems(broken)[0].startswith("not a valid nbformat 4 notebook")

"""How long each notebook takes, top to bottom, at the lab's sizes: the figures of docs/workshop.md.

    .venv/bin/python benchmarks/notebook_times.py --sizes 32MiB 512MiB --out /tmp/notebook-times.md

Each notebook is executed as a facilitator's run would (a fresh kernel, every cell, via
nbconvert's ExecutePreprocessor) with `GDSLAB_LAB_SIZE` set. The lab's checkpoints are
written before the clock starts (the first run of a new size writes them), so the times
are the notebooks' own. Wall-clock seconds on this machine; a GPU instance runs the same
cells at different speeds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def write_checkpoints(size: str) -> None:
    """The synthetic checkpoints the notebooks use, written now so no notebook pays for it."""
    os.environ["GDSLAB_LAB_SIZE"] = size
    from gdslab.lab import lab_checkpoint

    for shards in (1, 2, 4):
        lab_checkpoint(shards=shards)


def run_notebook(path: Path, size: str, timeout: int) -> float:
    """Seconds to execute every cell of `path` in a fresh kernel at `size`."""
    os.environ["GDSLAB_LAB_SIZE"] = size
    notebook = nbformat.read(path, as_version=4)
    executor = ExecutePreprocessor(timeout=timeout, kernel_name="python3")
    start = time.perf_counter()
    executor.preprocess(notebook, {"metadata": {"path": str(path.parent)}})
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["32MiB", "512MiB"])
    parser.add_argument("--notebooks", nargs="*", default=None, help="file names (default: every notebook)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may take")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)

    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.notebooks:
        paths = [NOTEBOOKS / name for name in args.notebooks]
    seconds: dict[tuple[str, str], float] = {}
    for size in args.sizes:
        write_checkpoints(size)
        for path in paths:
            seconds[(path.name, size)] = run_notebook(path, size, args.timeout)
            print(f"{path.name:32} {size:>7} {seconds[(path.name, size)]:7.1f} s", flush=True)

    header = "| notebook | " + " | ".join(f"at {s}" for s in args.sizes) + " |"
    lines = [header, "|---|" + "---:|" * len(args.sizes)]
    for path in paths:
        lines.append(f"| `{path.stem}` | " + " | ".join(f"{seconds[(path.name, s)]:.0f} s" for s in args.sizes) + " |")
    total = " | ".join(f"{sum(seconds[(p.name, s)] for p in paths):.0f} s" for s in args.sizes)
    lines.append(f"| all | {total} |")
    command = "python benchmarks/notebook_times.py " + " ".join(sys.argv[1:])
    page = (f"Measured {datetime.now(timezone.utc):%Y-%m-%d} on {platform.node() or 'this machine'} "
            f"({os.cpu_count()} CPUs), `{command}`:\n\n" + "\n".join(lines) + "\n")
    print(page)
    if args.out:
        Path(args.out).write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())

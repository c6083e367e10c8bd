"""Imports flow one way: no cycle between gdslab's modules (a function-level import is still an edge),
and every module imports in a fresh interpreter.

The top-level package is left out of the graph: `gdslab/__init__.py` is the public facade
that re-exports from everything below it. Importing `gdslab.datapaths.base` runs the
`gdslab.datapaths` package first, so that is an edge too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gdslab"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def edges(name: str, path: Path, known: set[str]) -> set[str]:
    """The gdslab modules `name` imports, anywhere in its code, with the packages they live in."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        ancestors = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            while target and target != "gdslab":  # the module and every package above it, up to the facade
                if target != name and target not in ancestors:  # a module's own package is running already
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: edges(name, path, known) for name, path in found.items() if name != "gdslab"}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    out, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                out.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    return out


def test_the_import_graph_has_no_cycle():
    g = graph()
    assert "gdslab.loader" in g and "gdslab.datapaths" in g["gdslab.loader"]
    assert not cycles(g), "import cycles: " + "; ".join(" → ".join(c) for c in cycles(g))


def test_nothing_below_the_loader_imports_the_loader():
    g = graph()
    below = ["gdslab.datapaths", "gdslab.checkpoint", "gdslab.cache", "gdslab.probe", "gdslab.profile",
             "gdslab.plan", "gdslab.filesystem", "gdslab.gpus", "gdslab.kvikio_info", "gdslab.pcie", "gdslab.verify"]
    for name in [n for n in g if any(n == b or n.startswith(b + ".") for b in below)]:
        assert "gdslab.loader" not in g[name], name


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = sorted(modules())
    procs = {}
    failures = []
    while names or procs:
        while names and len(procs) < 4:
            name = names.pop()
            procs[name] = subprocess.Popen([sys.executable, "-c", f"import {name}"], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
        name, proc = next(iter(procs.items()))
        _, err = proc.communicate(timeout=120)
        if proc.returncode:
            failures.append(f"{name}: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
        del procs[name]
    assert not failures, failures

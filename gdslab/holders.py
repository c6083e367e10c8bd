"""Who keeps a file in memory: the processes that map it or hold it open, named so a person can act.

Eviction (`posix_fadvise(DONTNEED)`) drops only the pages of a file that no process has mapped,
so one forgotten memory map — `safetensors.torch.load_file`'s tensors in another notebook's
kernel, say — makes every later "cold" run on that file impossible. This module reads
`/proc/*/maps` and `/proc/*/fd` for the files and names each holder: "this kernel" for our
own process, "the kernel of 01_checkpoints.ipynb" for a Jupyter kernel (its notebook from the
`JPY_SESSION_NAME` the Jupyter server gives each kernel, else from the server's sessions for
the kernel's connection file), otherwise its pid and command line; and says what to do.
Linux only; elsewhere, or where /proc of other users' processes cannot be read, it says so.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["Holder", "holders", "explain", "held_elsewhere"]

_PROC = Path("/proc")
_CMDLINE_CHARS = 100
_SERVER_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Holder:
    """One process that maps some of the files (pages it keeps resident) or only holds them open."""

    pid: int
    name: str                 # "this kernel", "the kernel of 01_checkpoints.ipynb", "pid 12 (python x.py)"
    notebook: str | None      # the notebook a Jupyter kernel belongs to, when known
    is_self: bool
    mapped: tuple[str, ...]   # file names it has memory-mapped
    opened: tuple[str, ...]   # file names it holds open without mapping them

    def describe(self) -> str:
        """"the kernel of 01_checkpoints.ipynb (pid 42) maps model-00001-of-00004.safetensors"."""
        parts = []
        if self.mapped:
            parts.append(f"maps {', '.join(self.mapped)}")
        if self.opened:
            parts.append(f"has {', '.join(self.opened)} open")
        who = self.name if self.name.startswith("pid ") else f"{self.name} (pid {self.pid})"
        return f"{who} {' and '.join(parts)}"

    def advice(self) -> str:
        """What to do so that this holder lets the pages go."""
        if self.is_self:
            return ("release them in this kernel: delete what views the file (tensors from "
                    "safetensors load_file/safe_open, numpy memmaps), then gc.collect(); or Kernel → Restart Kernel")
        if self.notebook:
            return f"shut down the kernel of {self.notebook}: Kernel → Shut Down Kernel in that notebook"
        if self.name.startswith("a Jupyter kernel"):
            return "shut that kernel down (JupyterLab: the Running Terminals and Kernels panel)"
        return f"stop pid {self.pid} or let it finish"


def _resolved(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Absolute real path → the name a person knows it by."""
    return {os.path.realpath(p): Path(p).name for p in paths}


def _inodes(paths: dict[str, str]) -> dict[tuple[int, int, int], str]:
    out = {}
    for path, name in paths.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = name
    return out


def _mapped(pid: str, paths: dict[str, str], inodes: dict[tuple[int, int, int], str]) -> set[str]:
    found = set()
    with open(_PROC / pid / "maps", errors="replace") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) < 6:
                continue  # anonymous memory
            target = fields[5].rstrip("\n").removesuffix(" (deleted)")
            if target in paths:
                found.add(paths[target])
                continue
            try:
                major, minor = (int(x, 16) for x in fields[3].split(":"))
                key = (major, minor, int(fields[4]))
            except ValueError:
                continue
            if key in inodes:
                found.add(inodes[key])
    return found


def _opened(pid: str, paths: dict[str, str]) -> set[str]:
    found = set()
    fd_dir = _PROC / pid / "fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue  # closed meanwhile
        if target in paths:
            found.add(paths[target])
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _connection_file(argv: list[str]) -> str | None:
    """The `-f .../kernel-<id>.json` of an ipykernel command line."""
    if not any("ipykernel" in a for a in argv):
        return None
    for i, arg in enumerate(argv):
        if arg == "-f" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--f="):
            return arg[4:]
    return None


def _notebook_from_server(connection_file: str) -> str | None:
    """Ask the Jupyter server that owns the kernel (its jpserver-*.json sits beside the connection file)."""
    kernel_id = Path(connection_file).stem.removeprefix("kernel-")
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for info_file in Path(connection_file).parent.glob("jpserver-*.json"):
        try:
            info = json.loads(info_file.read_text())
            request = urllib.request.Request(info["url"].rstrip("/") + "/api/sessions",
                                             headers={"Authorization": f"token {info.get('token', '')}"})
            with direct.open(request, timeout=_SERVER_TIMEOUT_S) as reply:
                sessions = json.load(reply)
        except Exception:  # a server gone, a password-only server: the command line will do
            continue
        for session in sessions:
            if (session.get("kernel") or {}).get("id") == kernel_id:
                return session.get("path") or (session.get("notebook") or {}).get("path")
    return None


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _name(pid: int) -> tuple[str, str | None]:
    """(how to call the process, its notebook when it is a Jupyter kernel)."""
    if pid == os.getpid():
        return ("this kernel" if _in_kernel() else "this process"), None
    argv = _cmdline(pid)
    session = _environ(pid).get("JPY_SESSION_NAME")
    connection = _connection_file(argv)
    notebook = Path(session).name if session else None
    if notebook is None and connection:
        found = _notebook_from_server(connection)
        notebook = Path(found).name if found else None
    if notebook:
        return f"the kernel of {notebook}", notebook
    if connection:
        return f"a Jupyter kernel ({Path(connection).stem})", None
    command = " ".join(argv) or "?"
    if len(command) > _CMDLINE_CHARS:
        command = command[:_CMDLINE_CHARS - 1] + "…"
    return f"pid {pid} ({command})", None


def holders(paths: Iterable[str | os.PathLike]) -> tuple[list[Holder], int]:
    """(the processes that map or hold open any of `paths`, how many processes could not be read).

    Our own process first, then by pid. A process that ends while being read is left out.
    """
    wanted = _resolved(paths)
    inodes = _inodes(wanted)
    found: list[Holder] = []
    unreadable = 0
    if not _PROC.is_dir():
        return found, 0
    me = os.getpid()
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        try:
            mapped = _mapped(entry, wanted, inodes)
            opened = _opened(entry, wanted) - mapped
        except PermissionError:
            unreadable += 1
            continue
        except (FileNotFoundError, ProcessLookupError):
            continue
        except OSError:
            unreadable += 1
            continue
        if not (mapped or opened):
            continue
        pid = int(entry)
        name, notebook = _name(pid)
        found.append(Holder(pid, name, notebook, pid == me, tuple(sorted(mapped)), tuple(sorted(opened))))
    found.sort(key=lambda h: (not h.is_self, h.pid))
    return found, unreadable


def explain(paths: Iterable[str | os.PathLike], skip_opened: bool = True) -> str:
    """One paragraph: who keeps `paths` in memory and what to do; says so when nobody visible does.

    Processes that only hold a file open (no mapping) do not keep its clean pages, so they are
    left out unless `skip_opened` is False.
    """
    found, unreadable = holders(paths)
    shown = [h for h in found if h.mapped or not skip_opened]
    if not shown:
        hidden = (f"; {unreadable} process(es) could not be inspected (another user's, or protected)"
                  if unreadable else "")
        return ("no process maps these files" + hidden +
                " (pages not yet written back, or the file system keeps them?)")
    todo = list(dict.fromkeys(h.advice() for h in shown))
    return "; ".join(h.describe() for h in shown) + ". To make cold runs possible: " + "; ".join(todo) + "."


def held_elsewhere(paths: Iterable[str | os.PathLike]) -> str:
    """"" when no *other* process maps `paths`; else `explain(paths)`, for a notebook to print.

    A notebook cannot release another kernel's mappings, so where one blocks a cold run the
    notebook says who and what to do instead of failing; its own mappings are its bug.
    """
    paths = list(paths)
    found, _ = holders(paths)
    return explain(paths) if any(h.mapped and not h.is_self for h in found) else ""

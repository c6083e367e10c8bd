"""Where the machine's /proc and /sys are read from: "/" on a live machine, a recorded tree in tests.

The probe decides from files (is this Lustre on an RDMA network? is this NVMe drive local
or an EBS volume? which PCIe root complex holds the GPU?). Every collector reads them
through a `SysRoot`, so the same decisions are tested here on small recorded trees of
other machines (tests/fixtures/), and nothing on this machine has to pretend.

Commands (`lnetctl net show`) run only on the live root; a recorded tree keeps their
output under ``cmd/<name>.txt`` (spaces in the command become underscores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SysRoot:
    """A root directory holding proc/ and sys/ (and, when recorded, cmd/)."""

    root: Path = Path("/")

    @property
    def live(self) -> bool:
        return self.root == Path("/")

    def path(self, name: str) -> Path:
        return self.root / name.lstrip("/")

    def read(self, name: str) -> str | None:
        """The text of a file, or None where it is missing or unreadable."""
        try:
            return self.path(name).read_text(errors="replace")
        except OSError:
            return None

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.path(name))

    def listdir(self, name: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(name)))
        except OSError:
            return []

    def realpath(self, name: str) -> str | None:
        """`name` with every symlink resolved, as an absolute path inside this root; None if absent."""
        path = self.path(name)
        if not os.path.lexists(path):
            return None
        real = Path(os.path.realpath(path))
        root = Path(os.path.realpath(self.root))
        try:
            return "/" + str(real.relative_to(root))
        except ValueError:  # a link leading out of a recorded tree
            return None

    def run(self, command: str, timeout: float = 5.0) -> str | None:
        """A command's standard output (live), or its recorded output; None where it cannot be had."""
        if not self.live:
            return self.read(f"cmd/{command.replace(' ', '_')}.txt")
        argv = command.split()
        if shutil.which(argv[0]) is None:
            return None
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None


HOST = SysRoot()

__all__ = ["SysRoot", "HOST"]

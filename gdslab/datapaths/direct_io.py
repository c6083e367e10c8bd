"""O_DIRECT reads: the page cache bypassed, as GDS bypasses it — the host's closest analogue of a direct read.

O_DIRECT moves whole, aligned blocks between the drive and the caller's memory: the file
offset, the length and the buffer's address must all be multiples of the block size (4 KiB
is always enough). safetensors does not align its tensors, so a read is split: the aligned
middle goes straight into the destination (whose memory is allocated so that its address
and the file offset agree modulo 4 KiB: `aligned_host`), and the unaligned head and tail
go through a small aligned bounce buffer per thread. A bounce path instead reads the
aligned superset of its chunk into its (aligned) staging buffer and copies out the middle.

Some file systems refuse O_DIRECT (tmpfs at open, some FUSE or network mounts at the first
read, both with EINVAL): the load then reads through the page cache and says so. The bytes
each way carried are counted, so a record says whether O_DIRECT really ran.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import LoadError
from ..hostmem import Ledger
from .base import BLOCK, OpenFiles, aligned_host, pread_into, round_down, round_up


def _pread(fd: int, view: memoryview, offset: int) -> int:
    """Bytes read into `view` from `offset` until it is full or the file ends (raw OSError kept)."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


class DirectFiles:
    """O_DIRECT descriptors for a load's files beside buffered ones; buffered reads where O_DIRECT is refused.

    `refused` says why O_DIRECT did not run (None while it does); `direct_bytes` and
    `buffered_bytes` count what each way carried. The bounce blocks (one per reading thread)
    are counted in `ledger` until `close`.
    """

    def __init__(self, files: Iterable[Path], want: bool, ledger: Ledger | None = None):
        files = list(files)
        self.ledger = ledger
        self.bounce_bytes = 0
        self.buffered = OpenFiles(files)
        self.direct: dict[Path, int] = {}
        self.refused: str | None = None if want else "not asked for"
        self.direct_bytes = self.buffered_bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        if not want:
            return
        flag = getattr(os, "O_DIRECT", None)
        if flag is None:
            self.refused = "this OS has no O_DIRECT"
            return
        try:
            for path in files:
                try:
                    self.direct[path] = os.open(path, os.O_RDONLY | flag | getattr(os, "O_CLOEXEC", 0))
                except OSError as e:
                    if e.errno == errno.EINVAL:
                        self.refused = f"O_DIRECT refused when opening {path.name} (EINVAL): buffered reads"
                        self._close_direct()
                        return
                    raise LoadError(path, f"cannot open: {e.strerror or e}") from None
        except BaseException:
            self.close()
            raise

    @property
    def active(self) -> bool:
        return self.refused is None and bool(self.direct)

    def _count(self, direct: int, buffered: int) -> None:
        with self._lock:
            self.direct_bytes += direct
            self.buffered_bytes += buffered

    def _refuse(self, path: Path) -> None:
        with self._lock:
            if self.refused is None:
                self.refused = f"O_DIRECT refused at the first read of {path.name} (EINVAL): buffered reads"

    def _bounce(self) -> np.ndarray:
        bounce = getattr(self._local, "bounce", None)
        if bounce is None:
            bounce = self._local.bounce = aligned_host(BLOCK).numpy()
            with self._lock:
                self.bounce_bytes += 2 * BLOCK  # aligned_host allocates a block more, to align
            if self.ledger is not None:
                self.ledger.take(2 * BLOCK)
        return bounce

    def _buffered(self, dest: np.ndarray, offset: int, path: Path) -> None:
        pread_into(self.buffered.fds[path], dest, offset, path)
        self._count(0, len(dest))

    def read(self, dest: np.ndarray, offset: int, path: Path) -> None:
        """Fill `dest` (uint8) from `offset`: aligned blocks straight in by O_DIRECT, head and tail bounced."""
        n = len(dest)
        if not self.active or (dest.ctypes.data - offset) % BLOCK or n == 0:
            return self._buffered(dest, offset, path)
        fd, end = self.direct[path], offset + n
        first, last = round_up(offset), round_down(end)
        edges = [(offset, end)] if last < first else [(lo, hi) for lo, hi in ((offset, first), (last, end)) if lo < hi]
        try:
            if last > first:
                view = memoryview(dest)[first - offset:last - offset]
                if _pread(fd, view, first) != len(view):
                    raise LoadError(path, f"truncated: needed {n} bytes at byte {offset}, the file ended early")
            bounce = self._bounce()
            for lo, hi in edges:
                block = round_down(lo)
                if _pread(fd, memoryview(bounce), block) < hi - block:
                    raise LoadError(path, f"truncated: needed {n} bytes at byte {offset}, the file ended early")
                dest[lo - offset:hi - offset] = bounce[lo - block:hi - block]
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise LoadError(path, f"read failed at byte {offset}: {e.strerror or e}") from None
            self._refuse(path)
            return self._buffered(dest, offset, path)
        self._count(n, 0)

    def read_superset(self, staging: np.ndarray, offset: int, n: int, path: Path) -> int:
        """Read at least [offset, offset + n) into aligned `staging`; return where those bytes start in it.

        With O_DIRECT, the whole aligned blocks around the range are read (`staging` must
        hold n + 8 KiB); buffered, the range itself at 0.
        """
        if self.active and staging.ctypes.data % BLOCK == 0:
            block = round_down(offset)
            span = round_up(offset + n) - block
            try:
                if _pread(self.direct[path], memoryview(staging)[:span], block) < offset + n - block:
                    raise LoadError(path, f"truncated: needed {n} bytes at byte {offset}, the file ended early")
                self._count(n, 0)
                return offset - block
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise LoadError(path, f"read failed at byte {offset}: {e.strerror or e}") from None
                self._refuse(path)
        self._buffered(staging[:n], offset, path)
        return 0

    def describe(self) -> str:
        """What ran, for `effective`: O_DIRECT (and how much), or why not."""
        total = self.direct_bytes + self.buffered_bytes
        if not self.direct_bytes:
            return "buffered reads" + (f"; {self.refused}" if self.refused and self.refused != "not asked for" else "")
        share = self.direct_bytes / total if total else 1.0
        return f"O_DIRECT {share:.0%} of bytes" + (f" ({self.refused})" if self.refused else "")

    def record(self) -> dict:
        total = self.direct_bytes + self.buffered_bytes
        return {"direct_bytes": self.direct_bytes, "direct_share": self.direct_bytes / total if total else 0.0,
                "direct_note": self.refused or ""}

    def _close_direct(self) -> None:
        for fd in self.direct.values():
            os.close(fd)
        self.direct.clear()

    def close(self) -> None:
        self._close_direct()
        self.buffered.close()
        self._local = threading.local()  # the bounce blocks go with it
        if self.ledger is not None and self.bounce_bytes:
            self.ledger.give(self.bounce_bytes)
        self.bounce_bytes = 0

    def __enter__(self) -> "DirectFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["BLOCK", "DirectFiles", "aligned_host", "round_down", "round_up"]

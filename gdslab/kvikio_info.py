"""KvikIO and the cuFile driver behind it: installed, which mode it resolves to, whether it can read.

KvikIO is usable for loading only with a CUDA GPU, the driver's `libcuda.so.1` and a real
read that succeeds (tried once, 4 KiB into host memory). Nothing here raises: a missing
or failing part becomes the reason. libcufile prints some of its complaints on stdout,
so they are captured and kept as `driver_messages`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

from .gpus import cuda_info


@dataclass(frozen=True)
class KvikioInfo:
    """KvikIO and the cuFile driver behind it, as they resolve on this machine."""

    installed: bool
    version: str | None
    import_error: str | None
    compat_mode_setting: str | None      # kvikio.defaults.get("compat_mode"): ON / OFF / AUTO
    compat_mode_preferred: bool | None   # the resolved mode: True = POSIX compatibility mode
    resolved_mode: str
    libcufile_version: str | None
    driver_properties: dict[str, Any] = field(default_factory=dict)  # kvikio.cufile_driver.get(...)
    driver_messages: str = ""           # what libcufile printed while being asked
    settings: dict[str, Any] = field(default_factory=dict)           # num_threads, task_size...
    read_check: str = "not tried"        # a 4 KiB host read through kvikio.CuFile: "ok" or the error
    usable: bool = False
    reason: str = ""


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)  # C stdio buffers too, so nothing crosses the redirection


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Collect what C libraries print on fds 1 and 2 (libcufile prints its dlopen errors on stdout)."""
    out: list[str] = []
    try:
        _flush_all()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError):
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            _flush_all()
            for fd, target in zip(saved, (1, 2)):
                os.dup2(fd, target)
                os.close(fd)
            tmp.seek(0)
            out.append(" ".join(tmp.read().decode(errors="replace").split()))


_DRIVER_PROPERTIES = ("is_gds_available", "major_version", "minor_version", "allow_compat_mode",
                      "per_buffer_cache_size", "poll_mode", "poll_thresh_size",
                      "max_device_cache_size", "max_pinned_memory_size")
_SETTINGS = ("num_threads", "task_size", "gds_threshold", "bounce_buffer_size")


def _kvikio_read_check(kvikio: Any) -> str:
    """Read 4 KiB into host memory through kvikio.CuFile: the smallest real use of KvikIO."""
    try:
        import numpy as np

        with tempfile.NamedTemporaryFile(prefix="gdslab-kvikio-check-") as tmp:
            data = os.urandom(4096)
            tmp.write(data)
            tmp.flush()
            buf = np.zeros(4096, dtype=np.uint8)
            f = kvikio.CuFile(tmp.name, "r")
            try:
                n = f.read(buf)
            finally:
                f.close()
            if n != 4096 or buf.tobytes() != data:
                return f"failed: read {n} bytes, content {'matches' if buf.tobytes() == data else 'differs'}"
            return "ok"
    except Exception as e:
        return f"failed: {type(e).__name__}: {e}"


@functools.lru_cache(maxsize=1)
def kvikio_info() -> KvikioInfo:
    """KvikIO, the cuFile driver behind it and one real read; computed once per process."""
    cuda = cuda_info()
    try:
        import kvikio  # type: ignore[import-not-found]
        import kvikio.cufile_driver
        import kvikio.defaults
    except Exception as e:
        return KvikioInfo(installed=False, version=None, import_error=f"{type(e).__name__}: {e}",
                          compat_mode_setting=None, compat_mode_preferred=None, resolved_mode="n/a",
                          libcufile_version=None, usable=False,
                          reason=f"KvikIO is not importable ({type(e).__name__}: {e}); "
                                 "install the gds-cu12 or gds-cu13 extra")
    version = getattr(kvikio, "__version__", None)
    problems: list[str] = []

    def ask(fn, what: str):
        try:
            return fn()
        except Exception as e:
            problems.append(f"{what}: {type(e).__name__}: {e}")
            return None

    with _captured_output() as said:
        setting = ask(lambda: kvikio.defaults.get("compat_mode"), "compat_mode")
        preferred = ask(kvikio.defaults.is_compat_mode_preferred, "is_compat_mode_preferred")
        cufile_version = ask(kvikio.cufile_driver.libcufile_version, "libcufile_version")
        props = {}
        for name in _DRIVER_PROPERTIES:
            value = ask(lambda: kvikio.cufile_driver.get(name), f"cufile_driver.get({name!r})")
            if value is not None:
                props[name] = value
        settings = {}
        for name in _SETTINGS:
            value = ask(lambda: kvikio.defaults.get(name), f"defaults.get({name!r})")
            if value is not None:
                settings[name] = value
    messages = " ".join(m for m in said if m)
    if problems:
        messages = "; ".join([*problems, messages] if messages else problems)

    if preferred is None:
        resolved = "unknown (is_compat_mode_preferred() failed)"
    elif preferred:
        # KvikIO's own switch (its compat_mode setting), not cuFile's allow_compat_mode: cuFile is not called.
        resolved = ("KvikIO's own compatibility mode: POSIX reads into host bounce buffers, then copies; "
                    "cuFile is not called, so its allow_compat_mode does not apply (no GDS)")
    else:
        gds = props.get("is_gds_available")
        resolved = f"cuFile (not compatibility mode; is_gds_available={gds}: GDS only if the file system allows it)"

    # Try it for real: without libcuda.so.1 the read raises, and that error is the reason.
    read_check = _kvikio_read_check(kvikio)
    if not cuda.libcuda_loadable:
        reason = (f"KvikIO {version} imports, but every read fails for want of libcuda.so.1 "
                  f"(no NVIDIA driver here; a 4 KiB read {'failed that way' if 'libcuda.so.1' in read_check else read_check})")
        usable = False
    elif read_check != "ok":
        reason, usable = f"a 4 KiB read through KvikIO {read_check}", False
    elif not cuda.gpu_available:
        reason, usable = f"KvikIO reads into host memory, but there is no CUDA GPU to load into ({cuda.gpu_reason})", False
    else:
        reason, usable = f"KvikIO {version} reads; mode: {resolved}", True
    cv = f"{cufile_version[0]}.{cufile_version[1]}" if isinstance(cufile_version, tuple) and len(cufile_version) == 2 \
        else (str(cufile_version) if cufile_version is not None else None)
    return KvikioInfo(
        installed=True, version=version, import_error=None,
        compat_mode_setting=getattr(setting, "name", None if setting is None else str(setting)),
        compat_mode_preferred=preferred, resolved_mode=resolved, libcufile_version=cv,
        driver_properties=props, driver_messages=messages, settings=settings,
        read_check=read_check, usable=usable, reason=reason,
    )


def kvikio_status() -> tuple[bool, str]:
    """(whether KvikIO can load into a CUDA GPU here, why or why not): GPU + KvikIO + libcuda + a real read."""
    info = kvikio_info()
    return info.usable, info.reason


def forget() -> None:
    """Drop the cached answer (tests change the environment under it)."""
    kvikio_info.cache_clear()


__all__ = ["KvikioInfo", "kvikio_info", "kvikio_status", "forget"]

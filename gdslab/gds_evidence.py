"""Whether a gds run really moved bytes by DMA: evidence from below cuFile, and the label it earns.

KvikIO's per-backend counter "GDS" says the bytes went through a cuFile call, not that
they moved by DMA: with `properties.allow_compat_mode` true in cufile.json (the default
of many installs) cuFile itself serves a read through POSIX and its own bounce buffers
whenever nvidia-fs or P2PDMA cannot be used for the file. So a run earns one of three
labels, each from what was seen:

- "GDS (DMA proven)": something below cuFile says DMA happened — the nvidia-fs read
  counters (`/proc/driver/nvidia-fs/stats`, readMiB) grew by about the bytes KvikIO sent
  through cuFile; or cuFile's own statistics count the reads as GDS; or the run was
  strict (cuFile's compatibility mode off through the cufile.json named by
  `CUFILE_ENV_PATH_JSON`, confirmed by `allow_compat_mode` read back from the driver,
  KvikIO's compat mode OFF) and every read succeeded — cuFile then had no POSIX fallback.
- "cuFile (DMA not proven)": only KvikIO's counter moved.
- "POSIX (KvikIO fallback: <reason>)": KvikIO itself read through POSIX (compat mode ON,
  `is_compat_mode_preferred()`, reads under `gds_threshold`).

The stats format is nvidia-fs's `nvfs_stats_show` (gds-nvidia-fs, src/nvfs-stat.c): the
byte counter is printed in whole MiB (`BYTES_TO_MB`: bytes >> 20) and only while the
module's `rw_stats_enabled` parameter is 1; it counts every process's reads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .sysroot import HOST, SysRoot

DMA_PROVEN = "GDS (DMA proven)"
CUFILE_NOT_PROVEN = "cuFile (DMA not proven)"
POSIX_FALLBACK = "POSIX (KvikIO fallback: {reason})"
NOTHING_READ = "nothing read"
LABELS = (DMA_PROVEN, CUFILE_NOT_PROVEN)

KVIKIO_GDS_PERCENT = 95  # KvikIO's GDS backend carried at least this % of the bytes, else the POSIX label
DMA_PERCENT = 95         # below-cuFile counters must account for at least this % of the cuFile bytes
KVIKIO_GDS_SHARE, DMA_SHARE = KVIKIO_GDS_PERCENT / 100, DMA_PERCENT / 100  # the same, as fractions
MIB = 1 << 20

NVFS_STATS = "/proc/driver/nvidia-fs/stats"
NVFS_RW_STATS_PARAM = "/sys/module/nvidia_fs/parameters/rw_stats_enabled"
CUFILE_ENV = "CUFILE_ENV_PATH_JSON"


def posix_label(reason: str) -> str:
    return POSIX_FALLBACK.format(reason=reason)


# --- nvidia-fs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NvfsStats:
    """The read counters of one `/proc/driver/nvidia-fs/stats` reading."""

    io_stats_enabled: bool
    reads: int = 0          # n: reads submitted
    reads_ok: int = 0
    read_errors: int = 0
    read_mib: int = 0       # readMiB: bytes read by DMA, in whole MiB
    source: str = NVFS_STATS


def _pairs(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"([A-Za-z_\-]+)=(\d+)", text)}


def parse_nvfs_stats(text: str, source: str = NVFS_STATS) -> NvfsStats:
    """The read counters from the text nvidia-fs prints; ValueError naming `source` when it is not that."""
    if "NVFS statistics" not in text:
        raise ValueError(f"{source}: not nvidia-fs statistics (no 'NVFS statistics' line)")
    enabled = re.search(r"^IO stats:\s*(\w+)", text, re.M)
    if enabled is None:
        raise ValueError(f"{source}: no 'IO stats:' line")
    reads: dict[str, int] = {}
    for line in re.findall(r"^Reads\s*:(.*)$", text, re.M):
        reads.update(_pairs(line))
    on = enabled.group(1) == "Enabled"
    if on and not {"n", "ok", "err", "readMiB"} <= set(reads):
        raise ValueError(f"{source}: IO stats are enabled but the 'Reads' line lacks n, ok, err or readMiB")
    return NvfsStats(on, reads.get("n", 0), reads.get("ok", 0), reads.get("err", 0), reads.get("readMiB", 0), source)


def read_nvfs_stats(sysroot: SysRoot = HOST) -> NvfsStats | None:
    """The live (or recorded) counters; None where nvidia-fs is not loaded."""
    text = sysroot.read(NVFS_STATS)
    return None if text is None else parse_nvfs_stats(text, str(sysroot.path(NVFS_STATS)))


def nvfs_dma_proves(before: NvfsStats | None, after: NvfsStats | None, cufile_bytes: int) -> tuple[bool, str]:
    """(whether nvidia-fs's readMiB grew by about `cufile_bytes`, why). The counter is whole MiB, so
    it must grow by at least floor(95% of cufile_bytes, in whole MiB), and by at least 1 (integer
    arithmetic: no rounding moves the boundary)."""
    if before is None or after is None:
        return False, "nvidia-fs stats not read (module not loaded)"
    if not (before.io_stats_enabled and after.io_stats_enabled):
        return False, (f"nvidia-fs IO stats disabled (as root: echo 1 > {NVFS_RW_STATS_PARAM}), "
                       "so its read counters do not move")
    grew = after.read_mib - before.read_mib
    need = max(1, cufile_bytes * DMA_PERCENT // 100 // MIB)
    errors = after.read_errors - before.read_errors
    said = f"nvidia-fs readMiB grew by {grew} MiB for {cufile_bytes / MIB:.1f} MiB through cuFile (needs ≥ {need})"
    if errors:
        said += f", {errors} read errors"
    return grew >= need, said


# --- cuFile's own statistics --------------------------------------------------------------------


@dataclass(frozen=True)
class CuFileStats:
    """cuFile's own count of one run's reads (from `gds_stats -p PID -l 3` or the cuFile stats API,
    with `profile.cufile_stats` ≥ 1 in cufile.json): bytes by GDS and by its compat (POSIX) path."""

    gds_read_bytes: int
    compat_read_bytes: int
    source: str = "cuFile stats"


def cufile_stats_prove(stats: CuFileStats | None, cufile_bytes: int) -> tuple[bool, str]:
    if stats is None:
        return False, "cuFile stats not given"
    need = -(-cufile_bytes * DMA_PERCENT // 100)  # at least 95%, rounded up to a whole byte
    said = (f"{stats.source}: {stats.gds_read_bytes} B by GDS, {stats.compat_read_bytes} B by compat "
            f"for {cufile_bytes} B through cuFile")
    return cufile_bytes > 0 and stats.gds_read_bytes >= need, said


# --- cufile.json and strict runs ----------------------------------------------------------------


def _strip_comments(text: str) -> str:
    """cufile.json allows // comments (its shipped file is full of them); drop those outside strings."""
    out, in_string, k = [], False, 0
    while k < len(text):
        c = text[k]
        if in_string:
            out.append(c)
            if c == "\\" and k + 1 < len(text):
                out.append(text[k + 1])
                k += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", k):
            while k < len(text) and text[k] != "\n":
                k += 1
            continue
        else:
            out.append(c)
        k += 1
    return "".join(out)


def read_cufile_json(path: str | os.PathLike) -> dict:
    """A cufile.json as a dict; ValueError naming the file and the reason where it is not one."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        config = json.loads(_strip_comments(text))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    return config


def compat_allowed(config: dict) -> bool:
    """`properties.allow_compat_mode` (cuFile's default, when absent, is to allow it)."""
    value = config.get("properties", {}).get("allow_compat_mode", True)
    return value is not False and str(value).lower() != "false"


def default_cufile_json() -> Path | None:
    """The cufile.json cuFile would read: $CUFILE_ENV_PATH_JSON, else /etc/cufile.json (None if neither)."""
    for name in (os.environ.get(CUFILE_ENV), "/etc/cufile.json"):
        if name and Path(name).is_file():
            return Path(name)
    return None


def write_strict_cufile_json(folder: str | os.PathLike, base: dict | None = None, stats_level: int = 3) -> Path:
    """A cufile.json in `folder`: `base` (or an empty config) with compat mode off, cuFile stats on and
    cufile.log written into `folder`. Point `CUFILE_ENV_PATH_JSON` at it before cuFile opens."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(base or {}))
    config.setdefault("properties", {})["allow_compat_mode"] = False
    config.setdefault("profile", {})["cufile_stats"] = stats_level
    logging = config.setdefault("logging", {})
    logging["dir"] = str(folder)
    logging.setdefault("level", "ERROR")
    path = folder / "cufile.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def strict_environment(cufile_json: str | os.PathLike) -> dict[str, str]:
    """The environment of a strict run: cuFile reads this config, KvikIO never falls back itself."""
    return {CUFILE_ENV: str(cufile_json), "KVIKIO_COMPAT_MODE": "OFF"}


@dataclass(frozen=True)
class StrictRun:
    """What makes a run strict: compat off in the config cuFile read and in the driver, KvikIO compat OFF."""

    config_allows_compat: bool        # compat_allowed(read_cufile_json($CUFILE_ENV_PATH_JSON))
    driver_allows_compat: bool | None  # kvikio.cufile_driver.get("allow_compat_mode")
    kvikio_compat_setting: str | None  # kvikio.defaults.get("compat_mode").name: ON / OFF / AUTO
    all_reads_ok: bool

    @property
    def strict(self) -> bool:
        return (not self.config_allows_compat and self.driver_allows_compat is False
                and self.kvikio_compat_setting == "OFF")

    def proves(self) -> tuple[bool, str]:
        if not self.strict:
            parts = []
            if self.config_allows_compat:
                parts.append("cufile.json allows compat mode")
            if self.driver_allows_compat is not False:
                parts.append(f"the driver reports allow_compat_mode={self.driver_allows_compat}")
            if self.kvikio_compat_setting != "OFF":
                parts.append(f"KvikIO compat_mode={self.kvikio_compat_setting}")
            return False, "not strict (" + ", ".join(parts) + ")"
        if not self.all_reads_ok:
            return False, "strict run, but a read failed"
        return True, "strict run (cuFile compat mode off, KvikIO compat OFF) and every read succeeded"


# --- the decision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """A gds run's label and everything it was decided from."""

    label: str
    reasons: tuple[str, ...] = ()
    proven_by: str = ""   # "nvidia-fs", "cuFile stats", "strict run" or ""
    details: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"gds_label": self.label, "gds_proven_by": self.proven_by, "gds_evidence": "; ".join(self.reasons),
                **self.details}


def decide(bytes_by_backend: dict[str, int], *, small_bytes: int = 0, gds_threshold: int = 0,
           compat_setting: str | None = None, compat_preferred: bool | None = None,
           nvfs_before: NvfsStats | None = None, nvfs_after: NvfsStats | None = None,
           cufile_stats: CuFileStats | None = None, strict: StrictRun | None = None) -> Evidence:
    """The label a run earns from KvikIO's byte split and whatever below-cuFile evidence was gathered."""
    gds = bytes_by_backend.get("GDS", 0)
    total = sum(bytes_by_backend.values())
    if not total:
        return Evidence(NOTHING_READ, ("no bytes counted by KvikIO",))
    if gds * 100 < KVIKIO_GDS_PERCENT * total:
        return Evidence(posix_label(_posix_reason(bytes_by_backend, small_bytes, gds_threshold, compat_setting,
                                                  compat_preferred)), (f"KvikIO's GDS backend carried "
                                                                       f"{gds / total:.1%} of the bytes",))
    reasons = []
    for source, (ok, said) in (("nvidia-fs", nvfs_dma_proves(nvfs_before, nvfs_after, gds)),
                               ("cuFile stats", cufile_stats_prove(cufile_stats, gds)),
                               ("strict run", strict.proves() if strict else (False, "not a strict run"))):
        reasons.append(said)
        if ok:
            return Evidence(DMA_PROVEN, (said,), source)
    return Evidence(CUFILE_NOT_PROVEN, tuple(reasons))


def _posix_reason(carried: dict[str, int], small_bytes: int, threshold: int, compat_setting: str | None,
                  compat_preferred: bool | None) -> str:
    posix = sum(n for name, n in carried.items() if name != "GDS")
    if compat_setting == "ON":
        return "compat mode ON"
    if compat_preferred:
        return "is_compat_mode_preferred() is True"
    if posix and posix <= small_bytes:
        return f"reads under gds_threshold ({threshold} B)"
    if small_bytes:
        return f"reads under gds_threshold ({threshold} B) and {posix - small_bytes} B more sent through POSIX"
    return "KvikIO sent the reads through POSIX"


# --- a strict run's failure, explained ----------------------------------------------------------

# cuFile's status codes (cufile.h: CUFILEOP_BASE_ERR 5000 + n) that a strict run meets, and what they usually mean.
CUFILE_ERRORS = {
    "CU_FILE_DRIVER_NOT_INITIALIZED": (5001, "nvidia-fs is missing: the GDS kernel module is not loaded "
                                             "(lsmod | grep nvidia_fs; /proc/driver/nvidia-fs absent)"),
    "CU_FILE_DRIVER_VERSION_MISMATCH": (5004, "nvidia-fs and libcufile come from different GDS releases"),
    "CU_FILE_PLATFORM_NOT_SUPPORTED": (5007, "the platform cannot DMA to the GPU: often the IOMMU translates "
                                             "(boot with iommu=off or iommu=pt) or the GPU sits behind no usable PCIe path"),
    "CU_FILE_IO_NOT_SUPPORTED": (5008, "the file system is not supported for GDS (ext4 needs data=ordered on NVMe, "
                                       "Lustre needs the GDS-enabled client; tmpfs, overlay and NFS without RDMA are not)"),
    "CU_FILE_DEVICE_NOT_SUPPORTED": (5009, "this GPU cannot do GDS (no BAR1 peer access)"),
    "CU_FILE_NVFS_DRIVER_ERROR": (5010, "an nvidia-fs ioctl failed: see dmesg and cufile.log"),
    "CU_FILE_CUDA_POINTER_INVALID": (5012, "the destination is not device memory cuFile can map"),
    "CU_FILE_CUDA_POINTER_RANGE_ERROR": (5014, "the read runs past the end of the destination allocation"),
    "CU_FILE_INVALID_MAPPING_SIZE": (5016, "the buffer is larger than cuFile may pin (max_device_pinned_mem_size)"),
    "CU_FILE_INVALID_FILE_TYPE": (5018, "not a regular file on a block or GDS file system"),
    "CU_FILE_DIO_NOT_SET": (5020, "the file could not be opened with O_DIRECT (the file system refuses it)"),
    "CU_FILE_INVALID_VALUE": (5022, "an argument cuFile refused: with compat mode off, often an offset, size or "
                                    "address not aligned as direct I/O needs (4 KiB)"),
}


def explain_cufile_error(message: str, cufile_log: str = "") -> str:
    """What a cuFile failure usually means, and the cufile.log lines (errors first) that explain it."""
    meaning = ""
    for name, (code, why) in CUFILE_ERRORS.items():
        if name in message or re.search(rf"\b{code}\b", message):
            meaning = f"{name}: {why}"
            break
    if not meaning and ("ENOSYS" in message or "not supported" in message.lower()):
        meaning = "the file system or platform does not support GDS here (see cufile.log)"
    lines = [line.strip() for line in cufile_log.splitlines() if line.strip()]
    telling = [line for line in lines if re.search(r"\b(ERROR|WARN)", line)] or lines
    out = f"cuFile said: {message.strip()}"
    if meaning:
        out += f" — usually {meaning}"
    if telling:
        out += "\ncufile.log:\n  " + "\n  ".join(telling[-8:])
    return out


__all__ = [
    "DMA_PROVEN", "CUFILE_NOT_PROVEN", "POSIX_FALLBACK", "NOTHING_READ", "KVIKIO_GDS_PERCENT", "DMA_PERCENT",
    "NvfsStats", "CuFileStats", "StrictRun", "Evidence", "parse_nvfs_stats", "read_nvfs_stats",
    "nvfs_dma_proves", "cufile_stats_prove", "read_cufile_json", "compat_allowed", "default_cufile_json",
    "write_strict_cufile_json", "strict_environment", "posix_label", "decide", "explain_cufile_error",
]

"""Sweeps: many loads over a grid of knobs, each run under the cold/warm protocol, as records.

The grid is datapath × io_size × threads × shard count × cache state (cold/warm), with
repeats, and the paths' own options where asked (`options={"buffers_per_thread": [1, 2, 4]}`:
each path sweeps only the options it has). Shard counts are the same tensors written with each count (`cached_checkpoint`;
content does not depend on the count), so only the layout differs between them.

The protocol, per run: a cold run evicts the checkpoint's pages and checks that at most
`COLD_BELOW` of its bytes stayed resident; a warm run reads the files first and checks
that more than `WARM_ABOVE` are. Where the cache cannot be put in the asked state (tmpfs,
memory pressure) the run is recorded as skipped with the reason, never measured under a
wrong label; an unavailable data path is recorded the same way.

Each run is one flat record (the `LoadResult.record()` plus the knobs, shard count,
repeat, protocol checks, probe summary and timestamps; `policy_choice` marks the cells whose
knobs are what an `auto` load would run with here), appended to `sweep.jsonl` (the
source of truth) and `sweep.csv` as it completes. A sweep started again on the same
folder skips the cells already done (their `key` names every knob), so an interrupted
sweep resumes where it stopped.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .cache import can_evict, evict_all, resident_fraction_all, warm
from .checkpoint import Checkpoint
from .errors import GdslabError
from .holders import explain
from .loader import COLD_BELOW, WARM_ABOVE, load, resolve_device
from .policy import is_auto_choice
from .sizes import format_size, parse_size
from .synthetic import cached_checkpoint

CACHES = ("cold", "warm")
DONE = ("ok", "skipped")  # statuses a resumed sweep does not run again ("failed" and "cache-mismatch" are retried)
JSONL_NAME = "sweep.jsonl"
CSV_NAME = "sweep.csv"

# What a load reports only when its path does (staging, GDS byte split) or when it was measured (costs).
PATH_FIELDS = (
    "buffers_per_thread", "staging_bytes", "pinned_bytes", "staging_alloc_s", "staging_reused",
    "gds_threshold", "register", "gds_bytes", "posix_bytes", "gds_share", "gds_kind", "byte_split",
    "host_overhead_bytes", "host_overhead_note", "host_rss_overhead_bytes", "host_peak_method", "host_rss_note",
    "device_overhead_bytes", "cpu_seconds",
)
# The CSV columns, in order. The JSON lines carry the same keys (and any a newer loader adds).
FIELDS = (
    "key", "status", "reason",
    "datapath", "effective", "device", "cache_asked", "cache", "resident_checked", "resident_before",
    "io_size", "threads", "knobs", "options", "policy_choice", "shards", "repeat",
    "size", "preset", "dtype", "seed", "checkpoint", "source", "files", "tensors",
    "nbytes", "seconds", "gbps",
    *PATH_FIELDS,
    "prepared", "started", "finished",
    "fs_type", "gds_verdict", "probe_kernel", "probe_cpu_count", "probe_ram_total", "probe_torch",
    "probe_gpus", "probe_kvikio",
)


class SweepError(GdslabError):
    """A sweep's grid or results file is unusable; names the file (when there is one) and the reason."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if path is not None else reason)


def knobs_of(datapath: str) -> tuple[str, ...]:
    """The knobs that `datapath` really uses (threads, io_size, its own options); the others need no grid."""
    from . import datapaths

    return tuple(datapaths.get(datapath).knobs)


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: every knob that decides it."""

    datapath: str
    io_size: int
    threads: int
    shards: int
    cache: str
    repeat: int
    options: tuple[tuple[str, object], ...] = ()  # the path's own options this cell sets

    def key(self, checkpoint: str, device: str) -> str:
        extra = "".join(f"|{name}={value}" for name, value in self.options)
        return (f"{checkpoint}|{device}|{self.datapath}|io_size={self.io_size}|threads={self.threads}"
                f"|shards={self.shards}|{self.cache}|repeat={self.repeat}{extra}")


def _tuple(values, convert: Callable) -> tuple:
    if isinstance(values, (str, int)):
        values = (values,)
    return tuple(dict.fromkeys(convert(v) for v in values))


def _positive_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(None, f"threads and shards must be positive integers, got {value!r}")
    return value


def _io_size(value) -> int:
    size = parse_size(value)
    if size < 1:
        raise SweepError(None, f"io_size must be at least 1 byte, got {value!r}")
    return size


@dataclass(frozen=True)
class Grid:
    """What to sweep, and the checkpoint it sweeps over (written once per shard count, cached)."""

    datapaths: tuple[str, ...] = ("host-direct",)
    io_sizes: tuple[int, ...] = (4 << 20, 16 << 20)
    threads: tuple[int, ...] = (1, 4, 8)
    shards: tuple[int, ...] = (1, 4)
    caches: tuple[str, ...] = CACHES
    repeats: int = 3
    size: int = 256 << 20
    preset: str = "llama-3.1-8b"
    dtype: str = "bf16"
    seed: int = 0
    options: Mapping[str, Sequence] = field(default_factory=dict)  # path option -> values to sweep
    checkpoint: str = ""  # a real checkpoint (file or HF folder) instead of the synthetic ones: its own shards

    def __post_init__(self):
        set_ = object.__setattr__  # normalize a frozen dataclass's inputs: "16MiB" -> 16777216, lists -> tuples
        set_(self, "datapaths", _tuple(self.datapaths, str))
        set_(self, "io_sizes", _tuple(self.io_sizes, _io_size))
        set_(self, "threads", _tuple(self.threads, _positive_int))
        set_(self, "shards", _tuple(self.shards, _positive_int))
        set_(self, "caches", _tuple(self.caches, str))
        set_(self, "size", parse_size(self.size))
        if self.checkpoint:  # a real checkpoint comes in one layout: its own file count
            real = Checkpoint.open(self.checkpoint)
            set_(self, "checkpoint", str(Path(self.checkpoint).resolve()))
            set_(self, "shards", (len(real.files),))
            set_(self, "size", real.nbytes)
        set_(self, "options", {name: _tuple(values, lambda v: v) for name, values in dict(self.options).items()})
        from . import datapaths

        for name in self.datapaths:
            datapaths.get(name)  # unknown names fail here, naming the known ones
        offered = {o for name in self.datapaths for o in datapaths.get(name).options}
        unknown = sorted(set(self.options) - offered)
        if unknown:
            raise SweepError(None, f"no path of this grid has the option(s) {', '.join(unknown)} "
                                   f"(theirs: {', '.join(sorted(offered)) or 'none'})")
        bad = [c for c in self.caches if c not in CACHES]
        if bad:
            raise SweepError(None, f"cache states must be of {CACHES}, got {bad}")
        for name, values in (("datapaths", self.datapaths), ("io_sizes", self.io_sizes),
                             ("threads", self.threads), ("shards", self.shards), ("caches", self.caches)):
            if not values:
                raise SweepError(None, f"the grid has no {name}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise SweepError(None, f"repeats must be a positive integer, got {self.repeats!r}")

    @property
    def checkpoint_id(self) -> str:
        """The tensors swept over, whatever the shard count (part of every run's key)."""
        if self.checkpoint:
            return self.checkpoint
        return f"{self.preset}-{self.dtype}-{self.size}B-seed{self.seed}"

    def checkpoint_for(self, shards: int, root: str | os.PathLike | None = None) -> Path:
        """The folder swept for `shards`: the real checkpoint, or the synthetic one written once."""
        if self.checkpoint:
            return Path(self.checkpoint)
        return cached_checkpoint(self.size, shards, self.preset, self.dtype, self.seed, root=root)

    def cells(self) -> list[Cell]:
        """Every run, repeats outermost (so repeats interleave with the rest rather than run back to back).

        A knob a path does not use (the safetensors library has neither threads nor io size) is
        not swept for it: its runs take the grid's first value, recorded as such. Options are
        swept only for the paths that have them.
        """
        out = []
        for repeat, shards, name in itertools.product(range(self.repeats), self.shards, self.datapaths):
            used = knobs_of(name)
            io_sizes = self.io_sizes if "io_size" in used else self.io_sizes[:1]
            threads = self.threads if "threads" in used else self.threads[:1]
            mine = [(option, values) for option, values in self.options.items() if option in used]
            settings = [tuple(zip([o for o, _ in mine], combo)) for combo in itertools.product(*[v for _, v in mine])]
            for io_size, n, cache, options in itertools.product(io_sizes, threads, self.caches, settings):
                out.append(Cell(name, io_size, n, shards, cache, repeat, options))
        return out


@dataclass
class SweepResult:
    """What a sweep left: every record in its results file (earlier runs included) and its counts."""

    records: list[dict]
    jsonl: Path
    csv: Path
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    resumed: int = 0
    cancelled: bool = False

    def ok(self) -> list[dict]:
        return [r for r in self.records if r.get("status") == "ok"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _probe_summary(report: dict) -> dict:
    """The probe fields a results row carries (the full report is one `gdslab env` away)."""
    cuda, kvikio = report.get("cuda") or {}, report.get("kvikio") or {}
    gpus = cuda.get("gpus") or []
    return {
        "fs_type": (report.get("filesystem") or {}).get("fstype", ""),
        "gds_verdict": report.get("verdict", ""),
        "probe_kernel": report.get("kernel", ""),
        "probe_cpu_count": report.get("cpu_count", ""),
        "probe_ram_total": report.get("ram_total", ""),
        "probe_torch": cuda.get("torch_version", ""),
        "probe_gpus": "; ".join(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus),
        "probe_kvikio": kvikio.get("resolved_mode") or kvikio.get("reason") or "",
    }


# --- the results files ----------------------------------------------------------------------


def results_files(out: str | os.PathLike) -> tuple[Path, Path]:
    """(jsonl, csv) of a results folder."""
    folder = Path(out)
    return folder / JSONL_NAME, folder / CSV_NAME


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a results folder, `.jsonl` or `.csv` file (JSON lines when both exist).

    A last line cut short by an interrupted write is ignored; any other bad line is an error
    naming the file and the line.
    """
    path = Path(path)
    if path.is_dir():
        jsonl, csv_path = results_files(path)
        path = jsonl if jsonl.exists() or not csv_path.exists() else csv_path
    if not path.exists():
        raise SweepError(path, "no such results file")
    if path.suffix == ".csv":
        return _read_csv(path)
    return _read_jsonl(path)[0]


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    """(records, byte length of the well-formed part) of a JSON-lines file.

    Every newline-terminated line must be a record. The text after the last newline, if
    any, is a record whose newline was not written yet, or a line cut short (dropped).
    """
    records, good = [], 0
    *lines, tail = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, 1):
        if line.strip():
            record = _parse(line)
            if record is None:
                raise SweepError(path, f"line {number} is not a JSON record: {line[:80]!r}")
            records.append(record)
        good += len(line) + 1
    record = _parse(tail) if tail.strip() else None
    if record is not None:
        records.append(record)
        good += len(tail)
    return records, good


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _convert(value: str):
    if value in ("", None):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(value, value)


_TEXT_FIELDS = {"key", "status", "reason", "datapath", "effective", "device", "cache_asked", "cache", "knobs",
                "options", "gds_kind", "byte_split",
                "preset", "dtype", "checkpoint", "source", "prepared", "started", "finished", "fs_type",
                "gds_verdict", "probe_kernel", "probe_torch", "probe_gpus", "probe_kvikio"}


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (v if k in _TEXT_FIELDS else _convert(v)) for k, v in row.items()} for row in rows]


def _write_csv(path: Path, records: Iterable[dict]) -> None:
    """Rewrite the CSV from the records, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    os.replace(tmp, path)


class _Results:
    """The two results files of a folder, opened for appending one record at a time."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.csv = results_files(out)
        self.records: list[dict] = []
        if self.jsonl.exists():
            self.records, good = _read_jsonl(self.jsonl)
            if good < self.jsonl.stat().st_size:
                os.truncate(self.jsonl, good)  # drop a line cut short by an interrupted write
            size = self.jsonl.stat().st_size
            if size:
                with open(self.jsonl, "rb+") as f:  # a whole last record whose newline was cut: end it
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
        # The JSON lines are the source of truth: the CSV starts as their copy (whatever an interrupted
        # append or an older schema left in it) and grows with them.
        _write_csv(self.csv, self.records)

    def done(self) -> set[str]:
        return {r["key"] for r in self.records if r.get("status") in DONE and "key" in r}

    def append(self, record: dict) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore").writerow(record)
        self.records.append(record)


# --- one run under the protocol -------------------------------------------------------------


def prepare_cache(files: Sequence[Path], state: str) -> tuple[bool, float, str]:
    """Put `files` in `state` ('cold' or 'warm') and check it: (ok, resident fraction, why not).

    Cold: evict, measure, evict once more if needed. Warm: read every byte, measure, again
    if needed. Eviction that does not work at all here (tmpfs…) is reported as such.
    """
    if state == "cold":
        works, why = can_evict(files[0].parent)
        if not works:
            return False, resident_fraction_all(files), f"a cold cache cannot be made here: {why}"
        for _ in range(2):
            evict_all(files)
            resident = resident_fraction_all(files)
            if resident < COLD_BELOW:
                return True, resident, ""
        return False, resident, (f"eviction left {resident:.1%} of the checkpoint resident "
                                 f"(cold needs < {COLD_BELOW:.0%}): {explain(files)}")
    if state == "warm":
        for _ in range(2):
            warm(files)
            resident = resident_fraction_all(files)
            if resident > WARM_ABOVE:
                return True, resident, ""
        return False, resident, (f"after reading the checkpoint only {resident:.1%} of it is resident "
                                 f"(warm needs > {WARM_ABOVE:.0%}): not enough free memory for the page cache?")
    raise SweepError(None, f"unknown cache state {state!r}; use one of {CACHES}")


def run_cell(cell: Cell, checkpoint: Path, grid: Grid, device: str, probe_report: dict,
             cancel: threading.Event | None = None) -> dict:
    """Run one cell under the protocol; return its record (status ok, skipped, failed or cache-mismatch)."""
    from . import datapaths

    record: dict = {
        "key": cell.key(grid.checkpoint_id, device), "status": "", "reason": "",
        "datapath": cell.datapath, "effective": "", "device": device, "cache_asked": cell.cache,
        "io_size": cell.io_size, "threads": cell.threads, "knobs": ",".join(knobs_of(cell.datapath)),
        "options": ",".join(f"{name}={value}" for name, value in cell.options),
        "shards": cell.shards, "repeat": cell.repeat, "size": grid.size,
        "preset": grid.preset if not grid.checkpoint else "real checkpoint",
        "dtype": grid.dtype, "seed": grid.seed, "checkpoint": str(checkpoint), "prepared": _now(),
        **_probe_summary(probe_report),
    }
    folder = Path(checkpoint)
    record["policy_choice"] = is_auto_choice(folder if folder.is_dir() else folder.parent, device, cell.cache,
                                             cell.datapath, cell.threads, cell.io_size, dict(cell.options))
    info = datapaths.get(cell.datapath).info(resolve_device(device))
    if not info.available:
        record.update(status="skipped", reason=f"{cell.datapath} is unavailable here: {info.reason}",
                      finished=_now())
        return record
    ckpt = Checkpoint.open(checkpoint)
    files = list(dict.fromkeys(t.file for t in ckpt.tensors)) or [f.path for f in ckpt.files]
    ok, resident, why = prepare_cache(files, cell.cache)
    record["resident_checked"] = resident
    if not ok:
        record.update(status="skipped", reason=why, finished=_now())
        return record
    try:
        result = load(ckpt, cell.datapath, device=device, threads=cell.threads, io_size=cell.io_size, cancel=cancel,
                      **dict(cell.options))
    except GdslabError as e:
        record.update(status="failed", reason=str(e), finished=_now())
        return record
    mine = dict(record)
    record.update(result.record())
    for key, value in mine.items():  # the loader's record wins, except where it left a field empty
        if record.get(key) in ("", None):
            record[key] = value
    record["finished"] = _now()
    if result.cache != cell.cache:
        record.update(status="cache-mismatch",
                      reason=f"asked {cell.cache}, but {result.resident_before:.1%} was resident when the load began")
    else:
        record["status"] = "ok"
    del result  # the tensors go now, before the next run allocates its own
    return record


# --- the sweep ------------------------------------------------------------------------------


def sweep(
    out: str | os.PathLike,
    grid: Grid | None = None,
    *,
    device: str | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_record: Callable[[dict], None] | None = None,
    **knobs,
) -> SweepResult:
    """Run `grid` (or `Grid(**knobs)`), appending one record per run to `out`/sweep.jsonl and .csv.

    Cells already in `out` (status ok or skipped) are not run again: call it again after an
    interruption and it resumes. `device` defaults to 'cuda:0' when a GPU is here, else
    'cpu'; `root` is where the synthetic checkpoints are cached. Setting `cancel` stops
    after the run in progress (that run is cancelled too, and not recorded).
    """
    from tqdm.auto import tqdm

    from .probe import probe

    if grid is None:
        grid = Grid(**knobs)
    elif knobs:
        raise SweepError(None, f"give a Grid or knobs, not both (got {sorted(knobs)})")
    device = str(resolve_device(device))
    results = _Results(Path(out))
    done = results.done()
    cells = grid.cells()
    todo = [c for c in cells if c.key(grid.checkpoint_id, device) not in done]
    outcome = SweepResult(results.records, results.jsonl, results.csv, resumed=len(cells) - len(todo))
    checkpoints = {n: grid.checkpoint_for(n, root) for n in sorted({c.shards for c in todo})}
    reports = {n: probe(path).as_dict() for n, path in checkpoints.items()}
    bar = tqdm(total=len(cells), initial=outcome.resumed, disable=not progress, unit="run",
               desc=f"sweep {format_size(grid.size)}")
    try:
        for cell in todo:
            if cancel is not None and cancel.is_set():
                outcome.cancelled = True
                break
            bar.set_description(f"{cell.datapath} {format_size(cell.io_size)} ×{cell.threads} "
                                f"{cell.shards} shard(s) {cell.cache}", refresh=False)
            try:
                record = run_cell(cell, checkpoints[cell.shards], grid, device, reports[cell.shards], cancel)
            except GdslabError:
                if cancel is not None and cancel.is_set():
                    outcome.cancelled = True
                    break
                raise
            if record["status"] == "failed" and cancel is not None and cancel.is_set():
                outcome.cancelled = True  # the run was cancelled, not failed: not recorded, it runs next time
                break
            results.append(record)
            outcome.ran += record["status"] == "ok"
            outcome.skipped += record["status"] == "skipped"
            outcome.failed += record["status"] not in ("ok", "skipped")
            if record["status"] == "ok":
                bar.set_postfix_str(f"{record['gbps']:.2f} GB/s", refresh=False)
            bar.update()
            if on_record is not None:
                on_record(record)
    finally:
        bar.close()
    outcome.records = results.records
    return outcome


__all__ = [
    "CACHES", "FIELDS", "PATH_FIELDS", "Cell", "Grid", "SweepError", "SweepResult", "knobs_of", "prepare_cache",
    "read_records", "results_files", "run_cell", "sweep",
]

"""The comparison benchmark: gdslab's best host path beside the read floor and the loaders people use.

    .venv/bin/python benchmarks/compare.py --size 4GiB --shards 4 --repeats 5 --out docs/results/compare.md
    gdslab bench --compare --size 4GiB --shards 4 --repeats 5 --out docs/results/compare.md   (the same)

One run measures, on the same files, to the same destination (host memory), cold and warm:
the read floor (plain multi-threaded `os.preadv` into fresh buffers, `gdslab.floors`) and
the direct-read floor (the same with O_DIRECT: the storage's own limit), `host-direct`
buffered and with O_DIRECT (`direct=True`, the page cache bypassed as GDS bypasses it),
every installed peer (Run:ai Model Streamer with our knobs and with its own defaults,
fastsafetensors with its defaults) and the `safetensors` library (load + materialize). Repeats interleave: each repeat runs every contender once per cache state,
in an order rotated by one each repeat, so drift on a shared machine hits all alike.
Every contender's tensors are checked bit-equal (CRC-32 per tensor) to what
`safetensors.safe_open` reads, on its first run, outside the timing. Reported: medians,
ranges, ratios to the floor, and the targets met or missed (by how much).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .errors import GdslabError
from .sizes import format_size, parse_size

FLOOR = "read floor"
DIRECT_FLOOR = "direct-read floor"
DIRECT = "host-direct (O_DIRECT)"
# Targets on a host destination: (what, numerator, denominator, cache states, at least). A trailing '*'
# means the best of the contenders whose labels start so (the numerator's best, the denominator's best).
TARGETS = (
    ("host-direct with O_DIRECT ≥ 0.95× the direct-read floor, cold", DIRECT, DIRECT_FLOOR, ("cold",), 0.95),
    ("host-direct with O_DIRECT ≥ 1.2× Run:ai Model Streamer, cold", DIRECT, "runai-streamer*", ("cold",), 1.2),
    ("the fastest host-direct ≥ 1.5× Run:ai Model Streamer, warm", "host-direct*", "runai-streamer*", ("warm",), 1.5),
    ("the fastest host-direct ≥ 1.5× safetensors load + materialize, warm", "host-direct*", "safetensors", ("warm",),
     1.5),
)


@dataclass(frozen=True)
class Contender:
    """One thing measured: a label, the data path (or the floor) and its knobs."""

    label: str
    method: str
    threads: int
    io_size: int
    options: tuple[tuple[str, object], ...] = ()


@dataclass
class Run:
    label: str
    method: str
    cache: str
    repeat: int
    threads: int
    io_size: int
    nbytes: int = 0
    seconds: float = 0.0
    gbps: float = 0.0
    effective: str = ""
    resident_before: float = 0.0
    verified: str = ""
    status: str = "ok"
    reason: str = ""


def contenders(threads: int, io_size: int, peer_defaults: bool = True) -> tuple[list[Contender], list[str]]:
    """(what will run here, what cannot and why) for a host destination."""
    from . import datapaths

    out = [Contender(FLOOR, FLOOR, threads, io_size), Contender(DIRECT_FLOOR, DIRECT_FLOOR, threads, io_size),
           Contender("host-direct", "host-direct", threads, io_size),
           Contender(DIRECT, "host-direct", threads, io_size, (("direct", True),))]
    missing = []
    info = {i.name: i for i in datapaths.available("cpu")}
    peers = [("runai-streamer", "runai-streamer", threads, io_size)]
    if peer_defaults:  # each peer as it ships: Run:ai 16 readers, 8 MiB chunks; fastsafetensors 16 threads, 16 MiB
        peers.append(("runai-streamer (its defaults)", "runai-streamer", 16, 8 << 20))
    peers += [("fastsafetensors (its defaults)", "fastsafetensors", 16, 16 << 20),
              ("safetensors", "safetensors", threads, io_size)]
    for label, method, n, size in peers:
        if info[method].available:
            out.append(Contender(label, method, n, size))
        else:
            missing.append(f"{label}: {info[method].reason}")
    return out, missing


def reference_digests(files: list[Path]) -> dict[str, int]:
    """CRC-32 of every tensor's bytes as the safetensors library reads them (the independent reference)."""
    from safetensors import safe_open

    digests = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                digests[name] = _crc(f.get_tensor(name))
    return digests


def _crc(tensor) -> int:
    import torch

    flat = tensor.detach().reshape(-1).contiguous().cpu().view(torch.uint8)
    return zlib.crc32(flat.numpy())


def _verify(tensors: dict, reference: dict[str, int]) -> str:
    if set(tensors) != set(reference):
        return f"MISMATCH: {len(set(tensors) ^ set(reference))} tensor names differ"
    bad = [name for name, t in tensors.items() if _crc(t) != reference[name]]
    return f"MISMATCH in {len(bad)} tensors, e.g. {bad[0]}" if bad else "bit-exact"


def run_once(contender: Contender, ckpt, files: list[Path], cache: str, repeat: int,
             reference: dict[str, int] | None) -> Run:
    """Prepare the cache (checked), run one contender, and (with `reference`) check its bytes."""
    from .floors import direct_read_floor, read_floor
    from .loader import load
    from .sweep import prepare_cache

    run = Run(contender.label, contender.method, cache, repeat, contender.threads, contender.io_size)
    ok, resident, why = prepare_cache(files, cache)
    run.resident_before = resident
    if not ok:
        run.status, run.reason = "skipped", why
        return run
    if contender.method in (FLOOR, DIRECT_FLOOR):
        floor = read_floor if contender.method == FLOOR else direct_read_floor
        try:
            result = floor(files, contender.threads, contender.io_size)
        except OSError as e:
            run.status, run.reason = "skipped", f"O_DIRECT refused here: {e.strerror or e}"
            return run
        run.nbytes, run.seconds, run.gbps, run.effective = result.nbytes, result.seconds, result.gbps, result.what
        return run
    try:
        result = load(ckpt, contender.method, device="cpu", threads=contender.threads, io_size=contender.io_size,
                      **dict(contender.options))
    except GdslabError as e:
        run.status, run.reason = "failed", str(e)
        return run
    run.nbytes, run.seconds, run.gbps, run.effective = result.nbytes, result.seconds, result.gbps, result.effective
    run.resident_before = result.resident_before
    if reference is not None:
        run.verified = _verify(result.tensors, reference)
    del result
    return run


def interleave(entrants: list[Contender], caches: list[str], repeats: int, reference: dict[str, int] | None,
               records: Path | None, run_one: Callable[[Contender, str, int, dict | None], Run]) -> list[Run]:
    """Every contender in every cache state, `repeats` times, the order rotated by one each repeat
    (so that no contender always runs after the same one); each contender's bytes checked until
    one run verifies them (outside the timing); every run printed and appended to `records`."""
    runs: list[Run] = []
    verified: set[str] = set()
    if records:
        records.parent.mkdir(parents=True, exist_ok=True)
        records.write_text("")
    for repeat in range(repeats):
        shift = repeat % len(entrants)
        for cache in caches:
            for contender in entrants[shift:] + entrants[:shift]:
                check = reference if contender.label not in verified else None
                result = run_one(contender, cache, repeat, check)
                if result.verified:
                    verified.add(contender.label)
                runs.append(result)
                shown = f"{result.gbps:6.2f} GB/s" if result.status == "ok" else f"{result.status}: {result.reason}"
                print(f"repeat {repeat + 1} {cache:4} {contender.label:32} {shown} {result.verified}", flush=True)
                if records:
                    with open(records, "a") as f:
                        f.write(json.dumps(asdict(result)) + "\n")
    return runs


def _median(runs: list[Run]) -> float | None:
    values = [r.gbps for r in runs if r.status == "ok"]
    return statistics.median(values) if values else None


def _ratio(runs: list[Run], numerator: str, denominator: str, cache: str) -> tuple[float | None, str]:
    """Median ratio numerator/denominator for `cache`; a trailing '*' means the best of those labels."""
    def medians(label: str) -> list[tuple[str, float]]:
        match = (lambda x: x.startswith(label[:-1])) if label.endswith("*") else (lambda x: x == label)
        out = []
        for name in dict.fromkeys(r.label for r in runs if match(r.label) and r.cache == cache):
            m = _median([r for r in runs if r.label == name and r.cache == cache])
            if m is not None:
                out.append((name, m))
        return out

    top, bottom = medians(numerator), medians(denominator)
    if not top or not bottom:
        return None, ""
    mine, best = max(top, key=lambda kv: kv[1])
    name, value = max(bottom, key=lambda kv: kv[1])
    return best / value, f"{mine} vs {name}"


def markdown(runs: list[Run], *, command: str, machine: str, setup: str, missing: list[str], notes: str = "") -> str:
    """The results page: the command, the machine, the table of medians, the targets."""
    labels = list(dict.fromkeys(r.label for r in runs))
    caches = list(dict.fromkeys(r.cache for r in runs))
    lines = [f"# gdslab against the read floor and the loaders people use ({datetime.now(timezone.utc):%Y-%m-%d})",
             "", f"Command: `{command}`", "", f"Machine: {machine}", "", f"Setup: {setup}", ""]
    lines += ["| contender | cache | median GB/s | min–max | n | × read floor | bytes checked | what ran |",
              "|---|---|---|---|---|---|---|---|"]
    for cache in caches:
        floor = _median([r for r in runs if r.label == FLOOR and r.cache == cache])
        for label in labels:
            mine = [r for r in runs if r.label == label and r.cache == cache]
            ok = [r for r in mine if r.status == "ok"]
            if not ok:
                why = next((r.reason for r in mine if r.reason), "no run")
                lines.append(f"| {label} | {cache} | – | – | 0 | – | – | not measured: {why} |")
                continue
            median = _median(ok)
            values = [r.gbps for r in ok]
            ratio = f"{median / floor:.2f}×" if floor else "–"
            checked = next((r.verified for r in runs if r.label == label and r.verified),
                           "n/a (raw bytes)" if label in (FLOOR, DIRECT_FLOOR) else "–")
            lines.append(f"| {label} | {cache} | {median:.2f} | {min(values):.2f}–{max(values):.2f} | {len(ok)} | "
                         f"{ratio} | {checked} | {ok[0].effective} |")
    lines += ["", "## Targets", "", "| target | cache | measured | verdict |", "|---|---|---|---|"]
    for what, numerator, denominator, target_caches, least in TARGETS:
        for cache in target_caches:
            if cache not in caches:
                continue
            ratio, against = _ratio(runs, numerator, denominator, cache)
            if ratio is None:
                lines.append(f"| {what} | {cache} | – | not measured here |")
                continue
            verdict = "met" if ratio >= least else f"missed by {(least - ratio) / least:.0%} (needs {least:.2f}×)"
            lines.append(f"| {what} | {cache} | {ratio:.2f}× ({against}) | {verdict} |")
    if missing:
        lines += ["", "Not installed or not runnable here: " + "; ".join(missing) + "."]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def _machine(folder: Path) -> str:
    from .probe import probe

    report = probe(folder).as_dict()
    fs = (report.get("filesystem") or {})
    return (f"{platform.node()}, {report.get('cpu_model', '?')}, {report.get('cpu_count', '?')} CPUs, "
            f"{format_size(int(report.get('ram_total') or 0))} RAM, kernel {report.get('kernel', '?')}, "
            f"checkpoint on {fs.get('fstype', '?')} ({', '.join(fs.get('block_devices') or []) or '?'}), "
            f"torch {(report.get('cuda') or {}).get('torch_version', '?')}")


def _wait_for_quiet(limit: float | None, patience: float) -> str:
    """Wait (up to `patience` s) for the 1-minute load average to drop under `limit`; say what it was."""
    start = time.monotonic()
    while limit is not None and os.getloadavg()[0] >= limit and time.monotonic() - start < patience:
        print(f"load average {os.getloadavg()[0]:.2f} ≥ {limit}: waiting…", flush=True)
        time.sleep(20)
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="4GiB", help="checkpoint size (default 4GiB)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8, help="threads for the floor, host-direct and peers")
    parser.add_argument("--io-size", default="16MiB")
    parser.add_argument("--caches", default="cold,warm", help="comma-separated: cold, warm")
    parser.add_argument("--no-peer-defaults", action="store_true", help="run peers only with our knobs")
    parser.add_argument("--no-verify", action="store_true", help="skip the bit-exact check of each contender")
    parser.add_argument("--root", default=None, help="where checkpoints are cached (default $GDSLAB_CHECKPOINTS)")
    parser.add_argument("--checkpoint", default=None, help="a real checkpoint (file or HF folder) instead of a synthetic one")
    parser.add_argument("--out", default=None, help="write the markdown page here (e.g. docs/results/compare.md)")
    parser.add_argument("--records", default="results/compare.jsonl", help="every run as JSON lines")
    parser.add_argument("--max-load", type=float, default=None,
                        help="wait (up to 10 min) for the 1-minute load average to drop below this first")


def run(args: argparse.Namespace, command: str) -> int:
    """Run the benchmark described by `args` (see `add_arguments`); print and write the page."""
    from .checkpoint import Checkpoint
    from .synthetic import cached_checkpoint

    caches = [c.strip() for c in args.caches.split(",") if c.strip()]
    if not caches or any(c not in ("cold", "warm") for c in caches):
        raise GdslabError(f"--caches must list cold and/or warm, got {args.caches!r}")
    folder = Path(args.checkpoint) if args.checkpoint else cached_checkpoint(args.size, args.shards, root=args.root)
    ckpt = Checkpoint.open(folder)
    files = [f.path for f in ckpt.files]
    entrants, missing = contenders(args.threads, parse_size(args.io_size), not args.no_peer_defaults)
    reference = None if args.no_verify else reference_digests(files)
    load_before = _wait_for_quiet(args.max_load, 600)
    runs = interleave(entrants, caches, args.repeats, reference, Path(args.records) if args.records else None,
                      lambda contender, cache, repeat, check: run_once(contender, ckpt, files, cache, repeat, check))
    load_after = "/".join(f"{x:.2f}" for x in os.getloadavg())
    setup = (f"checkpoint {format_size(ckpt.nbytes)} of tensors ({ckpt.nbytes} B) in {len(files)} shards "
             f"({folder.name}); destination host memory (cpu); threads {args.threads}, io size {args.io_size} for "
             f"the floor, host-direct and the peers run with our knobs; {args.repeats} interleaved repeats per "
             f"cache state; medians; GB/s = 1e9 B/s. Cold: pages evicted and < 5% resident checked before each "
             f"run; warm: files read first and > 95% resident checked. Load average (1/5/15 min) before "
             f"{load_before}, after {load_after}.")
    page = markdown(runs, command=command, machine=_machine(folder), setup=setup, missing=missing)
    print(page)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(page)
    return 1 if any(r.verified.startswith("MISMATCH") for r in runs) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/compare.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    command = ".venv/bin/python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, command.strip())
    except GdslabError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2


__all__ = ["Contender", "Run", "contenders", "markdown", "run", "run_once", "main", "add_arguments", "TARGETS",
           "FLOOR", "DIRECT_FLOOR", "DIRECT"]

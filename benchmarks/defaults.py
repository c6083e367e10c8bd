"""The default load — `gdslab.load(checkpoint, device="cpu")`, no knob given — beside the floors and the peers.

    .venv/bin/python benchmarks/defaults.py --size 2GiB --shards 4 --repeats 3 --out docs/results/defaults.md

What a user who passes no knob gets, cold and warm, measured in one run on the same files
into host memory against: the buffered read floor and the O_DIRECT read floor
(`gdslab.floors`, 8 threads of 16 MiB reads into reused buffers), Run:ai Model Streamer and
fastsafetensors with their own defaults, and `safetensors.torch.load_file` + clone (so its
tensors, like gdslab's, are the caller's own memory). Repeats interleave, in an order
rotated by one each repeat; every contender's tensors are checked bit-equal to
safetensors' on its first run, outside the timing. The page reports medians, ranges, the
ratios the issue sets as targets (met or missed) and the knobs the policy chose, with why.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from gdslab.checkpoint import Checkpoint
from gdslab.compare import (DIRECT_FLOOR, FLOOR, Contender, Run, _machine, _verify, _wait_for_quiet,
                            interleave, reference_digests, run_once)
from gdslab.errors import GdslabError
from gdslab.sizes import format_size
from gdslab.synthetic import cached_checkpoint

DEFAULT = "gdslab.load (default)"
RUNAI, FASTST, SAFETENSORS = "runai-streamer (its defaults)", "fastsafetensors (its defaults)", "safetensors"
# (what, numerator, denominator(s: the best of them), cache, at least)
TARGETS = (
    ("default ≥ 1.1× Run:ai Model Streamer, cold", DEFAULT, (RUNAI,), "cold", 1.1),
    ("default ≥ 0.85× the better read floor, cold", DEFAULT, (FLOOR, DIRECT_FLOOR), "cold", 0.85),
    ("default ≥ 1.1× safetensors (cloned), warm", DEFAULT, (SAFETENSORS,), "warm", 1.1),
    ("default ≥ 1.5× Run:ai Model Streamer, warm", DEFAULT, (RUNAI,), "warm", 1.5),
)


def contenders() -> tuple[list[Contender], list[str]]:
    from gdslab import datapaths

    out = [Contender(FLOOR, FLOOR, 8, 16 << 20), Contender(DIRECT_FLOOR, DIRECT_FLOOR, 8, 16 << 20),
           Contender(DEFAULT, "default", 0, 0)]
    missing = []
    info = {i.name: i for i in datapaths.available("cpu")}
    for label, method, threads, io_size in ((RUNAI, "runai-streamer", 16, 8 << 20),
                                            (FASTST, "fastsafetensors", 16, 16 << 20),
                                            (SAFETENSORS, "safetensors", 8, 16 << 20)):
        if info[method].available:
            out.append(Contender(label, method, threads, io_size))
        else:
            missing.append(f"{label}: {info[method].reason}")
    return out, missing


def run_default(ckpt, files, cache: str, repeat: int, reference) -> tuple[Run, dict]:
    """The default load under the protocol: (its run, what the policy chose)."""
    from gdslab.loader import load
    from gdslab.sweep import prepare_cache

    run = Run(DEFAULT, "default", cache, repeat, 0, 0)
    ok, resident, why = prepare_cache(files, cache)
    run.resident_before = resident
    if not ok:
        run.status, run.reason = "skipped", why
        return run, {}
    try:
        result = load(ckpt, device="cpu")
    except GdslabError as e:
        run.status, run.reason = "failed", str(e)
        return run, {}
    rec = result.record()
    run.nbytes, run.seconds, run.gbps, run.effective = result.nbytes, result.seconds, result.gbps, result.effective
    run.threads, run.io_size, run.resident_before = result.threads, result.io_size, result.resident_before
    if reference is not None:
        run.verified = _verify(result.tensors, reference)
    del result
    return run, {k: rec.get(k) for k in ("chosen", "chosen_by", "why", "direct_share", "direct_note")}


def _median(runs: list[Run], label: str, cache: str) -> float | None:
    values = [r.gbps for r in runs if r.label == label and r.cache == cache and r.status == "ok"]
    return statistics.median(values) if values else None


def _ratios_per_repeat(runs: list[Run], numerator: str, denominators: tuple[str, ...], cache: str) -> list[float]:
    """The ratio within each repeat (same minute, same load on the machine), for the spread."""
    out = []
    for repeat in sorted({r.repeat for r in runs}):
        top = [r.gbps for r in runs if r.repeat == repeat and r.cache == cache and r.label == numerator and r.status == "ok"]
        bottom = [r.gbps for r in runs if r.repeat == repeat and r.cache == cache and r.label in denominators
                  and r.status == "ok"]
        if top and bottom and max(bottom) > 0:
            out.append(top[0] / max(bottom))
    return out


def markdown(runs: list[Run], chosen: dict[str, dict], *, command: str, machine: str, setup: str,
             missing: list[str]) -> str:
    labels = list(dict.fromkeys(r.label for r in runs))
    caches = list(dict.fromkeys(r.cache for r in runs))
    lines = [f"# The default load against the floors and the peers ({datetime.now(timezone.utc):%Y-%m-%d})", "",
             f"Command: `{command}`", "", f"Machine: {machine}", "", f"Setup: {setup}", "",
             "| contender | cache | median GB/s | min–max | n | × default | bytes checked | what ran |",
             "|---|---|---|---|---|---|---|---|"]
    for cache in caches:
        mine = _median(runs, DEFAULT, cache)
        for label in labels:
            ok = [r for r in runs if r.label == label and r.cache == cache and r.status == "ok"]
            if not ok:
                why = next((r.reason for r in runs if r.label == label and r.cache == cache and r.reason), "no run")
                lines.append(f"| {label} | {cache} | – | – | 0 | – | – | not measured: {why} |")
                continue
            median = statistics.median(r.gbps for r in ok)
            values = [r.gbps for r in ok]
            checked = next((r.verified for r in runs if r.label == label and r.verified),
                           "n/a (raw bytes)" if label in (FLOOR, DIRECT_FLOOR) else "–")
            vs = f"{mine / median:.2f}×" if mine and label != DEFAULT else "–"
            lines.append(f"| {label} | {cache} | {median:.2f} | {min(values):.2f}–{max(values):.2f} | {len(ok)} | "
                         f"{vs} | {checked} | {ok[0].effective} |")
    lines += ["", "## What the default chose", ""]
    for cache, c in chosen.items():
        lines += [f"* **{cache}**: {c.get('chosen')} (by {c.get('chosen_by')}). Why: {c.get('why')}."]
    lines += ["", "## Targets (ratios of medians; per-repeat ratios in brackets)", "",
              "| target | measured | per repeat | verdict |", "|---|---|---|---|"]
    for what, numerator, denominators, cache, least in TARGETS:
        top = _median(runs, numerator, cache)
        bottoms = [(d, _median(runs, d, cache)) for d in denominators]
        bottoms = [(d, m) for d, m in bottoms if m]
        if top is None or not bottoms:
            lines.append(f"| {what} | – | – | not measured here |")
            continue
        name, value = max(bottoms, key=lambda kv: kv[1])
        ratio = top / value
        each = ", ".join(f"{x:.2f}" for x in _ratios_per_repeat(runs, numerator, denominators, cache))
        verdict = "met" if ratio >= least else f"missed by {(least - ratio) / least:.0%} (needs {least:.2f}×)"
        lines.append(f"| {what} | {ratio:.2f}× (vs {name}) | [{each}] | {verdict} |")
    if missing:
        lines += ["", "Not installed or not runnable here: " + "; ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/defaults.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2GiB")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--caches", default="cold,warm")
    parser.add_argument("--checkpoint", default=None, help="a real checkpoint instead of a synthetic one")
    parser.add_argument("--out", default=None, help="write the markdown page here")
    parser.add_argument("--records", default="results/defaults.jsonl")
    parser.add_argument("--max-load", type=float, default=None, help="wait (≤10 min) for the load average to drop")
    args = parser.parse_args(argv)
    command = ".venv/bin/python benchmarks/defaults.py " + " ".join(sys.argv[1:] if argv is None else argv)
    caches = [c.strip() for c in args.caches.split(",") if c.strip()]
    folder = Path(args.checkpoint) if args.checkpoint else cached_checkpoint(args.size, args.shards)
    ckpt = Checkpoint.open(folder)
    files = [f.path for f in ckpt.files]
    entrants, missing = contenders()
    reference = reference_digests(files)
    before = _wait_for_quiet(args.max_load, 600)
    chosen: dict[str, dict] = {}

    def run_one(contender: Contender, cache: str, repeat: int, check) -> Run:
        if contender.method != "default":
            return run_once(contender, ckpt, files, cache, repeat, check)
        run, picked = run_default(ckpt, files, cache, repeat, check)
        chosen.setdefault(cache, picked)
        return run

    runs = interleave(entrants, caches, args.repeats, reference, Path(args.records), run_one)
    after = "/".join(f"{x:.2f}" for x in os.getloadavg())
    setup = (f"checkpoint {format_size(ckpt.nbytes)} of tensors in {len(files)} shards ({folder.name}); destination "
             f"host memory; floors: 8 threads × 16 MiB into reused buffers; peers with their own defaults "
             f"(Run:ai 16 readers × 8 MiB, fastsafetensors 16 threads); {args.repeats} interleaved repeats per cache "
             f"state, medians; GB/s = 1e9 B/s. Cold: evicted, < 5% resident checked; warm: read first, > 95% "
             f"resident checked. Load average (1/5/15 min) before {before}, after {after}: the machine is shared, so "
             "compare ratios within this run, not across runs.")
    page = markdown(runs, chosen, command=command.strip(), machine=_machine(folder), setup=setup, missing=missing)
    print(page)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(page)
    return 1 if any(r.verified.startswith("MISMATCH") for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

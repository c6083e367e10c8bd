"""The whole GPU check in one short run: what a lent GPU machine runs first (see ../shared/GPU.md).

    bash benchmarks/gpu_check.sh                 # on the GPU machine (carry .whl: benchmarks/gpu_wheels.sh)
    .venv/bin/python benchmarks/gpu_check.py --rehearse   # here, without a GPU: the plumbing only

Steps, each with its own time limit, logs kept: `gdslab env`; a checkpoint (2 GiB, 4
shards); the `gpu`-marked tests; every path cold and warm against the read floor and the
pinned and pageable host→device ceilings measured in the same run (with the gds byte
split); fill curves beside sampled device memory; every notebook under nbval; one NCCL
run over every visible GPU. It stops at once, non-zero, when there is no GPU or KvikIO does
not import. What comes back is `summary.md` (device, command, the table, what failed) and
one archive of everything else: a GPU run may return at most eight files.

`--rehearse` runs the same steps on the CPU at small sizes so that a broken step shows
here, before device time is spent; its summary says REHEARSAL and holds no GPU figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ["tests/test_loader.py", "tests/test_profile.py", "tests/test_dist.py", "tests/test_verify.py",
             "tests/test_gpu_readiness.py", "tests/test_probe.py", "tests/test_probe_fixtures.py"]


@dataclass
class Step:
    name: str
    status: str  # ok, failed (exit N), timed out, not run
    seconds: float
    log: Path
    command: str


def preflight(rehearse: bool) -> str | None:
    """Why this machine cannot run the check, or None. Quick: one torch import, one KvikIO import."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return f"torch does not import: {e}"
    if rehearse:
        return None
    if not torch.cuda.is_available():
        why = "a CPU-only torch build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
        return f"no CUDA GPU here ({why}); run it on a GPU machine, or --rehearse to check the plumbing"
    try:
        import kvikio  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return (f"KvikIO does not import ({type(e).__name__}: {e}); carry .whl (benchmarks/gpu_wheels.sh) "
                "so gpu_check.sh installs it")
    return None


def run_step(name: str, argv: list[str], work: Path, limit: float, env: dict | None = None) -> Step:
    log = work / f"{name}.log"
    command = " ".join(shlex.quote(a) for a in argv)
    print(f"== {name}: {command}", flush=True)
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {command}\n")
        f.flush()
        try:
            done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=limit,
                                  env={**os.environ, **(env or {})})
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit:.0f} s"
    seconds = time.monotonic() - start
    print(f"   {status} in {seconds:.0f} s", flush=True)
    return Step(name, status, seconds, log, command)


def tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def failed_tests(xml: Path) -> list[str]:
    """Names of the failed or errored tests in a JUnit XML file."""
    try:
        tree = ET.parse(xml)
    except (OSError, ET.ParseError):
        return []
    out = []
    for case in tree.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            out.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return out


def floors_table(records: list[dict]) -> list[str]:
    """Median GB/s per (method, cache), with ratios to the pinned and pageable ceilings and what ran."""
    import statistics

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["cache_asked"]), []).append(r)

    def median(method: str, cache: str) -> float | None:
        runs = groups.get((method, cache))
        return statistics.median(r["gbps"] for r in runs) if runs else None

    lines = ["| path | cache | median GB/s | × pinned H2D | × pageable H2D | what ran |", "|---|---|---|---|---|---|"]
    for (method, cache), runs in groups.items():
        gbps = median(method, cache)
        pinned = median("H2D ceiling (pinned)", cache)
        pageable = median("H2D ceiling (pageable)", cache)
        ratio = lambda base: f"{gbps / base:.2f}×" if base else "—"  # noqa: E731
        lines.append(f"| {method} | {cache} | {gbps:.2f} | {ratio(pinned)} | {ratio(pageable)} | "
                     f"{runs[-1].get('effective', '') if runs[-1].get('effective') != method else ''} |")
    return lines


def device_line(env_json: Path) -> str:
    try:
        report = json.loads(env_json.read_text())
    except (OSError, ValueError):
        return "unknown (gdslab env failed)"
    cuda, kv = report.get("cuda", {}), report.get("kvikio", {})
    gpus = cuda.get("gpus") or []
    names = ", ".join(f"{g.get('name')} ({g.get('memory_bytes', 0) / 2**30:.0f} GiB)" for g in gpus) or "no GPU"
    return (f"{names}; driver {cuda.get('driver_version')}, CUDA {cuda.get('cuda_driver_version')}; "
            f"torch {cuda.get('torch_version')} (CUDA {cuda.get('torch_cuda_version')}); "
            f"KvikIO {kv.get('version')}, libcufile {kv.get('libcufile_version')}; "
            f"{report.get('filesystem', {}).get('fstype')} under the checkpoints")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "results/gpu-check",
                        help="where summary.md and gpu-check.tar.gz go (nothing else: a GPU run returns few files)")
    parser.add_argument("--work", default="/tmp/gdslab-gpu-check", help="logs, tables and figures, packed at the end")
    parser.add_argument("--size", default=None, help="checkpoint size (default 2GiB; 16MiB with --rehearse)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lab-size", default=None, help="notebooks' GDSLAB_LAB_SIZE (default 64MiB; 32MiB rehearsing)")
    parser.add_argument("--rehearse", action="store_true", help="run every step on the CPU, small: plumbing only")
    args = parser.parse_args(argv)

    started = time.monotonic()
    why = preflight(args.rehearse)
    if why:
        print(f"gpu_check: cannot run here: {why}", file=sys.stderr)
        return 2
    import torch

    size = args.size or ("16MiB" if args.rehearse else "2GiB")
    lab_size = args.lab_size or ("32MiB" if args.rehearse else "64MiB")
    device = "cpu" if args.rehearse else "cuda:0"
    gpus = 0 if args.rehearse else torch.cuda.device_count()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve()
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    py = sys.executable
    os.environ.setdefault("GDSLAB_CHECKPOINTS", "/tmp/gdslab-checkpoints")
    os.environ["PYTHONUNBUFFERED"] = "1"
    ckpt_dir = os.environ["GDSLAB_CHECKPOINTS"]

    steps = [run_step("env", [py, "-m", "gdslab.cli", "env", "--dir", ckpt_dir, "--json"], work, 120)]
    (work / "env.json").write_text(steps[-1].log.read_text().split("\n", 1)[1] if steps[-1].status == "ok" else "{}")
    steps.append(run_step("checkpoint", [py, "-c", "from gdslab.synthetic import cached_checkpoint; "
                                                   f"print(cached_checkpoint({size!r}, 4))"], work, 180))
    ckpt = steps[-1].log.read_text().strip().splitlines()[-1] if steps[-1].status == "ok" else ""
    steps.append(run_step("gpu-tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                                        f"--junitxml={work / 'gpu-tests.xml'}", *GPU_TESTS], work, 300))
    steps.append(run_step("floors", [py, "benchmarks/floor.py", "--device", device, "--size", size, "--shards", "4",
                                     "--repeats", str(args.repeats), "--out", str(work / "floors.md"),
                                     "--json", str(work / "floors.json")], work, 300))
    steps.append(run_step("fill-curves", [py, "benchmarks/fill_curves.py", "--device", device, "--size", size,
                                          "--cache", "cold", "--out", str(work / "fill-curves")], work, 180))
    steps.append(run_step("notebooks", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                                        "--nbval-current-env", "--nbval-cell-timeout=300",
                                        f"--junitxml={work / 'notebooks.xml'}", "notebooks"], work, 420,
                          env={"GDSLAB_LAB_SIZE": lab_size}))
    ranks = gpus if gpus else 2
    steps.append(run_step("torchrun", [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                       str(ranks), "-m", "gdslab.dist", ckpt or "missing-checkpoint",
                                       "--modes", "slice,share", "--json", str(work / "torchrun.json")], work, 240))

    failures = [s for s in steps if s.status != "ok"]
    tests = failed_tests(work / "gpu-tests.xml") + failed_tests(work / "notebooks.xml")
    lines = [
        f"# GPU check{' — REHEARSAL on CPU: plumbing only, no GPU figure' if args.rehearse else ''} "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Device: {device_line(work / 'env.json')}",
        f"Command: `bash benchmarks/gpu_check.sh` → `python3 benchmarks/gpu_check.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}` (checkpoint {size}, 4 shards, "
        f"{args.repeats} repeats; notebooks at {lab_size}; {ranks} rank(s) through torchrun)",
        f"Verdict: {json.loads((work / 'env.json').read_text() or '{}').get('verdict', 'unknown')}",
        f"Took {time.monotonic() - started:.0f} s. Everything else is in gpu-check.tar.gz.",
        "",
        "## Steps",
        "",
        "| step | status | seconds | last line of its log |",
        "|---|---|---|---|",
        *[f"| {s.name} | {s.status} | {s.seconds:.0f} | {tail(s.log, 1).replace('|', '/')[:120]} |" for s in steps],
        "",
        "## Every path, cold and warm, against the floors measured in the same run",
        "",
    ]
    try:
        lines += floors_table(json.loads((work / "floors.json").read_text()))
    except (OSError, ValueError, KeyError) as e:
        lines.append(f"(no table: {e})")
    lines += ["", "## Fill curves (events against sampled device memory)", "", "```", tail(work / "fill-curves.log", 12),
              "```", "", "## torchrun over every visible GPU (NCCL; gloo when rehearsing)", "", "```",
              tail(work / "torchrun.log", 8), "```", ""]
    if failures or tests:
        lines += ["## What failed", ""]
        lines += [f"- {name}" for name in tests]
        for s in failures:
            lines += [f"- step {s.name}: {s.status}", "", "```", tail(s.log), "```", ""]
    else:
        lines += ["Nothing failed."]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n")
    (work / "summary.md").write_text(summary.read_text())
    with tarfile.open(out / "gpu-check.tar.gz", "w:gz") as tar:
        tar.add(work, arcname="gpu-check")
    print("\n".join(lines))
    return 1 if failures or tests else 0


if __name__ == "__main__":
    sys.exit(main())

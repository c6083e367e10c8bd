"""The whole GPU check in one short run: what a lent GPU machine runs first (see ../shared/GPU.md).

    bash benchmarks/gpu_check.sh                 # on the GPU machine (carry .whl: benchmarks/gpu_wheels.sh)
    .venv/bin/python benchmarks/gpu_check.py --rehearse   # here, without a GPU: the plumbing only

A device command ends at 600 s and then only what is already under $OUT comes back, so the
check runs under one global deadline (`--deadline`, default 540 s) that every step's limit
is cut to, and rewrites `summary.md` and the archive after every step: a run killed at any
point leaves every finished step's results. Each step runs in its own process group, killed
whole on its timeout. Steps, by value: `gdslab env --json` (to its own file); a checkpoint
(2 GiB, 4 shards); a strict-GDS load (cuFile compat off) and a default gds load, each with the
nvidia-fs counters before and after and cufile.log packed; the default gds load (no knob: what
the policy chooses, and why) and the same at half and double its threads; every path cold and warm against
the read floor and the pinned and pageable host→device ceilings; the `gpu`-marked tests; fill
curves; every notebook under nbval; one NCCL run over every visible GPU (with one GPU, world=1
exercises no collective, and the summary says so). It stops at once, non-zero, when there is
no GPU or KvikIO does not import. What comes back is `summary.md` and one archive.

`--rehearse` runs the same steps on the CPU at small sizes so that a broken step shows
here, before device time is spent; its summary says REHEARSAL and holds no GPU figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import shlex
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ["tests/test_loader.py", "tests/test_profile.py", "tests/test_dist.py", "tests/test_verify.py",
             "tests/test_gpu_readiness.py", "tests/test_kvspill.py", "tests/test_probe.py",
             "tests/test_probe_fixtures.py"]
NVFS_STATS = Path("/proc/driver/nvidia-fs/stats")


DEFAULT_DEADLINE = 540.0  # a device command ends at 600 s; what is under $OUT by then is all that comes back
PACK_RESERVE = 10.0       # seconds kept at the end to write the summary and the archive


@dataclass
class Spec:
    """A step to run: its command, its own limit (cut to what the deadline leaves), where its stdout goes."""

    name: str
    argv: list[str] | Callable[[], list[str]]  # a callable is asked when the step starts (for earlier steps' output)
    limit: float
    env: dict | None = None
    stdout: Path | None = None          # a file of its own (JSON, say); the log then holds stderr only
    before: Callable[[], None] | None = None  # run just before (e.g. read nvidia-fs counters)
    after: Callable[[], None] | None = None   # run just after, whatever happened


@dataclass
class Step:
    name: str
    status: str  # ok, failed (exit N), timed out after N s, not run (...)
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


def run_step(spec: Spec, work: Path, limit: float) -> Step:
    """Run one step in its own process group; on its timeout the whole group is killed."""
    log = work / f"{spec.name}.log"
    argv = spec.argv() if callable(spec.argv) else spec.argv
    command = " ".join(shlex.quote(a) for a in argv)
    print(f"== {spec.name} (limit {limit:.0f} s): {command}", flush=True)
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {command}\n")
        f.flush()
        out = open(spec.stdout, "w") if spec.stdout else f
        try:
            if spec.before:
                spec.before()
            proc = subprocess.Popen(argv, stdout=out, stderr=f if spec.stdout else subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, **(spec.env or {})}, start_new_session=True)
            try:
                code = proc.wait(timeout=limit)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the step and every process it started
                proc.wait()
                status = f"timed out after {limit:.0f} s (process group killed)"
        except OSError as e:
            status = f"failed to start ({e})"
        finally:
            if spec.stdout:
                out.close()
            if spec.after:
                with contextlib.suppress(Exception):
                    spec.after()
    seconds = time.monotonic() - start
    print(f"   {status} in {seconds:.0f} s", flush=True)
    return Step(spec.name, status, seconds, log, command)


def drive(specs: list[Spec], work: Path, out: Path, deadline: float, summarize: Callable[[list[Step], list[Spec]], str],
          started: float | None = None) -> list[Step]:
    """Run `specs` in order under one global deadline, rewriting summary.md and the archive after every step.

    Each step's limit is cut to what the deadline leaves (less `PACK_RESERVE`); a step with
    under a few seconds left is not started. So a run killed at any point leaves under `out` the
    results of every step that finished.
    """
    started = time.monotonic() if started is None else started
    steps: list[Step] = []
    for k, spec in enumerate(specs):
        left = deadline - (time.monotonic() - started) - PACK_RESERVE
        if left < 3:
            steps.append(Step(spec.name, f"not run (global deadline of {deadline:.0f} s reached)", 0.0,
                              work / f"{spec.name}.log", ""))
        else:
            steps.append(run_step(spec, work, min(spec.limit, left)))
        publish(summarize(steps, specs[k + 1:]), work, out)
    return steps


def publish(summary: str, work: Path, out: Path) -> None:
    """summary.md (here and in the archive) and gpu-check.tar.gz, each written whole then renamed."""
    (work / "summary.md").write_text(summary)
    tmp = out / "summary.md.partial"
    tmp.write_text(summary)
    tmp.replace(out / "summary.md")
    tmp = out / "gpu-check.tar.gz.partial"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(work, arcname="gpu-check")
    tmp.replace(out / "gpu-check.tar.gz")


def steps_table(steps: list[Step], pending: list[Spec]) -> list[str]:
    lines = ["| step | status | seconds | last line of its log |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} | {tail(s.log, 1).replace('|', '/')[:120]} |" for s in steps]
    lines += [f"| {p.name} | not run yet | — | |" for p in pending]
    return lines


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


def copy_file(source: Path, target: Path) -> Callable[[], None]:
    """A hook that copies `source` (nvidia-fs counters, cufile.log) to `target`, where it exists."""
    def copy() -> None:
        if source.exists():
            shutil.copyfile(source, target)
    return copy


def gds_lines(work: Path) -> list[str]:
    """What each gds step earned: its label, the evidence, the byte split, nvidia-fs's readMiB before and after."""
    sys.path.insert(0, str(ROOT))
    from gdslab.gds_evidence import parse_nvfs_stats

    lines = ["| run | label | evidence | byte split | allow_compat_mode | nvidia-fs readMiB before → after |",
             "|---|---|---|---|---|---|"]
    for name in ("strict-gds", "gds-default"):
        try:
            record = json.loads((work / f"{name}.json").read_text())
        except (OSError, ValueError):
            lines.append(f"| {name} | (no record: see {name}.log) | | | | |")
            continue
        counters = []
        for when in ("before", "after"):
            try:
                counters.append(str(parse_nvfs_stats((work / f"{name}-nvfs-{when}.txt").read_text()).read_mib))
            except (OSError, ValueError):
                counters.append("—")
        lines.append(f"| {name} | {record.get('gds_label')} | {record.get('gds_evidence', '').replace('|', '/')} | "
                     f"{record.get('byte_split')} | {record.get('allow_compat_mode')} | {' → '.join(counters)} |")
    return lines


def policy_lines(work: Path) -> list[str]:
    """The auto gds load's choice with its reasons, and its GB/s beside the same load at half and double the threads."""
    lines = ["| run | threads | io size | GB/s | label | chosen by |", "|---|---|---|---|---|---|"]
    why = ""
    for name in ("gds-auto", "gds-auto-half-threads", "gds-auto-double-threads"):
        try:
            record = json.loads((work / f"{name}.json").read_text())
        except (OSError, ValueError):
            lines.append(f"| {name} | (no record: see {name}.log) | | | | |")
            continue
        why = why or record.get("why", "")
        gbps = record.get("gbps")
        lines.append(f"| {name} | {record.get('threads')} | {record.get('io_size')} | "
                     f"{f'{gbps:.2f}' if isinstance(gbps, (int, float)) else '—'} | {record.get('gds_label')} | "
                     f"{record.get('chosen_by')}: {record.get('chosen')} |")
    return lines + ([f"Why: {why}"] if why else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "results/gpu-check",
                        help="where summary.md and gpu-check.tar.gz go (nothing else: a GPU run returns few files)")
    parser.add_argument("--work", default="/tmp/gdslab-gpu-check", help="logs, tables and figures, packed as they come")
    parser.add_argument("--size", default=None, help="checkpoint size (default 2GiB; 16MiB with --rehearse)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lab-size", default=None, help="notebooks' GDSLAB_LAB_SIZE (default 64MiB; 32MiB rehearsing)")
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE,
                        help=f"seconds for the whole check, every step's limit cut to it (default {DEFAULT_DEADLINE:.0f})")
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
    ranks = gpus if gpus else 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    py = sys.executable
    os.environ.setdefault("GDSLAB_CHECKPOINTS", "/tmp/gdslab-checkpoints")
    os.environ["PYTHONUNBUFFERED"] = "1"
    ckpt_dir = os.environ["GDSLAB_CHECKPOINTS"]

    def ckpt() -> str:
        try:
            return (work / "checkpoint.txt").read_text().strip().splitlines()[-1]
        except (OSError, IndexError):
            return "missing-checkpoint"

    def gds_load(name: str, *extra: str) -> Spec:
        return Spec(name, lambda: [py, "-m", "gdslab.cli", "load", ckpt(), "--device", device, "--datapath", "gds",
                                   "--cold", "--threads", "8", "--io-size", "8MiB", "--record",
                                   str(work / f"{name}.json"), *extra], 90,
                    before=copy_file(NVFS_STATS, work / f"{name}-nvfs-before.txt"),
                    after=lambda: (copy_file(NVFS_STATS, work / f"{name}-nvfs-after.txt")(),
                                   copy_file(ROOT / "cufile.log", work / f"{name}-cufile.log")()))

    def auto_threads(scale: float) -> str:
        """The threads the policy chose for gds-auto, scaled (one sweep point either side of it)."""
        try:
            chosen = int(json.loads((work / "gds-auto.json").read_text())["threads"])
        except (OSError, ValueError, KeyError, TypeError):
            chosen = 8
        return str(max(1, round(chosen * scale)))

    def gds_auto(name: str, scale: float | None) -> Spec:
        """A default gds load (no knob given: the policy chooses), or the same at the policy's threads scaled."""
        def command() -> list[str]:
            knobs = [] if scale is None else ["--threads", auto_threads(scale)]
            return [py, "-m", "gdslab.cli", "load", ckpt(), "--device", device, "--datapath", "gds", "--cold",
                    *knobs, "--record", str(work / f"{name}.json")]
        return Spec(name, command, 60)

    # ordered by value: what the machine is and whether GDS really ran come first
    specs = [
        Spec("env", [py, "-m", "gdslab.cli", "env", "--dir", ckpt_dir, "--json"], 60, stdout=work / "env.json"),
        Spec("checkpoint", [py, "-c", f"from gdslab.synthetic import cached_checkpoint; "
                                      f"print(cached_checkpoint({size!r}, 4))"], 120, stdout=work / "checkpoint.txt"),
        gds_load("strict-gds", "--strict-gds", "--cufile-dir", str(work / "strict-gds")),
        gds_load("gds-default"),
        gds_auto("gds-auto", None), gds_auto("gds-auto-half-threads", 0.5), gds_auto("gds-auto-double-threads", 2.0),
        Spec("floors", lambda: [py, "benchmarks/floor.py", "--device", device, "--size", size, "--shards", "4",
                                "--repeats", str(args.repeats), "--out", str(work / "floors.md"),
                                "--json", str(work / "floors.json")], 240),
        Spec("gpu-tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                           f"--junitxml={work / 'gpu-tests.xml'}", *GPU_TESTS], 240),
        Spec("fill-curves", [py, "benchmarks/fill_curves.py", "--device", device, "--size", size,
                             "--cache", "cold", "--out", str(work / "fill-curves")], 120),
        Spec("notebooks", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
                           "--nbval-cell-timeout=300", f"--junitxml={work / 'notebooks.xml'}", "notebooks"], 300,
             env={"GDSLAB_LAB_SIZE": lab_size}),
        Spec("torchrun", lambda: [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                                  "-m", "gdslab.dist", ckpt(), "--modes", "slice,share",
                                  "--json", str(work / "torchrun.json")], 120),
    ]
    command = " ".join(argv if argv is not None else sys.argv[1:])

    def summarize(steps: list[Step], pending: list[Spec]) -> str:
        try:
            report = json.loads((work / "env.json").read_text())
        except (OSError, ValueError):
            report = {}
        failures = [s for s in steps if s.status != "ok"]
        tests = failed_tests(work / "gpu-tests.xml") + failed_tests(work / "notebooks.xml")
        lines = [
            f"# GPU check{' — REHEARSAL on CPU: plumbing only, no GPU figure' if args.rehearse else ''} "
            f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
            "",
            f"Device: {device_line(work / 'env.json')}",
            f"Command: `bash benchmarks/gpu_check.sh` → `python3 benchmarks/gpu_check.py {command}` (checkpoint "
            f"{size}, 4 shards, {args.repeats} repeats; notebooks at {lab_size}; {ranks} rank(s) through torchrun; "
            f"global deadline {args.deadline:.0f} s)",
            f"Verdict: {report.get('verdict', 'unknown')}",
            f"Took {time.monotonic() - started:.0f} s so far; {len(steps)} of {len(steps) + len(pending)} steps done"
            + (" (the check ended here)" if not pending else "; this summary is rewritten after every step")
            + ". Everything else is in gpu-check.tar.gz.",
            "",
            "## Steps",
            "",
            *steps_table(steps, pending),
            "",
            "## Did GDS really run? (labels from evidence below cuFile; see gdslab/gds_evidence.py)",
            "",
            *gds_lines(work),
            "",
            "## What the policy chose here (gdslab load with no knob), and one point either side",
            "",
            *policy_lines(work),
            "",
            "## Every path, cold and warm, against the floors measured in the same run",
            "",
        ]
        try:
            lines += floors_table(json.loads((work / "floors.json").read_text()))
        except (OSError, ValueError, KeyError) as e:
            lines.append(f"(no table: {e})")
        lines += ["", "## Fill curves (events against sampled device memory)", "", "```",
                  tail(work / "fill-curves.log", 12), "```", "",
                  "## torchrun over every visible GPU (NCCL; gloo when rehearsing)", ""]
        if ranks == 1:
            lines += ["With one GPU, world=1: NCCL initialises but no collective moves a byte between GPUs, "
                      "so this exercises no collective (share mode's scatter is a local copy).", ""]
        lines += ["```", tail(work / "torchrun.log", 8), "```", ""]
        if failures or tests:
            lines += ["## What failed", ""]
            lines += [f"- {name}" for name in tests]
            for s in failures:
                lines += [f"- step {s.name}: {s.status}", "", "```", tail(s.log), "```", ""]
        elif not pending:
            lines += ["Nothing failed."]
        return "\n".join(lines) + "\n"

    steps = drive(specs, work, out, args.deadline, summarize, started)
    print((out / "summary.md").read_text())
    failed = [s for s in steps if s.status != "ok"]
    return 1 if failed or failed_tests(work / "gpu-tests.xml") or failed_tests(work / "notebooks.xml") else 0


if __name__ == "__main__":
    sys.exit(main())

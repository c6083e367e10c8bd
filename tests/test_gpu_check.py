"""benchmarks/gpu_check.sh: it fails fast and clearly where there is no GPU; its summary pieces."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up by name
spec.loader.exec_module(gpu_check)

no_gpu = pytest.mark.skipif(torch.cuda.is_available() or Path("/dev/nvidia0").exists(),
                            reason="this machine has a GPU: the check would run")


@no_gpu
def test_the_shell_script_stops_at_once_without_a_gpu():
    start = time.monotonic()
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and time.monotonic() - start < 60
    assert "cannot run here: no NVIDIA GPU" in done.stderr


@no_gpu
def test_the_driver_names_what_is_missing(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no CUDA GPU here" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written that could pass for a result


def test_floors_table_has_ratios_to_both_ceilings():
    records = [
        {"method": "H2D ceiling (pinned)", "cache_asked": "cold", "gbps": 50.0, "effective": "H2D ceiling (pinned)"},
        {"method": "H2D ceiling (pageable)", "cache_asked": "cold", "gbps": 20.0, "effective": "x"},
        {"method": "gds", "cache_asked": "cold", "gbps": 10.0, "effective": "gds: compatibility mode: POSIX 100.0%"},
        {"method": "gds", "cache_asked": "cold", "gbps": 30.0, "effective": "gds: compatibility mode: POSIX 100.0%"},
    ]
    table = gpu_check.floors_table(records)
    row = next(line for line in table if line.startswith("| gds |"))
    assert row == "| gds | cold | 20.00 | 0.40× | 1.00× | gds: compatibility mode: POSIX 100.0% |"


def test_failed_tests_are_read_from_junit(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="tests.a" name="ok"/>'
                   '<testcase classname="tests.a" name="bad"><failure message="x"/></testcase>'
                   '<testcase classname="nb" name="Cell 3"><error message="y"/></testcase></testsuite></testsuites>')
    assert gpu_check.failed_tests(xml) == ["tests.a::bad", "nb::Cell 3"]
    assert gpu_check.failed_tests(tmp_path / "missing.xml") == []


# --- the driver: one deadline, results written after every step --------------------------------


def _alive(pid: int) -> bool:
    """Running, not gone and not a zombie: an orphan killed with its group is reparented to PID 1, which in
    some containers never reaps it, so `kill(pid, 0)` alone would still find it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_the_driver_keeps_every_finished_step_when_a_step_is_killed(tmp_path):
    """A fake step list under a 20 s deadline: a quick step, one that would run a minute (with a child of
    its own), one after it. The slow step's whole process group is killed at the deadline, the last is
    not started, and summary.md and the archive hold what finished."""
    import os
    import tarfile

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    child = tmp_path / "child.pid"
    specs = [
        gpu_check.Spec("quick", [sys.executable, "-c", "print('quick result')"], 30),
        gpu_check.Spec("slow", ["bash", "-c", f"sleep 60 & echo $! > {child}; wait"], 300),
        gpu_check.Spec("after", [sys.executable, "-c", "print('never')"], 30),
    ]

    def summarize(steps, pending):
        return "\n".join(["# partial", *gpu_check.steps_table(steps, pending)]) + "\n"

    start = time.monotonic()
    steps = gpu_check.drive(specs, work, out, 20, summarize)
    took = time.monotonic() - start
    assert took < 20  # the deadline held, with time left to pack
    assert [s.status.split(" (")[0] for s in steps] == ["ok", "timed out after 10 s", "not run"]
    pid = int(child.read_text())
    time.sleep(0.2)
    assert not _alive(pid)  # the step's child died with its group
    summary = (out / "summary.md").read_text()
    assert "| quick | ok |" in summary and "| slow | timed out after 10 s (process group killed) |" in summary
    assert "| after | not run (global deadline of 20 s reached) |" in summary
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        names = tar.getnames()
        assert "gpu-check/quick.log" in names and "gpu-check/summary.md" in names
        assert b"quick result" in tar.extractfile("gpu-check/quick.log").read()


def test_a_check_killed_mid_step_leaves_the_summary_of_what_finished(tmp_path):
    """The whole driver killed while its second step runs: summary.md already holds the first step's result."""
    import signal
    import tarfile

    script = tmp_path / "drive.py"
    script.write_text(f"""
import sys, importlib.util
spec = importlib.util.spec_from_file_location("gpu_check", {str(ROOT / 'benchmarks' / 'gpu_check.py')!r})
g = importlib.util.module_from_spec(spec); sys.modules["gpu_check"] = g; spec.loader.exec_module(g)
from pathlib import Path
specs = [g.Spec("first", [sys.executable, "-c", "print('first done')"], 30),
         g.Spec("second", ["sleep", "60"], 60)]
g.drive(specs, Path({str(tmp_path / 'work')!r}), Path({str(tmp_path / 'out')!r}), 20,
        lambda steps, pending: "\\n".join(g.steps_table(steps, pending)) + "\\n")
""")
    (tmp_path / "work").mkdir()
    (tmp_path / "out").mkdir()
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary = tmp_path / "out" / "summary.md"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (summary.exists() and "| first | ok |" in summary.read_text()):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # as a device command's end would
    proc.wait()
    text = summary.read_text()
    assert "| first | ok |" in text and "| second | not run yet |" in text
    with tarfile.open(tmp_path / "out" / "gpu-check.tar.gz") as tar:
        assert "gpu-check/first.log" in tar.getnames()


def test_the_rehearsal_ends_within_its_deadline(tmp_path):
    start = time.monotonic()
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--rehearse", "--deadline", "45", "--out",
                           str(tmp_path / "out"), "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
                          text=True, timeout=90)
    assert time.monotonic() - start < 60
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "REHEARSAL" in summary and "| env | ok |" in summary and "global deadline 45 s" in summary
    assert (tmp_path / "work" / "env.json").read_text().lstrip().startswith("{")  # its own file, JSON only
    assert "not run (global deadline of 45 s reached)" in summary or done.returncode in (0, 1)

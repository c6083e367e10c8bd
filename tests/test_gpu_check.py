"""benchmarks/gpu_check.sh: it fails fast and clearly where there is no GPU; its summary pieces."""

from __future__ import annotations

import importlib.util
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

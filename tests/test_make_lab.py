"""`make lab` starts JupyterLab, also as root (containers, workshop images), and prints the URL to open."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "jupyter").exists(), reason="the lab's .venv has no jupyter")
def test_make_lab_starts_and_prints_its_url(tmp_path):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.Popen(["make", "--no-print-directory", "lab",
                             "LAB_ARGS=--no-browser --ip=127.0.0.1 --port=0 --ServerApp.port_retries=0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            if "http://127.0.0.1:" in line and "/lab" in line:
                break
        text = "".join(seen)
        assert "http://127.0.0.1:" in text, text[-2000:]
        if os.geteuid() == 0:
            assert "--allow-root" in text  # the command make ran says so
        assert "Running as root is not recommended" not in text or "--allow-root" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

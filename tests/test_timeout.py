"""A hang fails one test with its traceback, instead of running until CI's limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_runs_under_a_timeout() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 60 <= int(cfg["timeout"]) <= 600


def test_a_hanging_test_fails_with_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(
        "import time\n\ndef test_hangs():\n    while True:\n        time.sleep(0.05)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=3",
         str(tmp_path / "test_hang.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "Timeout" in proc.stdout and "test_hang.py" in proc.stdout
    assert "1 failed" in proc.stdout

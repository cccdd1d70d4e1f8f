"""Open the HTML reports in headless Chromium: no console errors, and the plots are drawn.

Optional: skipped where Debian's ``chromium`` is not installed (CI has none).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless check needs Chromium (apt-get install chromium)"
)
TAB_BLUE = (31, 119, 180)  # matplotlib's first colour; nothing else on the page uses it


def _screenshot(page: Path, shot: Path, tmp_path: Path) -> str:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr", "--v=0",
        f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def _blue_pixels(shot: Path) -> int:
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    near = np.abs(rgb - np.array(TAB_BLUE, dtype=np.int16)).max(axis=-1) < 12
    return int(near.sum())


def test_compress_report_in_chromium(rendered_run: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    log = _screenshot(rendered_run / "report.html", shot, tmp_path)
    # Page console messages (CSP violations, failed loads, JS errors) are logged as CONSOLE.
    assert ":CONSOLE" not in log, [line for line in log.splitlines() if ":CONSOLE" in line]
    assert shot.is_file()
    assert _blue_pixels(shot) > 2000  # the plots were decoded and drawn, not broken images


def test_console_errors_are_caught(tmp_path: Path) -> None:
    """Control: a page that fetches from the network does show up in the log we check."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'\"></head><body>"
        '<img src="https://example.invalid/x.png"></body></html>',
        encoding="utf-8",
    )
    log = _screenshot(page, tmp_path / "bad.png", tmp_path)
    assert ":CONSOLE" in log and "Content Security Policy" in log
    assert _blue_pixels(tmp_path / "bad.png") == 0

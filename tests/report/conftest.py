"""Fixed report fixtures (hand-made, realistic values), copied into a fresh directory."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def compress_dir(tmp_path: Path) -> Path:
    """A run directory holding only the fixed compress report.json."""
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(FIXTURES / "report.json", d / "report.json")
    return d


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    """A benchmark directory: 3 models x 2 profiles."""
    d = tmp_path / "bench"
    d.mkdir()
    shutil.copy(FIXTURES / "benchmark.json", d / "benchmark.json")
    return d


@pytest.fixture
def edited(tmp_path: Path) -> Callable[[str, Callable[[dict[str, Any]], None]], Path]:
    """``edited("report.json", fn)``: a directory with the fixture changed by ``fn``."""

    def make(name: str, fn: Callable[[dict[str, Any]], None]) -> Path:
        doc = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
        fn(doc)
        d = tmp_path / "edited"
        d.mkdir(exist_ok=True)
        (d / name).write_text(json.dumps(doc), encoding="utf-8")
        return d

    return make


@pytest.fixture(scope="session")
def rendered_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compress fixture rendered once (plots are the slow part), shared read-only."""
    from edgeprune.report import render_run

    d = tmp_path_factory.mktemp("rendered") / "run"
    d.mkdir()
    shutil.copy(FIXTURES / "report.json", d / "report.json")
    paths = render_run(d)
    assert paths == {"report.md": d / "report.md", "report.html": d / "report.html"}
    return d

"""README figures equal what the result files say (they are rendered, never typed)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from readme_figures import render

ROOT = Path(__file__).resolve().parents[2]


def test_readme_blocks_are_rendered_from_the_results() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "stale README figures: run python bench/readme_figures.py"


def test_a_changed_result_changes_the_readme(tmp_path: Path) -> None:
    import json
    import shutil

    shutil.copytree(ROOT / "bench" / "results", tmp_path, dirs_exist_ok=True)
    res = json.loads((ROOT / "bench/results/conformance.json").read_text())
    res["rows"][0]["error"] = "refused for a test"
    (tmp_path / "conformance.json").write_text(json.dumps(res))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "refused for a test" in render(readme, tmp_path)

"""Loading report.json / benchmark.json, and the messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.report import ReportError, load_report, render_benchmark, render_run


def test_loads_compress_and_benchmark(compress_dir: Path, bench_dir: Path) -> None:
    r = load_report(compress_dir)
    assert r["kind"] == "compress" and r["version"] == 1
    assert r["_source"] == str(compress_dir / "report.json")
    b = load_report(bench_dir / "benchmark.json")
    # benchmark.json carries no "kind"; it is recognised by its name and entries.
    assert b["kind"] == "benchmark" and len(b["entries"]) == 6


def test_report_error_is_a_project_error() -> None:
    assert issubclass(ReportError, EdgepruneError)


def test_directory_without_report(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"no report\.json in .*edgeprune compress --out"):
        load_report(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        load_report(tmp_path / "nope")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{\n  "version": 1,\n  "kind": "compress",\n  "goal": {,\n}\n', "line 4, column 12"),
        ("", "line 1, column 1"),
        ('{"version": 1, "kind": "compress", "final": {"accuracy"', "line 1"),
    ],
)
def test_corrupt_json_names_the_line(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "report.json").write_text(text, encoding="utf-8")
    with pytest.raises(ReportError, match=rf"report\.json is corrupt \({where}"):
        load_report(tmp_path)


def test_top_level_not_an_object(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ReportError, match=r"is corrupt .*top level is a list"):
        load_report(tmp_path)


def test_unsupported_version(edited) -> None:  # type: ignore[no-untyped-def]
    d = edited("report.json", lambda r: r.update(version=2))
    with pytest.raises(ReportError, match="report version 2, this edgeprune reads version 1"):
        load_report(d)
    d = edited("report.json", lambda r: r.pop("version"))
    with pytest.raises(ReportError, match="report version None"):
        load_report(d)


def test_unknown_kind(edited) -> None:  # type: ignore[no-untyped-def]
    d = edited("report.json", lambda r: r.update(kind="prune"))
    with pytest.raises(ReportError, match="unknown kind 'prune'"):
        load_report(d)


def test_missing_fields_are_named(edited) -> None:  # type: ignore[no-untyped-def]
    d = edited("report.json", lambda r: (r["final"].pop("latency"), r.pop("channels")))
    with pytest.raises(ReportError, match=r"missing 'final\.latency', 'channels'"):
        load_report(d)


def test_latency_of_another_profile(edited) -> None:  # type: ignore[no-untyped-def]
    d = edited("report.json", lambda r: r["profile"].update(name="cpu-ort-2t"))
    msg = r"baseline\.latency has no entry for profile 'cpu-ort-2t'"
    with pytest.raises(ReportError, match=msg):
        load_report(d)


def test_latency_without_times(edited) -> None:  # type: ignore[no-untyped-def]
    d = edited("report.json", lambda r: r["final"]["latency"]["cpu-ort-1t"].pop("times_ms"))
    with pytest.raises(ReportError, match=r"final\.latency\['cpu-ort-1t'\] lacks latency"):
        load_report(d)


def test_bad_benchmark_entries(edited) -> None:  # type: ignore[no-untyped-def]
    d = edited("benchmark.json", lambda b: b.update(entries=[]))
    with pytest.raises(ReportError, match="no benchmark entries"):
        load_report(d)
    d = edited("benchmark.json", lambda b: b["entries"][2].pop("speedup_vs_first"))
    with pytest.raises(ReportError, match="entry 2 lacks one of"):
        load_report(d)


def test_render_run_and_benchmark_want_their_own_file(compress_dir: Path, bench_dir: Path) -> None:
    with pytest.raises(ReportError, match=r"no report\.json in .*edgeprune compress --out"):
        render_run(bench_dir)
    with pytest.raises(ReportError, match=r"no benchmark\.json in .*edgeprune benchmark"):
        render_benchmark(compress_dir)
    with pytest.raises(ReportError, match="is a benchmark report, not a compress one"):
        render_run(bench_dir / "benchmark.json")


def test_cli_report_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no report.json in {tmp_path}" in err
    assert "Traceback" not in err
    (tmp_path / "report.json").write_text('{"version": 1,\n"kind": ', encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "report.json is corrupt (line 2" in err
    assert len(err.strip().splitlines()) == 1

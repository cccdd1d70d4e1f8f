"""A profile for another CPU architecture is marked, warned about, and refused by compress."""

from __future__ import annotations

import platform

import pytest

from edgeprune.cli import main
from edgeprune.profiles import load_profile, represents_this_host


def test_arm64_profile_does_not_represent_an_x86_host(monkeypatch, capsys):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    fits, why = represents_this_host(load_profile("arm64-ort-4t"))
    assert not fits and "aarch64" in why and "edgeprune agent" in why
    assert represents_this_host(load_profile("cpu-ort-1t")) == (True, "")
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "arm64-ort-4t: profile 'arm64-ort-4t' describes an aarch64 device" in out


def test_arm64_profile_represents_an_arm64_host(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "arm64")  # macOS spelling
    assert represents_this_host(load_profile("arm64-ort-4t"))[0]


def test_compress_refuses_a_foreign_profile_unless_allowed(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    code = main(["compress", "--profile", "arm64-ort-4t", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--allow-foreign-profile" in err and "would not represent" in err


@pytest.mark.parametrize("arch", ["x86_64", "AMD64"])
def test_profiles_without_host_arch_run_anywhere(monkeypatch, arch):
    monkeypatch.setattr(platform, "machine", lambda: arch)
    assert represents_this_host(load_profile("cpu-ort-2t"))[0]

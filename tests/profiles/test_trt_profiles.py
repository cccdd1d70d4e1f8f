"""Shipped TensorRT / Jetson profiles: they validate, name their power mode, and say where
they cannot run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from edgeprune.errors import ProfileError
from edgeprune.profiles import list_profiles, load_profile
from edgeprune.targets.tensorrt import profile_available, profile_problem

TRT_PROFILES = {
    "jetson-orin-nano-trt-fp16": "fp16",
    "jetson-orin-nx-trt-int8": "int8",
    "jetson-agx-orin-trt-fp16": "fp16",
    "jetson-agx-orin-dla-trt-fp16": "fp16",
    "jetson-xavier-nx-trt-fp16": "fp16",
    "x86-gpu-trt-fp16": "fp16",
}


def test_all_trt_profiles_ship() -> None:
    shipped = {p.name for p in list_profiles() if p.runtime == "tensorrt"}
    assert shipped == set(TRT_PROFILES)


@pytest.mark.parametrize(("name", "precision"), sorted(TRT_PROFILES.items()))
def test_profile_fields(name: str, precision: str) -> None:
    p = load_profile(name)
    assert p.runtime == "tensorrt" and p.precision == precision
    assert p.tensorrt is not None and p.tensorrt.workspace_mb >= 256
    assert p.tensorrt.data_transfers  # figures include H2D/D2H unless a profile says not
    assert p.measurement.min_duration_ms >= 3000  # trtexec's default duration
    if name.startswith("jetson-"):
        assert p.power is not None and p.power.nvpmodel is not None
        assert p.power.nvpmodel_name and p.power.jetson_clocks
        assert p.tensorrt.jetpack and p.tensorrt.device_tensorrt_version
        assert p.power.nvpmodel_name in p.description  # the report reader sees the mode
    else:
        assert p.power is None


def test_dla_only_where_the_module_has_one() -> None:
    dla = load_profile("jetson-agx-orin-dla-trt-fp16")
    assert dla.tensorrt is not None and dla.tensorrt.dla_core == 0 and dla.tensorrt.gpu_fallback
    assert dla.precision in ("fp16", "int8") and dla.channel_multiple % 16 == 0
    nano = load_profile("jetson-orin-nano-trt-fp16")  # Orin Nano has no DLA
    assert nano.tensorrt is not None and nano.tensorrt.dla_core is None


def test_only_xavier_is_refused_by_profile() -> None:
    for name in TRT_PROFILES:
        problem = profile_problem(load_profile(name))
        if name == "jetson-xavier-nx-trt-fp16":
            assert problem is not None and "TensorRT 8.5" in problem and "JetPack 5.1" in problem
        else:
            assert problem is None, problem
    xavier = load_profile("jetson-xavier-nx-trt-fp16")
    assert "EXPLICIT_BATCH" in xavier.description  # says what differs on 8.5


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here"
)
def test_marked_unavailable_here() -> None:
    for name in TRT_PROFILES:
        ok, reason = profile_available(load_profile(name))
        assert not ok and reason and "\n" not in reason
    ok, reason = profile_available(load_profile("jetson-orin-nano-trt-fp16"))
    assert "tensorrt Python package is not installed" in reason


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custom-trt.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_trt_profile_validation(tmp_path: Path) -> None:
    base = "name: custom-trt\nruntime: tensorrt\nprecision: fp32\n"
    p = load_profile(_write(tmp_path, base + "tensorrt:\n  dla_core: 0\n"))
    assert "DLA runs fp16 or int8 only" in (profile_problem(p) or "")
    with pytest.raises(ProfileError, match=r"tensorrt\.workspace_mbs"):
        load_profile(_write(tmp_path, base + "tensorrt:\n  workspace_mbs: 10\n"))
    with pytest.raises(ProfileError, match=r"tensorrt\.builder_optimization_level"):
        load_profile(_write(tmp_path, base + "tensorrt:\n  builder_optimization_level: 7\n"))
    with pytest.raises(ProfileError, match=r"power\.power_budget_w"):
        load_profile(_write(tmp_path, base + "tensorrt: {}\npower:\n  power_budget_w: 0\n"))
    no_section = load_profile(_write(tmp_path, base))
    assert "no `tensorrt:` section" in (profile_problem(no_section) or "")

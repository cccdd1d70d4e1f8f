"""Device profiles: shipped ones load; bad YAML fails naming the field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from edgeprune.errors import ProfileError
from edgeprune.profiles import DEFAULT_PROFILE, DeviceProfile, list_profiles, load_profile

SHIPPED = sorted(
    Path(p.name).stem
    for p in resources.files("edgeprune.profiles").iterdir()
    if p.name.endswith(".yaml")
)

BASE_YAML = """\
name: my-box
runtime: onnxruntime
batch: 1
input_shape: [3, 32, 32]
onnxruntime:
  intra_op_threads: 1
"""


def _write(tmp_path: Path, text: str, name: str = "custom.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_profiles_all_load() -> None:
    assert DEFAULT_PROFILE in SHIPPED
    assert {"cpu-ort-1t", "cpu-ort-2t"} <= set(SHIPPED)
    loaded = list_profiles()
    assert [p.name for p in loaded] == SHIPPED  # the name inside matches the file name
    for prof in loaded:
        assert isinstance(prof, DeviceProfile)
        assert prof.full_input_shape == (prof.batch, *prof.input_shape)
        assert prof.measurement.min_iters >= 1


def test_cpu_ort_1t_values() -> None:
    prof = load_profile("cpu-ort-1t")
    assert prof.runtime == "onnxruntime"
    assert prof.onnxruntime.intra_op_threads == 1
    assert prof.onnxruntime.execution_provider == "CPUExecutionProvider"
    assert prof.full_input_shape == (1, 3, 32, 32)


def test_yaml_path_loads_and_name_defaults_to_stem(tmp_path: Path) -> None:
    prof = load_profile(_write(tmp_path, BASE_YAML))
    assert prof.name == "my-box"
    nameless = BASE_YAML.replace("name: my-box\n", "")
    assert load_profile(str(_write(tmp_path, nameless, "edge-7.yaml"))).name == "edge-7"


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        (BASE_YAML + "batchsize: 2\n", "batchsize"),
        (BASE_YAML.replace("intra_op_threads: 1", "intra_threads: 2"), "onnxruntime.intra_threads"),
    ],
)
def test_unknown_field_is_named(tmp_path: Path, yaml_text: str, field: str) -> None:
    with pytest.raises(ProfileError, match=f"field '{field}'"):
        load_profile(_write(tmp_path, yaml_text))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("batch: 1", "batch: 0", "batch"),
        ("intra_op_threads: 1", "intra_op_threads: -1", "onnxruntime.intra_op_threads"),
        ("input_shape: [3, 32, 32]", "input_shape: [3, 0, 32]", "input_shape"),
        ("input_shape: [3, 32, 32]", "input_shape: [3, 32]", "input_shape.2"),
        ("runtime: onnxruntime", "runtime: tflite", "runtime"),
    ],
)
def test_bad_value_is_named(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = BASE_YAML.replace(old, new)
    assert text != BASE_YAML
    with pytest.raises(ProfileError, match=f"field '{field}'"):
        load_profile(_write(tmp_path, text))


def test_unknown_name_lists_shipped() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("cpu-ort-99t")
    msg = str(info.value)
    assert "cpu-ort-99t" in msg
    for name in SHIPPED:
        assert name in msg


def test_not_a_mapping_and_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="mapping"):
        load_profile(_write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(_write(tmp_path, "name: [unclosed\n", "broken.yaml"))

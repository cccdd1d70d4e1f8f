"""Device profiles: shipped YAMLs by name, or a user's YAML by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from edgeprune.errors import ProfileError
from edgeprune.profiles.schema import (
    DeviceProfile,
    MeasurementSettings,
    OrtSettings,
    PowerSettings,
    RemoteSettings,
    TensorRTSettings,
)

__all__ = [
    "DEFAULT_PROFILE",
    "DeviceProfile",
    "MeasurementSettings",
    "OrtSettings",
    "PowerSettings",
    "RemoteSettings",
    "TensorRTSettings",
    "list_profiles",
    "load_profile",
]

DEFAULT_PROFILE = "cpu-ort-1t"


def _shipped() -> dict[str, Path]:
    root = resources.files("edgeprune.profiles")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def list_profiles() -> list[DeviceProfile]:
    """All shipped profiles, sorted by name."""
    return [load_profile(name) for name in sorted(_shipped())]


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a shipped profile by name, or a YAML file by path.

    Raises:
        ProfileError: unknown name, unreadable file, or a field that does not validate
            (the message names the field).
    """
    text_ref = str(name_or_path)
    shipped = _shipped()
    if text_ref in shipped:
        path = shipped[text_ref]
    else:
        path = Path(text_ref)
        if not path.is_file():
            raise ProfileError(
                f"unknown profile '{text_ref}': not a shipped profile nor a YAML file; "
                f"shipped: {', '.join(sorted(shipped))} (see `edgeprune profiles`)"
            )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read profile {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path} must be a YAML mapping of fields")
    raw.setdefault("name", path.stem)
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        # Show the offending value, except for whole mappings (unknown-field errors) where
        # the field name says it all.
        bad = first.get("input")
        got = "" if isinstance(bad, dict) else f" (got {_short(bad)})"
        more = len(exc.errors()) - 1
        also = f" ({more} more field error{'s' if more > 1 else ''} after it)" if more else ""
        raise ProfileError(
            f"profile {path}: field '{field}': {first['msg']}{got}{also}; "
            f"fix the field (schema in edgeprune/profiles/schema.py)"
        ) from exc


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

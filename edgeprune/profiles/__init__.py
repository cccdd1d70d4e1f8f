"""Device profiles: shipped YAMLs by name, or a user's YAML by path."""

from __future__ import annotations

import platform
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
    "represents_this_host",
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


_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def _arch(name: str) -> str:
    n = name.strip().lower()
    return _ARCH_ALIASES.get(n, n)


def represents_this_host(profile: DeviceProfile) -> tuple[bool, str]:
    """Whether measuring ``profile`` here measures the device it describes.

    A remote profile measures on its agents, a profile without ``host_arch`` describes any
    machine; otherwise the architectures must match.

    Returns:
        (True, "") or (False, why, with what to do instead).
    """
    if profile.remote is not None or profile.host_arch is None:
        return True, ""
    here = _arch(platform.machine())
    if here == _arch(profile.host_arch):
        return True, ""
    return False, (
        f"profile '{profile.name}' describes an {profile.host_arch} device but this host is "
        f"{here}: measured here, its figures would not represent that device; run `edgeprune "
        "agent` on the device and measure through it (a profile with `remote:`)"
    )

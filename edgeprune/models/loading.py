"""Loading user models: ``module:factory`` imports and state_dict files.

Weights are read with ``torch.load(..., weights_only=True)``; a whole pickled ``nn.Module``
runs arbitrary code when unpickled, so it is refused unless the caller passes
``trust_pickle=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import torch
from torch import nn

from edgeprune.errors import ModelError

_WRAPPER_KEYS = ("state_dict", "model")
_DDP_PREFIX = "module."
_MAX_LISTED_KEYS = 5
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def import_factory(spec: str) -> Callable[..., Any]:
    """Resolve ``"package.module:factory"`` (or ``"path/to/file.py:factory"``) to a callable.

    Args:
        spec: Module and attribute separated by one colon.

    Returns:
        The callable named by ``spec``.

    Raises:
        ModelError: The spec is malformed, the module does not import, or the attribute is
            missing or not callable.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ModelError(
            f"model {spec!r} is neither a zoo name nor 'package.module:factory' — "
            "use a zoo name (edgeprune models) or point at a factory function"
        )
    module = _import_module(module_name, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(
                f"module {module_name!r} has no attribute {attr!r} (from {spec!r}) — "
                "check the factory name after the colon"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(
            f"{spec!r} is a {type(obj).__name__}, not a callable — "
            "point at a function or class that returns an nn.Module"
        )
    return cast(Callable[..., Any], obj)


def _import_module(module_name: str, spec: str) -> ModuleType:
    if module_name.endswith(".py"):
        return _import_file(Path(module_name), spec)
    cwd = os.getcwd()
    added_cwd = False
    try:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # The console script does not put the working directory on sys.path (unlike
            # `python -m`); users expect `--model mynet:build` to find ./mynet.py.
            if exc.name != module_name.split(".")[0] or cwd in sys.path:
                raise
            sys.path.insert(0, cwd)
            added_cwd = True
            return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if added_cwd:
            sys.path.remove(cwd)
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ModelError(
                f"cannot import module {module_name!r} (from {spec!r}): no such module — "
                "check the spelling, run from its directory or add it to PYTHONPATH"
            ) from exc
        raise ModelError(
            f"module {module_name!r} (from {spec!r}) failed to import: it needs "
            f"{missing!r}, which is not installed — install it into this environment"
        ) from exc
    except Exception as exc:
        if added_cwd:
            sys.path.remove(cwd)
        raise ModelError(
            f"module {module_name!r} (from {spec!r}) raised {type(exc).__name__} on import: "
            f"{_first_line(exc)} — fix the module so that `import {module_name}` works"
        ) from exc


def _import_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise ModelError(f"model file {path} (from {spec!r}) does not exist — check the path")
    name = f"_edgeprune_user_{path.stem}"
    file_spec = importlib.util.spec_from_file_location(name, path)
    if file_spec is None or file_spec.loader is None:
        raise ModelError(f"cannot import {path} (from {spec!r}) — is it a Python file?")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[name] = module
    try:
        file_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ModelError(
            f"{path} (from {spec!r}) raised {type(exc).__name__} on import: {exc} — "
            "fix the file so that it imports cleanly"
        ) from exc
    return module


def build_from_factory(spec: str, num_classes: int) -> nn.Module:
    """Import ``spec`` and call it, passing ``num_classes=`` when its signature accepts it.

    Raises:
        ModelError: The factory cannot be imported, raises, or returns something that is not
            an ``nn.Module``.
    """
    factory = import_factory(spec)
    kwargs = {"num_classes": num_classes} if _accepts_num_classes(factory) else {}
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ModelError(
            f"factory {spec!r} raised {type(exc).__name__}: {exc} — "
            "it must build the model with no arguments other than num_classes"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"factory {spec!r} returned a {type(model).__name__}, not a torch.nn.Module — "
            "return the model instance"
        )
    return model


def _accepts_num_classes(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins / C extensions without a signature
        return False
    return any(
        (p.name == "num_classes" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in params
    )


def read_checkpoint(
    path: Path | str, trust_pickle: bool = False
) -> dict[str, torch.Tensor] | nn.Module:
    """Read a weights file: a state_dict, a dict wrapping one, or (trusted) a pickled module.

    Args:
        path: File written by ``torch.save``.
        trust_pickle: Allow unpickling arbitrary objects (a whole ``nn.Module``). Only for
            files from a trusted source: unpickling can run any code.

    Returns:
        The state_dict (``module.`` prefixes stripped) or, with ``trust_pickle``, the
        unpickled module.

    Raises:
        ModelError: Missing or unreadable file, a pickled module without ``trust_pickle``, or
            contents that are not a state_dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist — check the --weights path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any class it does not know; torch names it in the message.
        found = None if trust_pickle else _UNSAFE_GLOBAL.search(str(exc))
        if found:
            raise ModelError(
                f"{path} holds a pickled module or other Python objects ({found.group(1)}); "
                "pass --trust-pickle if you trust it, or save model.state_dict()"
            ) from exc
        raise ModelError(
            f"cannot read weights file {path}: {_first_line(exc)} — "
            "is it a file written by torch.save?"
        ) from exc
    except Exception as exc:
        raise ModelError(
            f"cannot read weights file {path}: {_first_line(exc)} — "
            "is it a file written by torch.save, and complete?"
        ) from exc
    if isinstance(obj, Mapping):  # e.g. {"model": <pickled module>, "epoch": 3}
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), nn.Module)), None)
        obj = inner if inner is not None else obj
    if isinstance(obj, nn.Module):
        return obj
    return _extract_state_dict(obj, path)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters (torch's are long)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(
            f"{path} holds a {type(obj).__name__}, not a state_dict — "
            "save model.state_dict() (or a dict with a 'state_dict' key)"
        )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"{path} is not a state_dict: entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, "
            "not a tensor — save model.state_dict() (or a dict with a 'state_dict' key)"
        )
    # Checkpoints saved from a DistributedDataParallel wrapper prefix every key.
    if all(str(k).startswith(_DDP_PREFIX) for k in obj):
        return {str(k)[len(_DDP_PREFIX) :]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def load_weights_(
    model: nn.Module,
    path: Path | str,
    *,
    model_name: str | None = None,
    trust_pickle: bool = False,
) -> nn.Module:
    """Load a weights file into ``model`` in place, strictly.

    Args:
        model: The architecture the weights were trained for.
        path: A state_dict file (see :func:`read_checkpoint`).
        model_name: Name used in error messages (defaults to the model's class name).
        trust_pickle: Allow a pickled whole module; its state_dict is copied into ``model``.

    Returns:
        ``model``, for chaining.

    Raises:
        ModelError: The file cannot be read, or its tensors do not fit ``model`` (the first
            tensor with a different shape, or the first few missing/unexpected keys).
    """
    name = model_name or type(model).__name__
    loaded = read_checkpoint(path, trust_pickle=trust_pickle)
    state = loaded.state_dict() if isinstance(loaded, nn.Module) else loaded
    check_fits(model, state, name)
    model.load_state_dict(state, strict=True)
    return model


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """Raise :class:`ModelError` unless ``state`` has exactly ``model``'s keys and shapes."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key in state and tuple(state[key].shape) != tuple(tensor.shape):
            hint = (
                "build the model with the num_classes the weights were trained with"
                if key in _classifier_keys(model)
                else "train/export with the same --model"
            )
            raise ModelError(
                f"weights do not fit {name}: {key} is {_shape(state[key])} in the file, "
                f"{_shape(tensor)} in the model — {hint}"
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise ModelError(
            f"weights do not fit {name}: {'; '.join(parts)} — train/export with the same --model"
        )


def _classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the last ``nn.Linear``: a mismatch there means another num_classes."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return set()
    prefix = f"{linears[-1][0]}." if linears[-1][0] else ""
    return {prefix + k for k, _ in linears[-1][1].named_parameters()}


def _shape(t: torch.Tensor) -> str:
    return "[" + ",".join(str(d) for d in t.shape) + "]"


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return f"{len(keys)} key(s): {shown}" + (f" (+{more} more)" if more > 0 else "")

"""Shared fixtures and the skip logic for the gpu / tensorrt markers."""

from __future__ import annotations

import importlib.util

import pytest
import torch

torch.set_num_threads(1)  # 2 threads ran ~10x slower on a loaded 2-core box


def _cuda_reason() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device on this machine"


def _tensorrt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt Python package not installed (needs an NVIDIA GPU / Jetson)"
    return _cuda_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu, trt = _cuda_reason(), _tensorrt_reason()
    for item in items:
        if "gpu" in item.keywords and gpu:
            item.add_marker(pytest.mark.skip(reason=gpu))
        if "tensorrt" in item.keywords and trt:
            item.add_marker(pytest.mark.skip(reason=trt))

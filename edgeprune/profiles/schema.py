"""Device profile schema: where and how a model's latency is measured.

A profile is a YAML file validated by :class:`DeviceProfile`. Unknown fields are errors
(a typo must not silently fall back to a default). Units live in field names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeasurementSettings(_Strict):
    """How long to warm up and measure. Stop when both minimums are met (trtexec-style)."""

    warmup_iters: int = Field(10, ge=0, description="Warm-up iterations before timing.")
    warmup_ms: float = Field(200.0, ge=0, description="Minimum warm-up wall time, ms.")
    min_iters: int = Field(50, ge=1, description="Minimum timed iterations.")
    min_duration_ms: float = Field(1000.0, ge=0, description="Minimum timed wall time, ms.")
    max_iters: int = Field(100_000, ge=1, description="Hard cap on timed iterations.")
    blocks: int = Field(
        5, ge=1, description="Interleaved blocks when comparing models on a noisy machine."
    )
    percentiles: tuple[float, ...] = Field(
        (50.0, 90.0, 95.0, 99.0), description="Percentiles reported (nearest rank)."
    )
    statistic: Literal["p50", "mean", "p10", "min", "min_block_median", "trimmed_median"] = Field(
        "min",
        description="The figure the search and the budget check act on (see "
        "edgeprune/targets/stats.py). Default chosen by bench/bench_latency_stat.py on the "
        "shared 2-core dev host: min, pinned, varied 1.1% at worst between runs, idle or "
        "beside a training job; p50 varied up to 37% (narrow models ran bimodal).",
    )
    pin_core: bool = Field(
        True,
        description="Pin the measuring thread to one core while it measures (Linux; measured "
        "to help: see statistic).",
    )
    settle_tolerance: float = Field(
        0.03,
        gt=0,
        lt=1,
        description="The start measurement warms up until two consecutive blocks' medians "
        "agree within this fraction.",
    )
    settle_max_blocks: int = Field(12, ge=0, description="Most warm-up blocks spent settling.")
    disturbed_dispersion: float = Field(
        1.3,
        ge=1,
        description="An interleaved block is disturbed when either model's median over its "
        "fastest iteration in that block exceeds this (a neighbour took the core for part of "
        "it): such a pair is retaken. On the 2-core dev host 1.3 flagged 0-8% of the block pairs "
        "pinned and 6-20% unpinned, idle or beside a training job "
        "(bench/bench_latency_stat.py).",
    )
    max_retakes: int | None = Field(
        None,
        ge=0,
        description="Most disturbed block pairs retaken per comparison (None: as many as "
        "the comparison has blocks); past it, disturbed blocks are kept and counted.",
    )
    cov_warning: float = Field(
        0.15, gt=0, description="Warn when a measurement's coefficient of variation exceeds it."
    )

    @field_validator("percentiles")
    @classmethod
    def _pct_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        for p in v:
            if not 0 < p <= 100:
                raise ValueError(f"percentile {p} is outside (0, 100]")
        return v


class OrtSettings(_Strict):
    """onnxruntime session settings."""

    execution_provider: str = Field("CPUExecutionProvider", description="ORT EP name.")
    intra_op_threads: int = Field(1, ge=0, description="0 = onnxruntime's default.")
    inter_op_threads: int = Field(1, ge=0, description="Used only with parallel execution.")
    allow_spinning: bool = Field(True, description="session.intra_op.allow_spinning.")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    int8_recipe: str = Field(
        "ort-u8s8-qdq",
        description="Quantization recipe of INT8 profiles (edgeprune.calibration.int8.RECIPES;"
        " bench/bench_int8.py measures them on a CPU).",
    )


class TensorRTSettings(_Strict):
    """TensorRT builder and runtime settings (see targets/tensorrt.py)."""

    workspace_mb: int = Field(1024, ge=16, description="Builder workspace memory pool, MiB.")
    builder_optimization_level: int = Field(3, ge=0, le=5)
    dla_core: int | None = Field(None, ge=0, description="DLA core, with GPU fallback.")
    cuda_graph: bool = False
    data_transfers: bool = Field(True, description="Include H2D/D2H in Latency.")
    spin_wait: bool = False
    min_tensorrt_version: str = Field("10.0", description="Oldest TensorRT accepted.")
    gpu_fallback: bool = Field(True, description="With dla_core: run DLA-less layers on the GPU.")
    timing_cache: bool = Field(True, description="Save/reuse the builder's timing cache.")
    jetpack: str | None = Field(None, description="JetPack the device runs, e.g. '6.2'.")
    device_tensorrt_version: str | None = Field(
        None, description="TensorRT the device ships (JetPack 6.x: 10.3); < 10 is refused."
    )


class PowerSettings(_Strict):
    """Jetson power state the figures assume; recorded in reports."""

    nvpmodel: int | None = Field(
        None, description="nvpmodel -m mode id (ids differ per module and JetPack)."
    )
    nvpmodel_name: str | None = Field(
        None, description="Mode name `nvpmodel -q` must report; the authority over the id."
    )
    jetson_clocks: bool = Field(False, description="Run `sudo jetson_clocks` before measuring.")
    power_budget_w: float | None = Field(None, gt=0, description="Module power of the mode, W.")


class RemoteSettings(_Strict):
    """Measure on an `edgeprune agent` instead of locally."""

    urls: tuple[str, ...] = Field(..., min_length=1, description="Agent base URLs (a pool).")
    token_env: str = Field("EDGEPRUNE_AGENT_TOKEN", description="Env var holding the token.")
    timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(3, ge=0)


class DeviceProfile(_Strict):
    """One device + runtime + precision to measure latency on."""

    name: str
    description: str = ""
    device: str = Field("", description="Hardware class, e.g. 'x86-64 CPU', 'Jetson Orin Nano'.")
    runtime: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    batch: int = Field(1, ge=1)
    input_shape: tuple[int, int, int] = Field((3, 32, 32), description="C, H, W.")
    latency_budget_ms: float | None = Field(None, gt=0)
    channel_multiple: int = Field(
        1, ge=1, description="Round pruned channel counts to this (calibration may learn it)."
    )
    host_arch: str | None = Field(
        None,
        description="CPU architecture (platform.machine(), e.g. aarch64) of the device a local "
        "CPU profile describes; measured on another architecture it does not represent it.",
    )
    measurement: MeasurementSettings = MeasurementSettings()
    onnxruntime: OrtSettings = OrtSettings()
    tensorrt: TensorRTSettings | None = None
    power: PowerSettings | None = None
    remote: RemoteSettings | None = None

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(d < 1 for d in v):
            raise ValueError(f"input_shape {list(v)} must be positive C, H, W")
        return v

    @property
    def full_input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, *self.input_shape)

"""Typed run configuration for ``edgeprune compress``: YAML in and out, versioned.

Defaults are RL-Pruner's numbers scaled for a 2-core CPU (larger steps, fewer samples, a
validation subset; see docs/ARCHITECTURE.md); every one can be changed in the run config.
The searchers' own settings (``RLSettings``) take their defaults from here, so the library,
the CLI and a searcher built directly run the same search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeprune.errors import EdgepruneError, SearchError

CONFIG_VERSION = 2


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    name: str = Field("resnet20", description="zoo name or package.module:factory")
    weights: Path | None = Field(None, description="state_dict; None trains a baseline")
    num_classes: int | None = None
    trust_pickle: bool = False
    baseline_epochs: int = Field(15, ge=1, description="epochs when training a baseline")


class DataConfig(_Section):
    source: str = Field("digits", description="data path, .tar.gz, .npz or 'digits'")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    limit: int | None = Field(None, ge=10, description="cap on training images (smoke runs)")
    seed: int = 0
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory: decode the set into one tensor (cached); stream: read an "
        "ImageFolder per batch with DataLoader workers; auto: stream when the decoded set "
        "would exceed memory_limit_mb",
    )
    workers: int = Field(2, ge=0, description="DataLoader worker processes when streaming")
    memory_limit_mb: float = Field(
        4096, gt=0, description="auto streams sets whose decoded images exceed this"
    )


class GoalConfig(_Section):
    """When to stop pruning: exactly one of these (default: half the baseline latency)."""

    budget_ms: float | None = Field(None, gt=0)
    speedup: float | None = Field(None, gt=1)
    sparsity: float | None = Field(None, gt=0, lt=1)
    flops_ratio: float | None = Field(None, gt=0, lt=1)
    max_steps: int = Field(10, ge=1, description="hard cap on prune steps")

    @model_validator(mode="after")
    def _one_goal(self) -> GoalConfig:
        set_ = [k for k in ("budget_ms", "speedup", "sparsity", "flops_ratio") if getattr(self, k)]
        if len(set_) > 1:
            raise ValueError(f"set only one goal, got {', '.join(set_)}")
        if not set_:
            self.speedup = 2.0
        return self


class RewardConfig(_Section):
    """How the ``rl`` searcher scores candidates (``rl-flops`` always uses ``flops``).

    Every candidate of a step meets the same latency target, so the default reward is the
    proxy accuracy alone; ``latency`` is MnasNet's ``accuracy x (latency/budget)^w``.
    """

    kind: Literal["accuracy", "latency", "flops", "params"] = "accuracy"
    w: float = Field(-0.07, le=0, description="MnasNet exponent on latency/budget")
    mode: Literal["both", "over"] = "both"
    coef: float = Field(0.5, ge=0, description="flops/params reward coefficient")


class SearchConfig(_Section):
    searcher: Literal[
        "rl", "random", "cluster-rl", "rl-flops", "knapsack", "magnitude", "uniform"
    ] = "rl"
    steps: int = Field(3, ge=1, le=50, description="prune steps from the baseline to the goal")
    schedule: Literal["geometric", "linear"] = Field(
        "geometric", description="how the step targets go from the baseline to the goal"
    )
    landing_tolerance: float = Field(
        0.03, gt=0, lt=0.5, description="the last step lands within this fraction below the goal"
    )
    landing_tries: int = Field(4, ge=1, le=20, description="measure/re-plan rounds per step")
    samples: int = Field(6, ge=1, description="candidates per RL epoch")
    rl_epochs: int = Field(3, ge=1, description="RL epochs per step")
    noise: float = Field(0.04, ge=0)
    step_length: float = Field(
        0.5,
        gt=0,
        le=1,
        description="how far the RL policy moves along each epoch's advantage direction "
        "(then PPO-clipped to ppo_clip of itself)",
    )
    ppo_clip: float = Field(0.2, gt=0, lt=1)
    epsilon: float = Field(
        0.0, ge=0, le=1, description="chance to keep a random buffer row (reference: 0.4)"
    )
    epsilon_decay_fraction: float = Field(0.1, gt=0, le=1)
    collapse_drop: float = Field(
        0.1, gt=0, lt=1, description="relative proxy-accuracy drop (before KD) of the guard"
    )
    max_redos: int = Field(
        0,
        ge=0,
        description="redos the collapse guard may ask per step (reference: 1). Off by default: "
        "a latency step is far larger than the reference's 1%-of-channels steps, so a big "
        "drop before KD is expected, and a redo re-scores the same seed plans",
    )
    values: Literal["sensitivity", "criterion"] = Field(
        "sensitivity",
        description="what a group's channels are worth to the knapsack and to every "
        "projection: 'sensitivity' measures each group's proxy drop per step (one proxy "
        "evaluation per group), 'criterion' sums the criterion's scores",
    )
    criterion: Literal["l1", "l2", "taylor", "bn_scale", "random", "cluster"] = Field(
        "l1", description="importance of channels inside a group; every searcher ranks by it"
    )
    ignored_layers: list[str] = Field(
        default_factory=list, description="layers whose output channels are never pruned"
    )
    min_keep: dict[str, float] = Field(
        default_factory=dict,
        description="per-layer limits: layer name -> fraction (0, 1] of its output channels "
        "always kept (the group producing them never goes narrower)",
    )
    channel_multiple: int | None = Field(
        None, ge=1, description="None: from the profile, or discovered by the latency LUT"
    )
    round_to_multiple: bool = True
    use_lut: bool = Field(True, description="LUT-predicted latency for candidates")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="processes scoring a step's candidates at once (forked; results equal "
        "one process's). More than 1 only where cores are free: on a 2-core box timing "
        "runs beside them",
    )
    val_subset: int = Field(1000, ge=50, description="validation images for the proxy")
    bn_batches: int = Field(4, ge=0, description="training batches for BN re-estimation")
    rescore_top: int = Field(
        3,
        ge=0,
        description="a step's best candidates (and the depth choice's best options) by the "
        "proxy re-scored on a disjoint validation draw of the same size before one is kept, "
        "by the mean of both scores "
        "(0: off; needs validation images beyond search.val_subset)",
    )
    depth: Literal["auto", "off"] = Field(
        "auto",
        description="depth pruning for latency goals: 'auto' weighs dropping residual blocks "
        "(replaced by their shortcut) against channels alone, by proxy accuracy at the goal",
    )

    @field_validator("min_keep")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: f for k, f in v.items() if not 0 < f <= 1}
        if bad:
            raise ValueError(f"min_keep fractions must be in (0, 1], got {bad}")
        return v

    @field_validator("depth", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        # YAML reads a bare `off` (`--set search.depth=off`, `depth: off`) as False.
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v

    depth_max_blocks: int | None = Field(
        None, ge=0, description="most residual blocks dropped (None: every droppable block)"
    )
    depth_kd_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="most of finetune.total_epochs the depth options' recoveries may spend, "
        "all options together",
    )
    depth_recovery_images: int = Field(
        4096,
        ge=0,
        description="KD images (at most one epoch) each depth option gets before it is scored: "
        "a pre-recovery proxy on 143 digits images picked 4 blocks and cost 5.6 test points",
    )
    depth_options: int = Field(
        8, ge=2, le=64, description="block counts weighed by the depth choice (0 and max incl.)"
    )
    depth_ties: Literal["fewer", "more"] = Field(
        "fewer",
        description="among block counts whose proxy accuracy is within the depth margin of "
        "the best, 'fewer' keeps the best-scoring one, 'more' the one dropping the most blocks "
        "(wider layers left, which a short recovery under-rates)",
    )
    reward: RewardConfig = RewardConfig()


class FinetuneConfig(_Section):
    """Knowledge-distillation recovery; one budget shared by every searcher."""

    total_epochs: float = Field(
        8.0, ge=0, description="KD epochs in all: per-step recovery plus the final fine-tune"
    )
    step_epochs: float = Field(
        0.25, ge=0, description="KD epochs (fractions allowed) after each prune step"
    )
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(128, ge=1)
    temperature: float = Field(2.0, gt=0)
    kd_weight: float = Field(0.75, ge=0, le=1, description="weight of the KL term; CE gets 1-x")
    weight_decay: float = Field(5e-4, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)


class RunConfig(_Section):
    version: int = CONFIG_VERSION
    seed: int = 0
    profile: str = "cpu-ort-1t"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    goal: GoalConfig = GoalConfig()
    search: SearchConfig = SearchConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    threads: int = Field(
        1, ge=1, description="torch threads (1: two threads ran ~10x slower on a busy 2-core box)"
    )
    input_shape: list[int] | None = Field(
        None,
        min_length=3,
        max_length=3,
        description="(C, H, W) fed to the model, replacing the profile's input_shape (a 224-px "
        "or 640-px model on a Jetson profile)",
    )
    allow_foreign_profile: bool = Field(
        False,
        description="search against a profile whose host_arch is not this machine's (its "
        "measurements would not represent that device)",
    )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: Path) -> RunConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SearchError(f"cannot read run config {path}: {exc}") from exc
        return cls.validate_dict(raw, where=str(path))

    @classmethod
    def validate_dict(cls, raw: dict, where: str = "run config") -> RunConfig:
        if raw.get("version", CONFIG_VERSION) != CONFIG_VERSION:
            raise SearchError(
                f"{where}: config version {raw.get('version')} is not {CONFIG_VERSION}; "
                "re-create it with this edgeprune version"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise SearchError(f"{where}: field '{field}': {first['msg']}") from exc


def set_field(raw: dict[str, Any], path: str, value: Any, *, where: str) -> None:
    """Set ``section.key`` (dotted) of a config dict to ``value``, in place.

    Raises:
        EdgepruneError: a path that names no field of the run config.
    """
    keys = path.split(".")
    node = raw
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            raise EdgepruneError(
                f"{where}: '{k}' is not a section of the run config "
                f"(sections: {', '.join(x for x, v in raw.items() if isinstance(v, dict))})"
            )
        node = node[k]
    if keys[-1] not in node:
        raise EdgepruneError(f"{where}: no field '{keys[-1]}' there (fields: {', '.join(node)})")
    node[keys[-1]] = value

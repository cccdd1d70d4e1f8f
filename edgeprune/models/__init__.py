"""Built-in model zoo (32x32 CIFAR-style, and 224-px ImageNet-style) and loading of user models.

A model is named either by a zoo name (``resnet20``) or by ``"package.module:factory"``
(a callable returning an ``nn.Module``, called with ``num_classes=`` when it accepts it).
Weights come from a state_dict file, loaded with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgeprune.errors import ModelError
from edgeprune.models.densenet import densenet
from edgeprune.models.googlenet import googlenet
from edgeprune.models.imagenet import mobilenetv2_224, resnet18, resnet50
from edgeprune.models.loading import (
    build_from_factory,
    check_fits,
    import_factory,
    load_weights_,
    read_checkpoint,
)
from edgeprune.models.mobilenet import mobilenetv2, mobilenetv3_small
from edgeprune.models.resnet import resnet20, resnet56
from edgeprune.models.vgg import vgg16_bn

ZOO: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "vgg16_bn": vgg16_bn,
    "mobilenetv2": mobilenetv2,
    "mobilenetv3_small": mobilenetv3_small,
    "googlenet": googlenet,
    "densenet": densenet,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenetv2_224": mobilenetv2_224,
}

# Input side each zoo model is built for (the others: 32).
NATIVE_SIZE = {"resnet18": 224, "resnet50": 224, "mobilenetv2_224": 224}

__all__ = [
    "ZOO",
    "ModelSpec",
    "check_fits",
    "create_model",
    "import_factory",
    "load_model",
    "load_weights_",
    "model_names",
    "native_size",
    "read_checkpoint",
]


def model_names() -> list[str]:
    """Names of the built-in zoo models, sorted."""
    return sorted(ZOO)


def native_size(name: str) -> int:
    """Input side a zoo model is built for (32, or 224 for the ImageNet-style ones; 32 for
    names outside the zoo)."""
    return NATIVE_SIZE.get(name, 32)


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a zoo model with freshly initialised weights.

    Args:
        name: A name from :func:`model_names`.
        num_classes: Classifier outputs.

    Raises:
        ModelError: ``name`` is not in the zoo (the message lists the known names).
    """
    factory = ZOO.get(name)
    if factory is None:
        raise ModelError(
            f"unknown model {name!r}; known: {', '.join(model_names())} — "
            "or give your own as 'package.module:factory'"
        )
    return factory(num_classes=num_classes)


@dataclass(frozen=True)
class ModelSpec:
    """Which architecture to build: a zoo name or ``"package.module:factory"``.

    Attributes:
        name: Zoo name or ``"package.module:factory"``.
        num_classes: Classifier outputs.
    """

    name: str
    num_classes: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ModelError("model name is empty — give a zoo name or 'package.module:factory'")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ModelError(
                f"num_classes must be a positive integer, got {self.num_classes!r} — "
                "set it to the number of classes in your data"
            )

    @property
    def is_zoo(self) -> bool:
        """True when ``name`` is a built-in zoo model."""
        return self.name in ZOO

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, inverse of :meth:`from_dict`."""
        return {"name": self.name, "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild a spec written by :meth:`to_dict`.

        Raises:
            ModelError: Missing ``name`` or unknown keys.
        """
        unknown = set(data) - {"name", "num_classes"}
        if "name" not in data or unknown:
            raise ModelError(
                f"bad model spec {dict(data)!r}: expected keys 'name' and 'num_classes' — "
                "the run directory's config may be from another edgeprune version"
            )
        return cls(name=data["name"], num_classes=data.get("num_classes", 10))

    def build(self) -> nn.Module:
        """Build the architecture with fresh weights.

        Raises:
            ModelError: Unknown zoo name or a factory that cannot be imported or called.
        """
        if self.is_zoo:
            return create_model(self.name, self.num_classes)
        if ":" not in self.name:
            return create_model(self.name, self.num_classes)  # raises with the known names
        return build_from_factory(self.name, self.num_classes)


def load_model(
    spec: str | ModelSpec,
    num_classes: int = 10,
    weights: Path | str | None = None,
    trust_pickle: bool = False,
) -> nn.Module:
    """Build a model and, if given, load its weights; the result is in eval mode.

    Args:
        spec: Zoo name, ``"package.module:factory"`` or a :class:`ModelSpec` (whose
            ``num_classes`` then wins).
        num_classes: Classifier outputs, when ``spec`` is a string.
        weights: A state_dict file (or a dict with a ``state_dict``/``model`` key).
        trust_pickle: Accept a file holding a whole pickled module (runs arbitrary code on
            load); that module is returned as is instead of the built architecture.

    Raises:
        ModelError: Unknown model, bad factory, unreadable file, pickled module without
            ``trust_pickle``, or weights that do not fit the architecture.
    """
    model_spec = spec if isinstance(spec, ModelSpec) else ModelSpec(spec, num_classes)
    # Read the file before building so a missing or refused file fails fast.
    loaded = None if weights is None else read_checkpoint(weights, trust_pickle=trust_pickle)
    if isinstance(loaded, nn.Module):
        return loaded.eval()
    model = model_spec.build()
    if loaded is not None:
        check_fits(model, loaded, model_spec.name)
        model.load_state_dict(loaded, strict=True)
    return model.eval()

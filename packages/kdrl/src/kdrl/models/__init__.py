"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``.

Names are presets of three readable architectures (:mod:`.convnet`, :mod:`.resnet`, :mod:`.mlp`). Digits presets
(``digits_*``) take 1×8×8 inputs and 10 classes; ``resnet*`` presets are the CIFAR-style ResNets (3×32×32, 100
classes by default). Keyword overrides go into the architecture's config dataclass (e.g. ``num_classes=10``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .convnet import ConvNet, ConvNetConfig
from .mlp import MLP, MLPConfig
from .resnet import ResNet, ResNetConfig

__all__ = ["create_model", "list_models", "register_model", "ConvNet", "ConvNetConfig", "ResNet", "ResNetConfig",
           "MLP", "MLPConfig"]

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    # embedded digits pool: different architectures and capacities (see README)
    "digits_resnet14": (ResNet, {"in_channels": 1, "num_classes": 10, "depth": 14, "width": 16}),
    "digits_convnet_wide": (ConvNet, {"in_channels": 1, "num_classes": 10, "width": 32, "stages": 2,
                                      "convs_per_stage": 2}),
    "digits_mlp": (MLP, {"in_features": 64, "num_classes": 10, "hidden": [256, 128]}),
    "digits_convnet_tiny": (ConvNet, {"in_channels": 1, "num_classes": 10, "width": 4, "stages": 2,
                                      "convs_per_stage": 1}),
    # CIFAR-style ResNets (RepDistiller / MTKD-RL naming)
    "resnet8": (ResNet, {"depth": 8, "width": 16}),
    "resnet20": (ResNet, {"depth": 20, "width": 16}),
    "resnet32": (ResNet, {"depth": 32, "width": 16}),
    "resnet56": (ResNet, {"depth": 56, "width": 16}),
    "resnet8x4": (ResNet, {"depth": 8, "width": 64}),
    "resnet32x4": (ResNet, {"depth": 32, "width": 64}),
}


def register_model(name: str, factory: Callable[..., nn.Module], **defaults: Any) -> None:
    """Add a preset; ``factory(**defaults, **overrides)`` must return an ``nn.Module`` classifier."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = (factory, dict(defaults))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; unknown names raise ``ValueError`` listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {list_models()} (or pass a timm name with 'timm:')")
    factory, defaults = _REGISTRY[name]
    return factory(**{**defaults, **overrides})

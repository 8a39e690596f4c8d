"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``.

Digits presets (``digits_*``: :mod:`.convnet`, :mod:`.resnet`, :mod:`.mlp`) take 1×8×8 inputs and 10 classes. The
CIFAR presets are RepDistiller's model family with its layer names and widths (:mod:`.cifar_resnet`,
:mod:`.cifar_vgg`, :mod:`.cifar_mobile`; 3×32×32, 100 classes by default): ``resnet8…110``, ``resnet8x4``,
``resnet32x4``, ``wrn_<d>_<k>``, ``vgg8…19``, ``mobilenetv2`` (MTKD-RL's, width 1), ``mobilenetv2_half``
(RepDistiller's ``MobileNetV2``), ``shufflev1``, ``shufflev2``.

Keyword overrides go into the architecture's config dataclass (e.g. ``num_classes=10``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .cifar_mobile import MobileNetV2, ShuffleNetV1, ShuffleNetV2
from .cifar_resnet import CifarResNet, WideResNet
from .cifar_vgg import VGG
from .convnet import ConvNet, ConvNetConfig
from .mlp import MLP, MLPConfig
from .resnet import ResNet, ResNetConfig

__all__ = ["create_model", "list_models", "register_model", "ConvNet", "ConvNetConfig", "ResNet", "ResNetConfig",
           "MLP", "MLPConfig", "CifarResNet", "WideResNet", "VGG", "MobileNetV2", "ShuffleNetV1", "ShuffleNetV2"]

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    # embedded digits pool: different architectures and capacities (see README)
    "digits_resnet14": (ResNet, {"in_channels": 1, "num_classes": 10, "depth": 14, "width": 16}),
    "digits_convnet_wide": (ConvNet, {"in_channels": 1, "num_classes": 10, "width": 32, "stages": 2,
                                      "convs_per_stage": 2}),
    "digits_mlp": (MLP, {"in_features": 64, "num_classes": 10, "hidden": [256, 128]}),
    "digits_convnet_tiny": (ConvNet, {"in_channels": 1, "num_classes": 10, "width": 4, "stages": 2,
                                      "convs_per_stage": 1}),
    # the CIFAR family of RepDistiller / CRD / CA-MKD / MTKD-RL, with their layer names and widths
    **{f"resnet{d}": (CifarResNet, {"depth": d, "num_filters": (16, 16, 32, 64)})
       for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": (CifarResNet, {"depth": 8, "num_filters": (32, 64, 128, 256)}),
    "resnet32x4": (CifarResNet, {"depth": 32, "num_filters": (32, 64, 128, 256)}),
    **{f"wrn_{d}_{k}": (WideResNet, {"depth": d, "widen_factor": k}) for d, k in
       ((16, 1), (16, 2), (40, 1), (40, 2), (28, 4), (10, 2))},
    **{f"vgg{n}": (VGG, {"cfg": c}) for n, c in ((8, "S"), (11, "A"), (13, "B"), (16, "D"), (19, "E"))},
    "mobilenetv2": (MobileNetV2, {"expansion": 6, "width_mult": 1.0}),  # MTKD-RL's MobileNetV2
    "mobilenetv2_half": (MobileNetV2, {"expansion": 6, "width_mult": 0.5}),  # RepDistiller's MobileNetV2
    "shufflev1": (ShuffleNetV1, {}),
    "shufflev2": (ShuffleNetV2, {"net_size": 1}),
    "shufflev2_0_5": (ShuffleNetV2, {"net_size": 0.5}),
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

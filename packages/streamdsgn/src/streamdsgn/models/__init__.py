"""Model registry: ``create_model(name, **overrides)``, ``list_models()``.

``streamdsgn_kitti`` is the paper's configuration, ``streamdsgn_tiny`` the CPU-sized one for the synthetic default, and
the ``*_baseline`` variants remove the streaming components (no feature-flow fusion; the engine then supervises the
current frame and drops the motion loss)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from .config import CLASS_NAMES, AnchorSpec, StreamDSGNConfig
from .streamdsgn import (
    AnchorHead,
    FeatureAlignment,
    Hourglass3D,
    StereoFeatureExtractor,
    StreamDSGNModel,
    VANBackbone,
    build_dps_cost_volume,
    feature_similarity,
    flow_from_similarity,
    plane_channel_offsets,
    warp_bev,
)

__all__ = ["StreamDSGNConfig", "AnchorSpec", "CLASS_NAMES", "StreamDSGNModel", "StereoFeatureExtractor",
           "FeatureAlignment", "VANBackbone", "AnchorHead", "Hourglass3D", "build_dps_cost_volume",
           "plane_channel_offsets", "feature_similarity", "flow_from_similarity", "warp_bev", "create_model",
           "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    _REGISTRY[name] = factory


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; keyword arguments override the named configuration's fields."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {list_models()}")
    return _REGISTRY[name](**overrides)


register_model("streamdsgn_kitti", lambda **kw: StreamDSGNModel(StreamDSGNConfig.kitti(**kw)))
register_model("streamdsgn_tiny", lambda **kw: StreamDSGNModel(StreamDSGNConfig.tiny(**kw)))
register_model("streamdsgn_kitti_baseline",
               lambda **kw: StreamDSGNModel(StreamDSGNConfig.kitti(**{"baseline": True, **kw})))
register_model("streamdsgn_tiny_baseline",
               lambda **kw: StreamDSGNModel(StreamDSGNConfig.tiny(**{"baseline": True, **kw})))

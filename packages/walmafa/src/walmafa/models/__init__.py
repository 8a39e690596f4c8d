"""Model registry: ``create_model(name, **overrides)``, ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from .baseline import RetinexUNet, RetinexUNetConfig
from .walmafa import (
    FFAB,
    WMB,
    WalMaFa,
    WalMaFaConfig,
    checkpoint_filter_fn,
    load_released_checkpoint,
    released_config_from_state_dict,
)

__all__ = ["WalMaFa", "WalMaFaConfig", "FFAB", "WMB", "RetinexUNet", "RetinexUNetConfig", "create_model",
           "list_models", "register_model", "checkpoint_filter_fn", "released_config_from_state_dict",
           "load_released_checkpoint"]

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


# released training/test configuration (dim 16, blocks [2,3,4]); Mamba on the high bands as in the code
register_model("walmafa", lambda **kw: WalMaFa(WalMaFaConfig(**kw)))
# the paper's variant: Mamba on the LL band
register_model("walmafa_paper", lambda **kw: WalMaFa(WalMaFaConfig(**{"mamba_on": "low", **kw})))
# the released class's own defaults (dim 32, blocks [1,2,4])
register_model("walmafa_classdefault",
               lambda **kw: WalMaFa(WalMaFaConfig(**{"dim": 32, "num_blocks": (1, 2, 4), **kw})))
# a small U-Net with a Retinex-style illumination branch, the benchmark's baseline
register_model("retinex_unet", lambda **kw: RetinexUNet(RetinexUNetConfig(**kw)))

"""Teacher-weighting strategies: ``create_strategy(name, **kw)`` and ``list_strategies()``."""

from __future__ import annotations

from typing import Any

from .base import DistillContext, StudentStep, WeightingStrategy
from .mmkd import MMKD, FeatureWeightNet, HardBuffer, LogitsWeightNet
from .mtkd_rl import MTKDRL, TeacherWeightingAgent, build_state, standardized_reward
from .simple import Average, ConfidenceAware, EntropyBased, GradientSpace, NoKD, confidence_weights

__all__ = ["DistillContext", "StudentStep", "WeightingStrategy", "MMKD", "LogitsWeightNet", "FeatureWeightNet",
           "HardBuffer", "MTKDRL", "TeacherWeightingAgent", "build_state",
           "standardized_reward", "Average", "ConfidenceAware", "EntropyBased", "GradientSpace", "NoKD",
           "confidence_weights", "create_strategy", "list_strategies"]

_STRATEGIES: dict[str, type[WeightingStrategy]] = {
    "student": NoKD,
    "aver": Average,
    "camkd": ConfidenceAware,
    "ebkd": EntropyBased,
    "aekd": GradientSpace,
    "mtkd_rl": MTKDRL,
    "mmkd": MMKD,
}


def list_strategies() -> list[str]:
    return list(_STRATEGIES) + ["mtkd_rl_dynamic", "aver_warmup"]


def create_strategy(name: str, **kwargs: Any) -> WeightingStrategy:
    """``"student"`` (no KD), ``"aver"``, ``"camkd"``, ``"ebkd"``, ``"aekd"``, ``"mmkd"``, ``"mtkd_rl"``,
    ``"mtkd_rl_dynamic"``, and the ablation ``"aver_warmup"`` (AVER with MTKD-RL's all-ones first epoch)."""
    if isinstance(name, WeightingStrategy):
        return name
    if name == "mtkd_rl_dynamic":
        return MTKDRL(dynamic=True, **kwargs)
    if name == "aver_warmup":  # ablation: AVER with MTKD-RL's all-ones first epoch
        return Average(warmup_epochs=1, **kwargs)
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {list_strategies()}")
    return _STRATEGIES[name](**kwargs)

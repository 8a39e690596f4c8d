"""The small feature-extraction interface every network in :mod:`kdrl` goes through.

Distillation needs three things from a classifier for a batch ``x``:

- ``feature_map`` ``[B, C, H, W]``: the last-stage map before global pooling (the official MTKD-RL code's
  ``feat[-2]``), used by feature KD;
- ``embedding`` ``[B, D]``: the pooled penultimate vector (``feat[-1]``), used in the agent's state;
- ``logits`` ``[B, K]``.

:func:`as_feature_classifier` turns any ``nn.Module`` classifier into a :class:`FeatureTap` returning a
:class:`ClassifierOutput`, in this order of preference:

1. the module defines ``forward_with_features(x) -> ClassifierOutput`` (all :mod:`kdrl.models` do);
2. ``feature_layer="dotted.module.path"`` is given: a forward hook captures that module's output during the normal
   ``forward`` (4-D maps are used as they are, 2-D vectors become ``[B, D, 1, 1]`` maps, 3-D token tensors
   ``[B, N, D]`` become ``[B, D, N, 1]``); the embedding is the spatial mean of the map;
3. the module has timm's ``forward_features`` / ``forward_head`` pair: the map is ``forward_features(x)``, the
   embedding ``forward_head(map, pre_logits=True)`` and the logits ``forward_head(map)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["ClassifierOutput", "FeatureTap", "as_feature_classifier"]


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor
    feature_map: torch.Tensor
    embedding: torch.Tensor


def _as_map(t: torch.Tensor, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where} must produce a tensor, got {type(t).__name__}")
    if t.dim() == 4:
        return t
    if t.dim() == 2:
        return t[:, :, None, None]
    if t.dim() == 3:  # tokens [B, N, D] -> [B, D, N, 1]
        return t.transpose(1, 2).unsqueeze(-1)
    raise ValueError(f"{where} must produce a [B,C,H,W], [B,N,D] or [B,D] tensor, got shape {tuple(t.shape)}")


class FeatureTap(nn.Module):
    """Wraps a classifier so that ``forward(x)`` returns a :class:`ClassifierOutput` (see the module docstring)."""

    def __init__(self, module: nn.Module, feature_layer: str | None = None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module classifier, got {type(module).__name__}")
        self.module = module
        self.feature_layer = feature_layer
        self._captured: torch.Tensor | None = None
        if hasattr(module, "forward_with_features") and feature_layer is None:
            self.mode = "native"
        elif feature_layer is not None:
            names = dict(module.named_modules())
            if feature_layer not in names:
                sample = [n for n in names if n][:12]
                raise ValueError(
                    f"feature_layer {feature_layer!r} is not a submodule of {type(module).__name__}; "
                    f"some valid names: {sample}"
                )
            names[feature_layer].register_forward_hook(self._hook)
            self.mode = "hook"
        elif hasattr(module, "forward_features") and hasattr(module, "forward_head"):
            self.mode = "timm"
        else:
            raise ValueError(
                f"cannot find features in {type(module).__name__}: give feature_layer='<dotted submodule name>' "
                "(the last stage before global pooling), define forward_with_features(x), or use a timm model"
            )

    def _hook(self, _module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        self._captured = output

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        if self.mode == "native":
            out = self.module.forward_with_features(x)
            return ClassifierOutput(*out)
        if self.mode == "hook":
            self._captured = None
            logits = self.module(x)
            if self._captured is None:
                raise RuntimeError(f"feature_layer {self.feature_layer!r} did not run during forward")
            fmap = _as_map(self._captured, f"feature_layer {self.feature_layer!r}")
            self._captured = None
            return ClassifierOutput(logits, fmap, fmap.mean(dim=(2, 3)))
        fmap_raw = self.module.forward_features(x)
        emb = self.module.forward_head(fmap_raw, pre_logits=True)
        logits = self.module.forward_head(fmap_raw)
        return ClassifierOutput(logits, _as_map(fmap_raw, "forward_features"), emb.flatten(1))


    def head(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The wrapped classifier's head (global pooling + classifier) applied to a ``[B, C, H, W]`` map, as
        CA-MKD needs it (the official ``distill_seq()[-1]``); uses the module's ``forward_head`` (kdrl models and
        timm models have one)."""
        if not hasattr(self.module, "forward_head"):
            raise ValueError(
                f"{type(self.module).__name__} has no forward_head(feature_map) -> logits method; CA-MKD applies each "
                "teacher's classifier head to the adapted student feature, so it needs one"
            )
        return self.module.forward_head(feature_map)


def as_feature_classifier(module: nn.Module, feature_layer: str | None = None) -> FeatureTap:
    """Return ``module`` wrapped as a :class:`FeatureTap` (unchanged if it already is one)."""
    if isinstance(module, FeatureTap) and feature_layer is None:
        return module
    return FeatureTap(module, feature_layer)

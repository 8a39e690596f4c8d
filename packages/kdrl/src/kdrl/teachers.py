"""A frozen pool of teacher classifiers of any architecture.

``TeacherPool([...])`` takes ``nn.Module`` classifiers, names of :mod:`kdrl.models` presets, or ``"timm:<name>"``
(timm is imported only then). Each teacher is wrapped by :class:`kdrl.features.FeatureTap`, put in eval mode and
frozen; ``pool(x)`` returns one :class:`kdrl.features.ClassifierOutput` per teacher, computed without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .features import ClassifierOutput, FeatureTap, as_feature_classifier
from .models import create_model

__all__ = ["TeacherPool", "TeacherShapes", "resolve_model"]


def resolve_model(spec: nn.Module | str, **kwargs) -> nn.Module:
    """Turn a model spec into a module: an ``nn.Module`` as is, ``"timm:<name>"`` via ``timm.create_model`` (lazy
    import; kwargs such as ``num_classes``/``pretrained`` are passed on), anything else via :func:`create_model`."""
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a teacher/student must be an nn.Module or a model name, got {type(spec).__name__}")
    if spec.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise ImportError(f"{spec!r} needs timm: pip install timm") from None
        return timm.create_model(spec[len("timm:"):], **kwargs)
    return create_model(spec, **kwargs)


@dataclass(frozen=True)
class TeacherShapes:
    """What the pool's outputs look like for one input shape (found by a dry run)."""

    num_classes: int
    map_shapes: tuple[tuple[int, int, int], ...]  # (C, H, W) per teacher
    embed_dims: tuple[int, ...]


class TeacherPool(nn.Module):
    """Frozen teachers. ``feature_layers`` (optional, one entry per teacher, ``None`` for automatic) names the
    submodule whose output is the feature map for teachers that need hooks (see :mod:`kdrl.features`)."""

    def __init__(self, teachers: Sequence[nn.Module | str], feature_layers: Sequence[str | None] | None = None,
                 names: Sequence[str] | None = None):
        super().__init__()
        if isinstance(teachers, (nn.Module, str)) or not isinstance(teachers, Sequence):
            raise TypeError("teachers must be a list of nn.Module classifiers or model names")
        if len(teachers) == 0:
            raise ValueError("teachers must contain at least one teacher")
        if feature_layers is None:
            feature_layers = [None] * len(teachers)
        if len(feature_layers) != len(teachers):
            raise ValueError(f"feature_layers has {len(feature_layers)} entries for {len(teachers)} teachers")
        modules = [resolve_model(t) for t in teachers]
        self.taps = nn.ModuleList(as_feature_classifier(m, fl) for m, fl in zip(modules, feature_layers))
        if names is None:
            names = [t if isinstance(t, str) else f"{type(t).__name__}_{i}" for i, t in enumerate(teachers)]
        if len(names) != len(teachers):
            raise ValueError(f"names has {len(names)} entries for {len(teachers)} teachers")
        self.names = list(names)
        self.freeze()

    def freeze(self) -> TeacherPool:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> TeacherPool:  # teachers always stay in eval mode
        return super().train(False)

    def __len__(self) -> int:
        return len(self.taps)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[ClassifierOutput]:
        return [ClassifierOutput(*(t.detach() for t in tap(x))) for tap in self.taps]

    def teacher(self, i: int) -> FeatureTap:
        return self.taps[i]

    @torch.no_grad()
    def infer_shapes(self, sample: torch.Tensor) -> TeacherShapes:
        outs = self(sample)
        classes = {o.logits.shape[1] for o in outs}
        if len(classes) != 1:
            got = [o.logits.shape[1] for o in outs]
            raise ValueError(f"all teachers must predict the same number of classes, got {got}")
        return TeacherShapes(
            num_classes=classes.pop(),
            map_shapes=tuple(tuple(o.feature_map.shape[1:]) for o in outs),
            embed_dims=tuple(o.embedding.shape[1] for o in outs),
        )

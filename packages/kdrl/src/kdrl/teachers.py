"""A frozen pool of teacher classifiers of any architecture.

``TeacherPool([...])`` takes ``nn.Module`` classifiers, names of :mod:`kdrl.models` presets, or ``"timm:<name>"``
(timm is imported only then). Each teacher is wrapped by :class:`kdrl.features.FeatureTap`, put in eval mode and
frozen; ``pool(x)`` returns one :class:`kdrl.features.ClassifierOutput` per teacher, computed without gradients.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .features import ClassifierOutput, FeatureTap, as_feature_classifier
from .models import create_model

__all__ = ["TeacherPool", "TeacherShapes", "resolve_model", "load_official", "OFFICIAL_ARCHS"]

#: RepDistiller / MTKD-RL ``model_dict`` keys -> kdrl presets (``MobileNetV2`` is width 0.5 in RepDistiller and
#: width 1 in MTKD-RL: :func:`load_official` tells them apart by the stem's width)
OFFICIAL_ARCHS = {
    **{f"resnet{d}": f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": "resnet8x4", "resnet32x4": "resnet32x4",
    **{f"wrn_{d}_{k}": f"wrn_{d}_{k}" for d, k in ((16, 1), (16, 2), (40, 1), (40, 2), (28, 4), (10, 2))},
    **{f"vgg{n}": f"vgg{n}" for n in (8, 11, 13, 16, 19)},
    "MobileNetV2": "mobilenetv2_half", "ShuffleV1": "shufflev1", "ShuffleV2": "shufflev2",
    "ShuffleV2_0_5": "shufflev2_0_5",
}
_CLASSIFIER_KEYS = ("fc.weight", "classifier.weight", "classifier.0.weight", "linear.weight")


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


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:  # never unpickle arbitrary objects: tensors, dicts, lists and numbers only
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any refusal of the restricted loader the same way
        raise ValueError(f"path {str(path)!r} is not a checkpoint torch.load(weights_only=True) can read "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "net"):  # RepDistiller saves {'epoch', 'model', 'best_acc', 'optimizer'}
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"path {str(path)!r} holds no state dict (expected a dict of tensors, or one under "
                         "'model' / 'state_dict' / 'net')")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_official(path: str | os.PathLike, arch: str, num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` and load a RepDistiller/CRD/CA-MKD/MTKD-RL teacher checkpoint into it, strictly.

    ``arch`` is a kdrl preset (``"resnet32x4"``, ``"wrn_40_2"``, ``"mobilenetv2"``, ...) or an official
    ``model_dict`` key (``"ShuffleV2"``, ``"MobileNetV2"``; see :data:`OFFICIAL_ARCHS`). ``path`` is the official
    ``*.pth`` (``torch.save({'model': state_dict, ...})``, read with ``torch.load(weights_only=True)``: nothing is
    unpickled), a bare state dict, or ``.safetensors``; a DataParallel ``module.`` prefix is stripped. The number of
    classes comes from the classifier's weight unless given. Every key and shape must match (the layer names are
    RepDistiller's); the error lists what differs. Returns the model in eval mode.
    """
    from .models import create_model, list_models

    if not isinstance(arch, str):
        raise TypeError(f"arch must be a model name, got {type(arch).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} does not exist or is not a file")
    name = OFFICIAL_ARCHS.get(arch, arch)
    if name not in list_models() or name.startswith("digits_"):
        known = sorted(set(OFFICIAL_ARCHS) | {n for n in list_models() if not n.startswith("digits_")})
        raise ValueError(f"arch {arch!r} is not an official CIFAR architecture; known: {known}")
    state = _read_state(path)
    if arch == "MobileNetV2" and "conv1.0.weight" in state and state["conv1.0.weight"].shape[0] == 32:
        name = "mobilenetv2"  # MTKD-RL's MobileNetV2 (width 1) rather than RepDistiller's mobile_half
    head = next((k for k in _CLASSIFIER_KEYS if k in state), None)
    if num_classes is None:
        if head is None:
            raise ValueError(f"cannot find the classifier in {str(path)!r} (none of {_CLASSIFIER_KEYS}); "
                             "is it a checkpoint of a CIFAR classifier?")
        num_classes = int(state[head].shape[0])
    model = create_model(name, num_classes=num_classes)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        parts = [f"missing {show(missing)}" if missing else "", f"unexpected {show(unexpected)}" if unexpected else "",
                 "wrong shape " + show([f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong])
                 if wrong else ""]
        raise ValueError(f"{str(path)!r} does not match {arch!r} ({name}): " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
    return model.eval()

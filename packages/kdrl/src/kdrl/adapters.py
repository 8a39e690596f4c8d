"""Per-teacher feature adaptors (MTKD-RL official code: ``TransFeat`` + ``Embed``).

For teacher ``m`` the student's last-stage map is first brought to the teacher's spatial size (adaptive average
pooling when the student map is at least as large, bilinear upsampling otherwise), then a 1×1 convolution maps the
student's channels to the teacher's, followed by BatchNorm and ReLU. The adaptors are trained with the student (same
optimiser) and are discarded after training.

Difference from the code (README "Deliberate differences"): ``TransFeat`` reassigns the student map inside its loop,
so each teacher's adaptor sees the map already resized for the previous teacher; here every adaptor resizes the
student's own map (identical when all teacher maps have the same size). The code's conv bias is dropped (BatchNorm
follows it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureAdaptor", "build_adaptors"]


class FeatureAdaptor(nn.Module):
    def __init__(self, student_channels: int, teacher_shape: Sequence[int]):
        super().__init__()
        if len(teacher_shape) != 3:
            raise ValueError(f"teacher_shape must be (C, H, W), got {tuple(teacher_shape)}")
        c_t, h_t, w_t = (int(v) for v in teacher_shape)
        self.target_hw = (h_t, w_t)
        self.embed = nn.Sequential(nn.Conv2d(student_channels, c_t, 1, bias=False), nn.BatchNorm2d(c_t), nn.ReLU())

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        h, w = fmap.shape[2:]
        th, tw = self.target_hw
        if (h, w) != (th, tw):
            if h >= th and w >= tw:
                fmap = F.adaptive_avg_pool2d(fmap, (th, tw))
            else:
                fmap = F.interpolate(fmap, size=(th, tw), mode="bilinear", align_corners=False)
        return self.embed(fmap)


def build_adaptors(student_channels: int, teacher_shapes: Sequence[Sequence[int]]) -> nn.ModuleList:
    return nn.ModuleList(FeatureAdaptor(student_channels, s) for s in teacher_shapes)

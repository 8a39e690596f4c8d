"""CIFAR MobileNetV2, ShuffleNetV1 and ShuffleNetV2 with RepDistiller's layer names (``HobbitLong/RepDistiller``
``models/mobilenetv2.py``, ``ShuffleNetv1.py``, ``ShuffleNetv2.py``; MTKD-RL uses the same files).

- :class:`MobileNetV2` (Sandler et al. 2018, the CIFAR variant of "Route Constrained Optimization"): ``conv1``
  (3×3 stride 2) → ``blocks.0..6`` of inverted residuals (``conv.0..7``) → ``conv2`` (1×1 to 1280) → pool →
  ``classifier.0``. RepDistiller's ``MobileNetV2`` is ``mobile_half`` (width 0.5): preset ``mobilenetv2_half``;
  MTKD-RL's ``MobileNetV2`` is width 1 (``mobilenet``): preset ``mobilenetv2``.
- :class:`ShuffleNetV1` (Zhang et al. 2018): 1×1 stem ``conv1/bn1``, ``layer1..3`` of bottlenecks, ``linear``;
  ``ShuffleV1`` = out planes (240, 480, 960), blocks (4, 8, 4), groups 3.
- :class:`ShuffleNetV2` (Ma et al. 2018): 1×1 stem, ``layer1..3`` = a ``DownBlock`` then ``BasicBlock`` s,
  ``conv2/bn2`` (1×1), ``linear``; ``ShuffleV2`` = net size 1 (116, 232, 464, 1024; blocks 3, 7, 3).

Features (MTKD-RL's ``feat[-2]`` / ``feat[-1]``): MobileNetV2's map is ``blocks[6]``'s output (2×2 at 32×32) and
its embedding the pooled 1280-d ``conv2`` output; ShuffleNetV1's map is ``layer3``'s output, the embedding its mean;
ShuffleNetV2's map is ``layer3``'s output and the embedding the pooled ``conv2/bn2/ReLU`` output. Pooling is a global
mean (the code's fixed ``AvgPool2d`` kernels equal it at 32×32 input). ``in_channels`` (default 3) is an addition.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..features import ClassifierOutput

__all__ = ["MobileNetV2", "ShuffleNetV1", "ShuffleNetV2", "SHUFFLE_V2_CFGS"]


def _init_like_repdistiller(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle ``[N,C,H,W] -> [N,g,C/g,H,W] -> [N,C/g,g,H,W] -> [N,C,H,W]``."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


# ---------------------------------------------------------------------------------------------------- MobileNetV2
class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """RepDistiller ``MobileNetV2(T, feature_dim, width_mult)``."""

    def __init__(self, expansion: int = 6, width_mult: float = 1.0, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        setting = [[1, 16, 1, 1], [expansion, 24, 2, 1], [expansion, 32, 3, 2], [expansion, 64, 4, 2],
                   [expansion, 96, 3, 1], [expansion, 160, 3, 2], [expansion, 320, 1, 1]]
        c_in = int(32 * width_mult)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, c_in, 3, 2, 1, bias=False), nn.BatchNorm2d(c_in),
                                   nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList()
        for t, c, n, s in setting:
            c_out = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(c_in, c_out, stride, t))
                c_in = c_out
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(nn.Conv2d(c_in, self.last_channel, 1, 1, 0, bias=False),
                                   nn.BatchNorm2d(self.last_channel), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.embed_dim = self.last_channel
        _init_like_repdistiller(self)

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.conv2(fmap).mean(dim=(2, 3))

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        out = self.conv1(x)
        for block in self.blocks:
            out = block(out)
        emb = self._pool(out)
        return ClassifierOutput(self.classifier(emb), out, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._pool(fmap))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits


# ---------------------------------------------------------------------------------------------------- ShuffleNetV1
class V1Bottleneck(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = int(out_planes / 4)
        g = 1 if in_planes == 24 else groups
        self.g1 = g
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    def __init__(self, out_planes: tuple[int, int, int] = (240, 480, 960), num_blocks: tuple[int, int, int] = (4, 8, 4),
                 groups: int = 3, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)
        self.embed_dim = out_planes[2]

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(num_blocks):
            cat_planes = self.in_planes if i == 0 else 0
            layers.append(V1Bottleneck(self.in_planes, out_planes - cat_planes, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        fmap = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        emb = fmap.mean(dim=(2, 3))
        return ClassifierOutput(self.linear(emb), fmap, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.linear(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits


# ---------------------------------------------------------------------------------------------------- ShuffleNetV2
SHUFFLE_V2_CFGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.2: ((40, 80, 160, 512), (3, 3, 3)), 0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)), 1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)), 2: ((224, 488, 976, 2048), (3, 7, 3)),
}


class V2BasicBlock(nn.Module):
    def __init__(self, in_channels: int, split_ratio: float = 0.5):
        super().__init__()
        self.split_ratio = split_ratio
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = int(x.size(1) * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return _shuffle(torch.cat([x1, out], 1), 2)


class V2DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        out2 = F.relu(self.bn3(self.conv3(x)))
        out2 = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(out2)))))
        return _shuffle(torch.cat([out1, out2], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, net_size: float = 1, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if net_size not in SHUFFLE_V2_CFGS:
            raise ValueError(f"net_size must be one of {sorted(SHUFFLE_V2_CFGS)}, got {net_size!r}")
        out_channels, num_blocks = SHUFFLE_V2_CFGS[net_size]
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.embed_dim = out_channels[3]

    def _make_layer(self, out_channels: int, num_blocks: int) -> nn.Sequential:
        layers: list[nn.Module] = [V2DownBlock(self.in_channels, out_channels)]
        layers += [V2BasicBlock(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(fmap))).mean(dim=(2, 3))

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        fmap = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        emb = self._pool(fmap)
        return ClassifierOutput(self.linear(emb), fmap, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.linear(self._pool(fmap))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits

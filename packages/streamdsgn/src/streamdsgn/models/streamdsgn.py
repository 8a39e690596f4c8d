"""StreamDSGN (Li et al., "Real-time Stereo-based 3D Object Detection for Streaming Perception", NeurIPS 2024,
arXiv 2410.12394), written from scratch in pure PyTorch. Section references are to the implementation notes
(``walmafa_streamdsgn.md`` part B), which follow the released code ``weiyangdaren/streamDSGN-pytorch``.

Pipeline (one stereo frame → BEV feature; then fusion with the previous frame's BEV → head):

1. :class:`StereoFeatureExtractor` (B1.2): a readable ResNet-18 with the released layout (no max-pool, strides 1,2,1,1,
   dilations 1,1,2,4, widths 64·[1,2,2,2]; outputs 64@1/2 and 3×128@1/4), a PSMNet-style SPP on the last map, and an
   up-sampling path to a full-resolution stereo feature of ``sum(up_dims)`` = 96 channels. The up path is my own
   readable FPN (1/4 → 1/2 with the 1/2 map → full resolution with a shallow full-resolution conv of the image); the
   official ``feature_extraction_neck`` (DSGN++) differs in layer details, not in shapes.
2. :func:`build_dps_cost_volume` (B1.3): the depth-plane-sweep "concat" volume without a CUDA op — per plane ``i`` a
   ``slice_channels`` slice of the left feature at the 1/4 grid (4h, 4w) and the same slice of the right feature
   sampled bilinearly at (4h, 4w − f_u·b/d_i) with ``grid_sample``. The slice offset moves from the first to the last
   channels as the disparity shrinks (my readable version of the official inverse-power (0.1) ``psv_disps_channels``
   mapping, :func:`plane_channel_offsets`).
3. ``dres0``/``dres1`` (B1.4): 1×1×1 conv 2c→32 and a residual 3×3×3 conv.
4. :meth:`StreamDSGN.geometry_volume` (B1.5): voxel centres projected with the calibration (``P2·R_rect·Tr_velo_cam``),
   normalised to the plane-sweep grid and trilinearly sampled (``grid_sample``, ``align_corners=True``), masked by
   in-image / in-depth-range validity; a 1×1×1 conv, one 3D hourglass (:class:`Hourglass3D`, proper skip additions),
   a 4× average pool over height and the reshape to a BEV map of ``volume_channels · nz/4`` = 96 channels (12 z-bins,
   the clean alternative to the released hourglass quirk).
5. Depth head (B1.6, training only): the geometry volume (after the hourglass) sampled back onto the plane-sweep grid
   (:meth:`StreamDSGNModel.psv_grid`, as released; ``depth_from="stereo"`` reads the stereo volume instead), a 3×3×3
   conv stack to one logit per plane, up-sampled to ``num_planes · depth_upsample`` bins at full resolution;
   supervised by :func:`streamdsgn.losses.depth_loss`.
6. :class:`FeatureAlignment` (B2): feature-flow fusion with the previous BEV.
7. :class:`VANBackbone` (B3): large-kernel-attention BEV backbone to 64 channels.
8. :class:`AnchorHead` (B4): 6 anchors per BEV cell, cls / box / direction outputs. Anchors, box coding, assignment and
   decoding live in :mod:`streamdsgn.boxes`.

Sparse alternative (spconv): every 3D convolution here is dense ``nn.Conv3d``, as in the released stereo model (B9:
spconv is used there only to voxelise LiDAR points for the teacher). The one place a sparse 3D stage would pay off is
the geometry volume of step 4: after the validity mask, only voxels inside the camera frustum (about half of the
KITTI grid) and, if one additionally thresholds the predicted depth distribution, only voxels near surfaces carry
information; a submanifold spconv hourglass over those voxels would cut memory and FLOPs of the hourglass. It is not
provided: the dense path is the faithful default, an occupancy threshold would change the model, and spconv could not
be tested on this project's CPU-only hosts.
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import StreamDSGNConfig

logger = logging.getLogger(__name__)

__all__ = ["StreamDSGNModel", "StereoFeatureExtractor", "FeatureAlignment", "VANBackbone", "AnchorHead", "Hourglass3D",
           "build_dps_cost_volume", "plane_channel_offsets", "feature_similarity", "flow_from_similarity",
           "warp_bev", "lidar_to_image_matrices"]


# ---------------------------------------------------------------------------------------------------- 2D features
def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1,
                 relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation, bias=False),
              nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block with dilation; parameter names match torchvision so that its weights load."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class StereoFeatureExtractor(nn.Module):
    """Shared (Siamese) 2D feature extractor, B1.2: ResNet-18 layout + SPP + up path → ``[B, sum(up_dims), H, W]``."""

    def __init__(self, cfg: StreamDSGNConfig):
        super().__init__()
        w = cfg.base_width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)  # stem at 1/2, no max-pool
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        cin, widths = w, []
        for i in range(4):
            cout = w * cfg.width_factors[i]
            blocks = [BasicBlock(cin, cout, cfg.strides[i], cfg.dilations[i])]
            blocks += [BasicBlock(cout, cout, 1, cfg.dilations[i]) for _ in range(cfg.blocks[i] - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
            widths.append(cout)
        self.spp_pools = cfg.spp_pools
        self.spp = nn.ModuleList(conv_bn_relu(widths[3], cfg.spp_channels, 1) for _ in cfg.spp_pools)
        cat = widths[1] + widths[2] + widths[3] + cfg.spp_channels * len(cfg.spp_pools)
        d_half, d_full = cfg.up_dims
        self.lastconv = nn.Sequential(conv_bn_relu(cat, 2 * d_half, 3), conv_bn_relu(2 * d_half, d_half, 1))
        self.up_half = conv_bn_relu(d_half + widths[0], d_half, 3)
        self.image_conv = conv_bn_relu(3, d_full, 3)
        self.up_full = conv_bn_relu(d_half + d_full, d_full, 3)
        self.out_channels = d_half + d_full
        # ImageNet normalisation of inputs in [0, 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        if cfg.pretrained:
            self.load_pretrained(cfg.pretrained)

    def load_pretrained(self, path: str) -> int:
        """Copy the tensors of a local torchvision ``resnet18`` state dict whose names and shapes match (stem,
        layer1, layer2 and the first blocks' shapes that fit); returns how many were loaded. Never downloads."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"pretrained weights {path!r} not found (no download is attempted)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        ok = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(ok, strict=False)
        logger.info("loaded %d/%d tensors from %s", len(ok), len(own), path)
        return len(ok)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = (img - self.mean) / self.std
        full = self.image_conv(x)
        x = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(x)            # 1/2
        c2 = self.layer2(c1)           # 1/4
        c3 = self.layer3(c2)           # 1/4, dilation 2
        c4 = self.layer4(c3)           # 1/4, dilation 4
        h4, w4 = c4.shape[-2:]
        spp = []
        for k, conv in zip(self.spp_pools, self.spp):
            kh, kw = min(k, h4), min(k, w4)
            p = conv(F.avg_pool2d(c4, (kh, kw), (kh, kw)))
            spp.append(F.interpolate(p, (h4, w4), mode="bilinear", align_corners=False))
        f4 = self.lastconv(torch.cat([c2, c3, c4, *spp], 1))
        f2 = self.up_half(torch.cat([F.interpolate(f4, c1.shape[-2:], mode="bilinear", align_corners=False), c1], 1))
        f2_up = F.interpolate(f2, full.shape[-2:], mode="bilinear", align_corners=False)
        f1 = self.up_full(torch.cat([f2_up, full], 1))
        return torch.cat([f2_up, f1], 1)


# ---------------------------------------------------------------------------------------------------- cost volume
def plane_channel_offsets(disparities: torch.Tensor, channels: int, slice_channels: int,
                          inv_ratio: float = 0.1) -> torch.Tensor:
    """Start channel of each plane's slice (B1.3): the largest disparity (nearest plane) reads channels
    ``[0, c)``, the smallest (farthest) ``[C − c, C)``, spaced by ``disparity ** inv_ratio`` in between."""
    shift = channels - slice_channels
    if shift == 0:
        return torch.zeros_like(disparities, dtype=torch.long)
    v = disparities.double().clamp_min(1e-6) ** inv_ratio if inv_ratio > 0 else disparities.double()
    n = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)  # 1 = nearest
    return (shift - torch.floor(n * (shift + 1)).long().clamp(0, shift)).long()


def build_dps_cost_volume(left: torch.Tensor, right: torch.Tensor, disparities: torch.Tensor, offsets: torch.Tensor,
                          slice_channels: int, stride: int = 4) -> torch.Tensor:
    """Depth-plane-sweep concat volume ``[B, 2c, D, H/stride, W/stride]`` (B1.3).

    Args:
        left, right: stereo features ``[B, C, H, W]`` at full resolution.
        disparities: ``[B, D]`` disparity (full-resolution pixels) of each plane, ``f_u·b / d_i``.
        offsets: ``[D]`` start channel of each plane's slice (shared by the batch).
        slice_channels: ``c``.
    Right-feature samples outside the image are zero (``grid_sample`` zero padding)."""
    if left.shape != right.shape or left.ndim != 4:
        raise ValueError(f"left/right must be equal [B, C, H, W], got {tuple(left.shape)} and {tuple(right.shape)}")
    b, _, h, w = left.shape
    d = disparities.shape[1]
    h4, w4 = h // stride, w // stride
    left_s = left[:, :, ::stride, ::stride][:, :, :h4, :w4]
    right_rows = right[:, :, ::stride][:, :, :h4]                        # [B, C, h4, W]
    us = torch.arange(w4, device=left.device, dtype=torch.float32) * stride
    ys = torch.linspace(-1, 1, h4, device=left.device) if h4 > 1 else torch.zeros(1, device=left.device)
    out = left.new_empty(b, 2 * slice_channels, d, h4, w4)
    for i in range(d):
        o = int(offsets[i])
        x = (us[None, :] - disparities[:, i:i + 1].float()) * (2.0 / (w - 1)) - 1.0      # [B, w4]
        grid = torch.stack([x[:, None, :].expand(b, h4, w4), ys[None, :, None].expand(b, h4, w4)], -1)
        r = F.grid_sample(right_rows[:, o:o + slice_channels], grid.to(right.dtype), mode="bilinear",
                          padding_mode="zeros", align_corners=True)
        out[:, :slice_channels, i] = left_s[:, o:o + slice_channels]
        out[:, slice_channels:, i] = r
    return out


def conv3d_bn(cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv3d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm3d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Hourglass3D(nn.Module):
    """PSMNet/DSGN 3D hourglass (two stride-2 levels, transposed-conv decoder with skip additions). The released
    code passes booleans as skips so its "skip additions" add 1 (B1.5 quirk); here the skips are real features."""

    def __init__(self, c: int, mults: tuple = (2, 2)):
        super().__init__()
        c1, c2 = c * mults[0], c * mults[1]
        self.conv1 = conv3d_bn(c, c1, 3, 2)
        self.conv2 = conv3d_bn(c1, c1, 3, 1, relu=False)
        self.conv3 = conv3d_bn(c1, c2, 3, 2)
        self.conv4 = conv3d_bn(c2, c2, 3, 1)
        self.conv5 = nn.Sequential(nn.ConvTranspose3d(c2, c1, 3, 2, 1, output_padding=1, bias=False),
                                   nn.BatchNorm3d(c1))
        self.conv6 = nn.Sequential(nn.ConvTranspose3d(c1, c, 3, 2, 1, output_padding=1, bias=False),
                                   nn.BatchNorm3d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.conv2(self.conv1(x)), inplace=False)
        out = self.conv4(self.conv3(pre))
        post = F.relu(self.conv5(out) + pre)
        return self.conv6(post) + x


def lidar_to_image_matrices(calib: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cam_from_lidar [B, 4, 4], P2 [B, 3, 4])`` with ``cam = R_rect · Tr_velo_cam`` padded to 4×4."""
    tr, r_rect, p2 = calib["Tr_velo_cam"], calib["R_rect"], calib["P2"]
    if tr.ndim == 2:
        tr, r_rect, p2 = tr[None], r_rect[None], p2[None]
    b = tr.shape[0]
    tr4 = torch.eye(4, dtype=tr.dtype, device=tr.device).repeat(b, 1, 1)
    tr4[:, :3, :4] = tr
    r4 = torch.eye(4, dtype=tr.dtype, device=tr.device).repeat(b, 1, 1)
    r4[:, :3, :3] = r_rect
    return r4 @ tr4, p2


# ---------------------------------------------------------------------------------------------------- BEV fusion
def feature_similarity(prev: torch.Tensor, cur: torch.Tensor, radius: int) -> torch.Tensor:
    """Cosine similarity ``[B, (2r+1)², H, W]`` between ``cur(p)`` and ``prev(p − s)`` for every offset
    ``s = (dy, dx)`` in ``[−r, r]²`` (row-major, dy outer): channel ``k`` is ``prev`` shifted by ``s_k``, i.e. its value
    at ``p`` moved to ``p + s`` (zero fill), as the released ``feature_sweeping`` op (B2.2). Computed in fp32."""
    prev, cur = prev.float(), cur.float()
    h, w = cur.shape[-2:]
    pad = F.pad(prev, (radius, radius, radius, radius))
    cur_n = cur / cur.norm(dim=1, keepdim=True).clamp_min(1e-6)
    sims = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = pad[:, :, radius - dy:radius - dy + h, radius - dx:radius - dx + w]
            sn = shifted / shifted.norm(dim=1, keepdim=True).clamp_min(1e-6)
            sims.append((cur_n * sn).sum(1))
    return torch.stack(sims, 1)


def flow_from_similarity(sim: torch.Tensor, radius: int, threshold_ratio: float = 0.8) -> torch.Tensor:
    """Integer flow ``[B, 2, H, W]`` as (dx, dy): the softmax-argmax offset where its probability exceeds
    ``1 / (D · threshold_ratio)``, else zero (B2.3)."""
    prob = sim.softmax(1)
    n = sim.shape[1]
    best_p, best = prob.max(1)
    best = torch.where(best_p > 1.0 / (n * threshold_ratio), best, torch.full_like(best, n // 2))
    k = 2 * radius + 1
    dy = (best // k - radius).to(sim.dtype)
    dx = (best % k - radius).to(sim.dtype)
    return torch.stack([dx, dy], 1)


def warp_bev(feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``out(p) = feat(p − flow(p))`` by bilinear ``grid_sample`` with zero padding (the pseudo-next feature of
    B2.4 when ``flow`` is the t−1 → t motion). ``flow`` is ``[B, 2, H, W]`` as (dx, dy) in cells."""
    b, _, h, w = feat.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=feat.device, dtype=torch.float32),
                            torch.arange(w, device=feat.device, dtype=torch.float32), indexing="ij")
    sx = xs[None] - flow[:, 0].float()
    sy = ys[None] - flow[:, 1].float()
    grid = torch.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], -1)
    return F.grid_sample(feat, grid.to(feat.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


class FeatureAlignment(nn.Module):
    """Feature-Flow Fusion (B2): similarity over ±r shifts of max-pooled BEVs, thresholded argmax flow, the
    pseudo-next feature ``warp(F_t, −flow)``, and a shared 1×1 ``BaseConv`` (C → C/3) on prev / cur / pseudo-next,
    concatenated, plus ``F_t`` as a residual. With no history (first frame of a clip) it returns ``F_t`` unchanged."""

    def __init__(self, channels: int, pool: int = 2, radius: int = 3, threshold_ratio: float = 0.8):
        super().__init__()
        self.pool, self.radius, self.threshold_ratio = pool, radius, threshold_ratio
        self.reduce = conv_bn_relu(channels, channels // 3, 1)
        self.last_flow: torch.Tensor | None = None

    def flow(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Full-resolution flow (dx, dy) in BEV cells, t−1 → t."""
        p = F.max_pool2d(prev, self.pool) if self.pool > 1 else prev
        c = F.max_pool2d(cur, self.pool) if self.pool > 1 else cur
        f = flow_from_similarity(feature_similarity(p, c, self.radius), self.radius, self.threshold_ratio)
        if self.pool > 1:
            f = F.interpolate(f, scale_factor=self.pool, mode="bilinear", align_corners=False) * self.pool
        return f

    def forward(self, cur: torch.Tensor, prev: torch.Tensor | None,
                prev_valid: torch.Tensor | None = None) -> torch.Tensor:
        """``prev_valid`` (``[B]`` bool) marks batch items that have a history; the others pass through unchanged."""
        if prev is None or (prev_valid is not None and not bool(prev_valid.any())):
            self.last_flow = None
            return cur
        with torch.no_grad():
            flow = self.flow(prev.detach(), cur.detach())
        self.last_flow = flow
        nxt = warp_bev(cur, flow)
        fused = torch.cat([self.reduce(prev), self.reduce(cur), self.reduce(nxt)], 1) + cur
        if prev_valid is not None:
            fused = torch.where(prev_valid.view(-1, 1, 1, 1).to(fused.device), fused, cur)
        return fused


# ---------------------------------------------------------------------------------------------------- VAN backbone
class LKA(nn.Module):
    """Large-kernel attention (VAN): depthwise k1 → depthwise dilated k2 → 1×1, used as a multiplicative gate."""

    _KERNELS = {7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3), 41: (5, 13, 3), 53: (5, 17, 3)}

    def __init__(self, dim: int, kernel: int = 7):
        super().__init__()
        k0, k1, dil = self._KERNELS[kernel]
        self.conv0 = nn.Conv2d(dim, dim, k0, padding=k0 // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, k1, padding=dil * (k1 // 2), dilation=dil, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class VANBlock(nn.Module):
    """``x + γ1·Attn(BN(x))`` and ``x + γ2·MLP(BN(x))`` with Attn = 1×1 → GELU → LKA → 1×1 (+ residual) and
    MLP = 1×1 → dw3×3 → GELU → 1×1; layer scale 1e-2 (B3)."""

    def __init__(self, dim: int, mlp_ratio: float, kernel: int):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.BatchNorm2d(dim)
        self.proj1 = nn.Conv2d(dim, dim, 1)
        self.lka = LKA(dim, kernel)
        self.proj2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
                                 nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.gamma1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.gamma2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        y = self.proj2(self.lka(F.gelu(self.proj1(y)))) + y
        x = x + self.gamma1.view(1, -1, 1, 1) * y
        return x + self.gamma2.view(1, -1, 1, 1) * self.mlp(self.norm2(x))


class VANBackbone(nn.Module):
    """B3: 1×1 stem, two stages (overlap patch embed stride 2, VAN blocks, channel LayerNorm), SUM decoder with
    transposed convolutions back to the input resolution, ``bev_out`` channels."""

    def __init__(self, cin: int, stem: int, dim: int, depths: tuple, mlp_ratio: float, kernel: int, out: int):
        super().__init__()
        self.stem = conv_bn_relu(cin, stem, 1)
        self.embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = stem
        for depth in depths:
            self.embeds.append(nn.Sequential(nn.Conv2d(c, dim, 3, 2, 1), nn.BatchNorm2d(dim)))
            self.stages.append(nn.Sequential(*[VANBlock(dim, mlp_ratio, kernel) for _ in range(depth)]))
            self.norms.append(nn.LayerNorm(dim))
            c = dim
        self.up2 = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(dim, out, 2, 2, bias=False), nn.BatchNorm2d(out),
                                 nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        for embed, stage, norm in zip(self.embeds, self.stages, self.norms):
            x = stage(embed(x))
            x = norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            feats.append(x)
        y = feats[-1]
        for f in reversed(feats[:-1]):
            y = self.up2(y) + f
        return self.up1(y)


class AnchorHead(nn.Module):
    """B4: separate 3×3 conv-BN-ReLU towers for classification and regression, ``conv_cls`` / ``conv_box`` (3×3) and
    ``conv_dir_cls`` (1×1). Outputs per BEV cell and anchor: class logits, 7 box residuals, direction-bin logits.
    Init: cls bias −log(99), cls weights std 0.1 (as released), box weights std 0.02."""

    def __init__(self, cin: int, channels: int, num_anchors: int, num_classes: int, num_dir_bins: int):
        super().__init__()
        self.num_anchors, self.num_classes, self.num_dir_bins = num_anchors, num_classes, num_dir_bins
        self.cls_tower = conv_bn_relu(cin, channels, 3)
        self.reg_tower = conv_bn_relu(cin, channels, 3)
        self.conv_cls = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.conv_box = nn.Conv2d(channels, num_anchors * 7, 3, padding=1)
        self.conv_dir_cls = nn.Conv2d(channels, num_anchors * num_dir_bins, 1)
        nn.init.normal_(self.conv_cls.weight, std=0.1)
        nn.init.constant_(self.conv_cls.bias, -math.log(99.0))
        nn.init.normal_(self.conv_box.weight, std=0.02)
        nn.init.zeros_(self.conv_box.bias)

    def forward(self, x: torch.Tensor) -> dict:
        b, _, h, w = x.shape
        c, r = self.cls_tower(x), self.reg_tower(x)
        # [B, H, W, A, k] → [B, H*W*A, k] (anchor order: y, x, class, rotation; see boxes.make_anchors)
        cls = self.conv_cls(c).permute(0, 2, 3, 1).reshape(b, h * w * self.num_anchors, self.num_classes)
        box = self.conv_box(r).permute(0, 2, 3, 1).reshape(b, h * w * self.num_anchors, 7)
        dr = self.conv_dir_cls(r).permute(0, 2, 3, 1).reshape(b, h * w * self.num_anchors, self.num_dir_bins)
        return {"cls": cls, "box": box, "dir": dr}


# ---------------------------------------------------------------------------------------------------- the model
class StreamDSGNModel(nn.Module):
    """The full detector. ``forward(left, right, calib, fu_baseline, prev_bev=None)`` → dict with ``bev`` (the
    unfused BEV, stored as the next frame's history, B2.6), head outputs and (in training) ``depth_logits``.

    ``extract_bev`` runs the per-frame stereo part (steps 1–5); ``forward_bev`` fusion + BEV backbone + head."""

    def __init__(self, config: StreamDSGNConfig | None = None):
        super().__init__()
        cfg = config or StreamDSGNConfig.kitti()
        if not isinstance(cfg, StreamDSGNConfig):
            raise TypeError(f"config must be a StreamDSGNConfig, got {type(cfg).__name__}")
        self.config = cfg
        c = cfg.volume_channels
        self.backbone = StereoFeatureExtractor(cfg)
        self.dres0 = conv3d_bn(2 * cfg.slice_channels, c, 1)
        self.dres1 = conv3d_bn(c, c, 3, relu=False)
        self.depth_head = nn.Sequential(conv3d_bn(c, c, 3), nn.Conv3d(c, 1, 3, 1, 1, bias=False))
        self.rpn3d_convs = conv3d_bn(c, c, 1)
        self.hourglass = Hourglass3D(c, cfg.hourglass_mults)
        self.fusion = FeatureAlignment(cfg.bev_channels, cfg.flow_pool, cfg.flow_radius, cfg.flow_threshold_ratio)
        self.bev_backbone = VANBackbone(cfg.bev_channels, cfg.van_stem, cfg.van_dim, cfg.van_depths,
                                        cfg.van_mlp_ratio, cfg.lka_kernel, cfg.bev_out)
        self.head = AnchorHead(cfg.bev_out, cfg.head_channels, cfg.num_anchors_per_cell, cfg.num_classes,
                               cfg.num_dir_bins)
        self.register_buffer("plane_depths", torch.tensor(cfg.plane_depths, dtype=torch.float32), persistent=False)
        self.register_buffer("voxel_centers", self._voxel_centers(cfg), persistent=False)

    @staticmethod
    def _voxel_centers(cfg: StreamDSGNConfig) -> torch.Tensor:
        """``[nz, ny, nx, 3]`` voxel centres (x, y, z) in the LiDAR-style frame."""
        pcr, (nx, ny, nz), (vx, vy, vz) = cfg.point_cloud_range, cfg.grid_size, cfg.voxel_size
        xs = pcr[0] + (torch.arange(nx) + 0.5) * vx
        ys = pcr[1] + (torch.arange(ny) + 0.5) * vy
        zs = pcr[2] + (torch.arange(nz) + 0.5) * vz
        z, y, x = torch.meshgrid(zs, ys, xs, indexing="ij")
        return torch.stack([x, y, z], -1).float()

    # ------------------------------------------------------------------------------------------------ stages
    def _check_inputs(self, left: torch.Tensor, right: torch.Tensor, fu_baseline) -> None:
        h, w = self.config.image_size
        for name, t in (("left", left), ("right", right)):
            if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] != 3:
                raise ValueError(f"{name} must be a [B, 3, H, W] tensor, got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            if tuple(t.shape[-2:]) != (h, w):
                raise ValueError(f"{name} must be {h}×{w} (config.image_size), got {tuple(t.shape[-2:])}")
        if left.shape != right.shape:
            raise ValueError("left and right must have the same shape")

    def stereo_volume(self, left: torch.Tensor, right: torch.Tensor, fu_baseline: torch.Tensor) -> torch.Tensor:
        """Steps 1–3: features, DPS cost volume and dres0/dres1 → ``[B, volume_channels, D, H/4, W/4]``."""
        cfg = self.config
        b = left.shape[0]
        feats = self.backbone(torch.cat([left, right], 0))
        fl, fr = feats[:b], feats[b:]
        disp = fu_baseline.view(b, 1).float() / self.plane_depths.view(1, -1)
        offsets = plane_channel_offsets(disp[0], fl.shape[1], cfg.slice_channels, cfg.inv_smooth_psv)
        cost = build_dps_cost_volume(fl, fr, disp, offsets, cfg.slice_channels, cfg.psv_stride)
        c0 = self.dres0(cost)
        return self.dres1(c0) + c0

    def voxel_grid(self, calib: dict, image_hw: tuple, volume_hw: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised sampling grid ``[B, nz, ny, nx, 3]`` into the plane-sweep volume and validity ``[B, 1, nz, ny,
        nx]`` for the voxel centres (B1.5)."""
        cfg = self.config
        cam_from_lidar, p2 = lidar_to_image_matrices(calib)
        cam_from_lidar, p2 = cam_from_lidar.float(), p2.float()
        b = p2.shape[0]
        pts = self.voxel_centers.reshape(-1, 3)
        homo = torch.cat([pts, torch.ones_like(pts[:, :1])], 1)                     # [N, 4]
        cam = torch.einsum("bij,nj->bni", cam_from_lidar, homo)                      # [B, N, 4]
        img = torch.einsum("bij,bnj->bni", p2, cam)                                  # [B, N, 3]
        depth = cam[..., 2]
        zc = img[..., 2].clamp_min(1e-4)
        u, v = img[..., 0] / zc, img[..., 1] / zc
        h, w = image_hw
        h4, w4 = volume_hw
        lo, hi = self.plane_depths[0], self.plane_depths[-1]
        d_norm = 2 * (depth - lo) / (hi - lo) - 1
        u_norm = 2 * (u / cfg.psv_stride) / max(w4 - 1, 1) - 1
        v_norm = 2 * (v / cfg.psv_stride) / max(h4 - 1, 1) - 1
        valid = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1) & (depth >= lo) & (depth <= hi) & (img[..., 2] > 0)
        nx, ny, nz = cfg.grid_size
        grid = torch.stack([u_norm, v_norm, d_norm], -1).view(b, nz, ny, nx, 3)
        return grid, valid.view(b, 1, nz, ny, nx)

    def geometry_volume(self, volume: torch.Tensor, calib: dict, image_hw: tuple,
                        return_voxels: bool = False):
        """Step 4: sample the stereo volume at the voxel centres, mask, 3D convs, hourglass, height compression to a
        BEV map ``[B, bev_channels, ny, nx]`` (and the voxel volume before the height pool if ``return_voxels``)."""
        grid, valid = self.voxel_grid(calib, image_hw, tuple(volume.shape[-2:]))
        vox = F.grid_sample(volume, grid.to(volume.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
        vox = vox * valid.to(vox.dtype)
        vox = self.hourglass(self.rpn3d_convs(vox))
        pooled = F.avg_pool3d(vox, (self.config.height_pool, 1, 1))
        b, c, d, h, w = pooled.shape
        bev = pooled.reshape(b, c * d, h, w)
        return (bev, vox) if return_voxels else bev

    def psv_grid(self, calib: dict, volume_hw: tuple) -> torch.Tensor:
        """Normalised sampling grid ``[B, D, h4, w4, 3]`` into the voxel volume for every plane-sweep cell: the pixel
        (4w, 4h) back-projected at the plane depth ``d_i`` with ``P2``, moved to the LiDAR-style frame with
        ``(R_rect·Tr_velo_cam)^-1`` (B1.6: the geometry volume sampled back onto the plane-sweep grid)."""
        cfg = self.config
        cam_from_lidar, p2 = lidar_to_image_matrices(calib)
        lidar_from_cam = torch.linalg.inv(cam_from_lidar.float())
        p2 = p2.float()
        b = p2.shape[0]
        h4, w4 = volume_hw
        dev = p2.device
        d = self.plane_depths.view(-1, 1, 1).expand(-1, h4, w4)
        v = (torch.arange(h4, device=dev, dtype=torch.float32) * cfg.psv_stride).view(1, -1, 1).expand_as(d)
        u = (torch.arange(w4, device=dev, dtype=torch.float32) * cfg.psv_stride).view(1, 1, -1).expand_as(d)
        out = []
        for i in range(b):
            z_img = d + p2[i, 2, 3]
            rhs = torch.stack([u * z_img, v * z_img, z_img], -1) - p2[i, :, 3]
            cam = rhs @ torch.linalg.inv(p2[i, :, :3]).T                              # [D, h4, w4, 3]
            pts = torch.cat([cam, torch.ones_like(cam[..., :1])], -1) @ lidar_from_cam[i].T
            out.append(pts[..., :3])
        pts = torch.stack(out)
        pcr, vs = cfg.point_cloud_range, cfg.voxel_size
        norm = []
        for k in range(3):
            lo = pcr[k] + vs[k] / 2
            span = (pcr[k + 3] - pcr[k]) - vs[k]
            norm.append(2 * (pts[..., k] - lo) / max(span, 1e-6) - 1)
        return torch.stack(norm, -1)

    def depth_logits(self, volume: torch.Tensor, calib: dict | None = None,
                     voxels: torch.Tensor | None = None) -> torch.Tensor:
        """Step 5 (training): ``[B, num_planes·depth_upsample, H, W]`` depth logits over the fine bins. With
        ``depth_from="geometry"`` (released) the head reads the geometry volume sampled back onto the plane-sweep grid
        (so the depth loss also trains the 3D hourglass), with ``"stereo"`` the stereo volume itself."""
        cfg = self.config
        if cfg.depth_from == "geometry":
            if voxels is None or calib is None:
                raise ValueError("depth_from='geometry' needs the voxel volume and the calibration")
            grid = self.psv_grid(calib, tuple(volume.shape[-2:]))
            volume = F.grid_sample(voxels, grid.to(voxels.dtype), mode="bilinear", padding_mode="zeros",
                                   align_corners=True)
        logit = self.depth_head(volume)                                             # [B, 1, D, h4, w4]
        h, w = cfg.image_size
        logit = F.interpolate(logit.float(), (cfg.num_planes * cfg.depth_upsample, h, w), mode="trilinear",
                              align_corners=False)
        return logit[:, 0]

    def depth_bins(self) -> torch.Tensor:
        """Centres of the fine depth bins used by :meth:`depth_logits`."""
        cfg = self.config
        n = cfg.num_planes * cfg.depth_upsample
        lo, hi = cfg.depth_range
        return lo + (torch.arange(n, dtype=torch.float32) + 0.5) * (hi - lo) / n

    def extract_bev(self, left: torch.Tensor, right: torch.Tensor, calib: dict, fu_baseline,
                    with_depth: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Steps 1–5 for one frame: ``(bev [B, C, ny, nx], depth_logits or None)``."""
        self._check_inputs(left, right, fu_baseline)
        fu_baseline = torch.as_tensor(fu_baseline, dtype=torch.float32, device=left.device).reshape(-1)
        if fu_baseline.numel() == 1 and left.shape[0] > 1:
            fu_baseline = fu_baseline.expand(left.shape[0])
        volume = self.stereo_volume(left, right, fu_baseline)
        if not with_depth:
            return self.geometry_volume(volume, calib, tuple(left.shape[-2:])), None
        bev, voxels = self.geometry_volume(volume, calib, tuple(left.shape[-2:]), return_voxels=True)
        return bev, self.depth_logits(volume, calib, voxels)

    def forward_bev(self, bev: torch.Tensor, prev_bev: torch.Tensor | None = None,
                    prev_valid: torch.Tensor | None = None) -> dict:
        """Steps 6–8: fusion with the previous BEV (identity without history or when fusion is off), VAN, head."""
        use_fusion = self.config.use_fusion and not self.config.baseline
        fused = self.fusion(bev, prev_bev if use_fusion else None, prev_valid)
        return self.head(self.bev_backbone(fused))

    @property
    def streaming(self) -> bool:
        """Whether the streaming components are active (fusion on and not the baseline)."""
        return self.config.use_fusion and not self.config.baseline

    def forward(self, left: torch.Tensor, right: torch.Tensor, calib: dict, fu_baseline,
                prev_bev: torch.Tensor | None = None, with_depth: bool = False,
                prev_valid: torch.Tensor | None = None, prev_left: torch.Tensor | None = None,
                prev_right: torch.Tensor | None = None, prev_grad: bool = True) -> dict:
        """One frame. The history is either a stored ``prev_bev`` (inference) or the previous stereo pair
        ``prev_left``/``prev_right``, passed through the same extractor — with gradients when ``prev_grad``, as the
        released ``WITH_GRAD_WHEN_OBTAINING_HISTORY`` (training; B2.6)."""
        has_prev = prev_left is not None and (prev_valid is None or bool(prev_valid.any()))
        if prev_bev is None and has_prev and self.streaming:
            with torch.set_grad_enabled(prev_grad and torch.is_grad_enabled()):
                prev_bev, _ = self.extract_bev(prev_left, prev_right, calib, fu_baseline)
        bev, depth = self.extract_bev(left, right, calib, fu_baseline, with_depth)
        out = self.forward_bev(bev, prev_bev, prev_valid)
        if self.training:
            # modules unused in this call (no history, baseline, no depth target) take part with zero weight, so
            # that DistributedDataParallel finds a gradient for every parameter without find_unused_parameters
            unused = []
            if self.fusion.last_flow is None:
                unused += list(self.fusion.parameters())
            if depth is None:
                unused += list(self.depth_head.parameters())
            if unused:
                out["cls"] = out["cls"] + 0.0 * sum(p.sum() for p in unused)
        out["bev"] = bev
        if depth is not None:
            out["depth_logits"] = depth
        return out

"""Configuration of the StreamDSGN detector (:class:`StreamDSGNConfig`) with the paper's and a tiny preset.

``StreamDSGNConfig.kitti()`` reproduces the sizes of the released KITTI-tracking configuration
(``stream_dsgn_r18-token_prev_next-feature_align_avg_fusion-lka_7-mcl.yaml``, notes B1–B4): 320×1248 input, ResNet-18
layout (strides 1,2,1,1, dilations 1,1,2,4, widths 64·[1,2,2,2], no max-pool), 96-channel full-resolution stereo
feature, 64 DPS planes over [2, 53.2] m (32-channel slices), voxel grid x∈[2, 53.2] (256 @ 0.2 m), y∈[−28.8, 28.8]
(288 @ 0.2 m), z∈[−3, 1] with 12 bins (so that the 4× height average-pool leaves 3 bins and the BEV has 32·3 = 96
channels, the clean version of the official hourglass quirk, notes B1.5), VAN-LKA (k = 7) BEV backbone to 64 channels
and the 6-anchor head. ``StreamDSGNConfig.tiny()`` keeps every stage but shrinks image, planes, voxels and widths so the
model trains on a CPU in minutes on the synthetic default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

__all__ = ["StreamDSGNConfig", "AnchorSpec", "CLASS_NAMES"]

CLASS_NAMES = ("Car", "Pedestrian", "Cyclist")


@dataclass
class AnchorSpec:
    """One class's anchors (notes B4): size (l, w, h) in metres, bottom z, and the BEV-IoU match / unmatch
    thresholds of the axis-aligned assigner."""

    size: tuple = (3.9, 1.6, 1.56)
    bottom_z: float = -1.78
    matched: float = 0.6
    unmatched: float = 0.45

    def __post_init__(self) -> None:
        self.size = tuple(float(s) for s in self.size)
        if len(self.size) != 3 or min(self.size) <= 0:
            raise ValueError(f"size must be three positive lengths (l, w, h), got {self.size}")
        if not 0 < self.unmatched <= self.matched <= 1:
            raise ValueError(f"need 0 < unmatched <= matched <= 1, got {self.unmatched}, {self.matched}")


def _default_anchors() -> list:
    return [AnchorSpec((3.9, 1.6, 1.56), -1.78, 0.6, 0.45),
            AnchorSpec((0.8, 0.6, 1.73), -0.6, 0.5, 0.35),
            AnchorSpec((1.76, 0.6, 1.73), -0.6, 0.5, 0.35)]


@dataclass
class StreamDSGNConfig:
    """All sizes of the detector. Field groups follow the pipeline (notes B1–B5)."""

    # input
    image_size: tuple = (320, 1248)
    # stereo feature extractor (ResNet-18 layout, no max-pool) + SPP neck + FPN to the stereo feature
    base_width: int = 64
    blocks: tuple = (2, 2, 2, 2)
    strides: tuple = (1, 2, 1, 1)
    dilations: tuple = (1, 1, 2, 4)
    width_factors: tuple = (1, 2, 2, 2)
    spp_pools: tuple = (64, 32, 16, 8)
    spp_channels: int = 32
    up_dims: tuple = (64, 32)           # stereo feature channels = sum(up_dims) (96 in the paper)
    pretrained: str | None = None       # path to a local torchvision resnet18 state dict; never downloaded
    # DPS plane-sweep cost volume
    num_planes: int = 64
    depth_range: tuple = (2.0, 53.2)
    psv_stride: int = 4
    slice_channels: int = 32
    volume_channels: int = 32
    inv_smooth_psv: float = 0.1
    # voxel grid (LiDAR-style frame: x forward, y left, z up)
    point_cloud_range: tuple = (2.0, -28.8, -3.0, 53.2, 28.8, 1.0)
    grid_size: tuple = (256, 288, 12)   # (nx, ny, nz)
    hourglass_mults: tuple = (2, 2)
    height_pool: int = 4
    # depth head (training only): bins = num_planes * depth_upsample over depth_range
    depth_upsample: int = 4
    depth_from: str = "geometry"        # "geometry": the 3D volume sampled back onto the PSV grid (released); "stereo"
    # feature-flow fusion
    use_fusion: bool = True
    flow_pool: int = 2
    flow_radius: int = 3
    flow_threshold_ratio: float = 0.8
    # VAN / LKA BEV backbone
    van_stem: int = 64
    van_dim: int = 128
    van_depths: tuple = (2, 2)
    van_mlp_ratio: float = 2.0
    lka_kernel: int = 7
    bev_out: int = 64
    # head
    head_channels: int = 64
    num_classes: int = 3
    anchors: list = field(default_factory=_default_anchors)
    rotations: tuple = (0.0, math.pi / 2)
    dir_offset: float = 0.78539
    num_dir_bins: int = 2
    # post-processing
    score_threshold: float = 0.1
    nms_iou: float = 0.25
    nms_pre: int = 4096
    nms_post: int = 500
    nms_rotated: bool = True  # True: rotated BEV IoU (as the released nms_gpu); False: axis-aligned footprints
    # streaming switch: baseline=True removes flow fusion, next-frame supervision and the motion loss
    baseline: bool = False

    def __post_init__(self) -> None:
        for name in ("image_size", "blocks", "strides", "dilations", "width_factors", "spp_pools", "up_dims",
                     "depth_range", "point_cloud_range", "grid_size", "hourglass_mults", "van_depths", "rotations"):
            setattr(self, name, tuple(getattr(self, name)))
        self.anchors = [a if isinstance(a, AnchorSpec) else AnchorSpec(**a) for a in self.anchors]
        h, w = self.image_size
        if h % 16 or w % 16 or h <= 0 or w <= 0:
            raise ValueError(f"image_size must be (H, W) multiples of 16, got {self.image_size}")
        if len(self.blocks) != 4 or len(self.strides) != 4 or len(self.dilations) != 4 or len(self.width_factors) != 4:
            raise ValueError("blocks, strides, dilations and width_factors need 4 entries (the ResNet stages)")
        if tuple(self.strides[i] for i in (0, 2, 3)) != (1, 1, 1) or self.strides[1] != 2:
            raise ValueError(f"strides must be (1, 2, 1, 1) (features at 1/2 then 1/4), got {self.strides}")
        if self.psv_stride != 4:
            raise ValueError("psv_stride must be 4 (the cost volume samples the 1/4 grid of the stereo feature)")
        if len(self.up_dims) != 2 or min(self.up_dims) <= 0:
            raise ValueError(f"up_dims must be two positive widths (1/2 and full resolution), got {self.up_dims}")
        if not 0 < self.slice_channels <= self.stereo_channels:
            raise ValueError(f"slice_channels must be in (0, {self.stereo_channels}], got {self.slice_channels}")
        lo, hi = self.depth_range
        if not 0 < lo < hi:
            raise ValueError(f"depth_range must be (min, max) with 0 < min < max, got {self.depth_range}")
        if self.num_planes < 2:
            raise ValueError(f"num_planes must be >= 2, got {self.num_planes}")
        if len(self.point_cloud_range) != 6 or len(self.grid_size) != 3:
            raise ValueError("point_cloud_range needs 6 numbers and grid_size 3 (nx, ny, nz)")
        nx, ny, nz = self.grid_size
        pcr = self.point_cloud_range
        if not (pcr[3] > pcr[0] and pcr[4] > pcr[1] and pcr[5] > pcr[2]):
            raise ValueError(f"point_cloud_range must be (xmin, ymin, zmin, xmax, ymax, zmax), got {pcr}")
        if nx % 4 or ny % 4:
            raise ValueError(f"grid_size nx, ny must be multiples of 4 (hourglass and VAN stride 4), got {nx}, {ny}")
        if nz % 4 or nz % self.height_pool:
            raise ValueError(f"grid_size nz must be a multiple of 4 and of height_pool, got {nz}")
        if self.depth_from not in ("geometry", "stereo"):
            raise ValueError(f"depth_from must be 'geometry' or 'stereo', got {self.depth_from!r}")
        if self.flow_pool < 1 or self.flow_radius < 0:
            raise ValueError("flow_pool must be >= 1 and flow_radius >= 0")
        if nx % (2 * self.flow_pool) or ny % (2 * self.flow_pool):
            raise ValueError("grid nx, ny must be divisible by 2 * flow_pool")
        if self.bev_channels % 3:
            raise ValueError(f"BEV channels ({self.bev_channels}) must be divisible by 3 for the 3-way fusion")
        if self.lka_kernel not in (7, 11, 23, 35, 41, 53):
            raise ValueError(f"lka_kernel must be one of 7, 11, 23, 35, 41, 53, got {self.lka_kernel}")
        if len(self.anchors) != self.num_classes:
            raise ValueError(f"need one AnchorSpec per class ({self.num_classes}), got {len(self.anchors)}")
        if self.num_dir_bins < 1:
            raise ValueError("num_dir_bins must be >= 1")

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def stereo_channels(self) -> int:
        return int(sum(self.up_dims))

    @property
    def bev_channels(self) -> int:
        return self.volume_channels * self.grid_size[2] // self.height_pool

    @property
    def voxel_size(self) -> tuple:
        pcr, (nx, ny, nz) = self.point_cloud_range, self.grid_size
        return ((pcr[3] - pcr[0]) / nx, (pcr[4] - pcr[1]) / ny, (pcr[5] - pcr[2]) / nz)

    @property
    def num_anchors_per_cell(self) -> int:
        return self.num_classes * len(self.rotations)

    @property
    def plane_depths(self) -> list:
        lo, hi = self.depth_range
        step = (hi - lo) / self.num_planes
        return [lo + (i + 0.5) * step for i in range(self.num_planes)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["anchors"] = [asdict(a) for a in self.anchors]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StreamDSGNConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown StreamDSGNConfig fields {sorted(unknown)}")
        return cls(**d)

    # ------------------------------------------------------------------------------------------------ presets
    @classmethod
    def kitti(cls, **overrides) -> StreamDSGNConfig:
        """The paper's / released configuration (notes B1–B4)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> StreamDSGNConfig:
        """CPU-trainable sizes for the synthetic default (96×320 input, 24 planes, 64×64×12 voxels)."""
        base = dict(image_size=(96, 320), base_width=16, spp_pools=(16, 8, 4, 2), spp_channels=8, up_dims=(16, 8),
                    num_planes=24, depth_range=(2.0, 40.4), slice_channels=8, volume_channels=8,
                    point_cloud_range=(2.0, -19.2, -3.0, 40.4, 19.2, 1.0), grid_size=(64, 64, 12),
                    depth_upsample=2, van_stem=24, van_dim=32, bev_out=32, head_channels=32)
        base.update(overrides)
        return cls(**base)

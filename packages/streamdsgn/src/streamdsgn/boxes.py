"""Anchors, the residual box coder, the axis-aligned target assigner and post-processing (notes B4).

Boxes are ``(x, y, z, dx, dy, dz, yaw)`` in the LiDAR-style frame (x forward, y left, z up, ``z`` the box centre,
``dx`` = length along the heading), as in :mod:`commons.metrics.detection`.

* :func:`make_anchors`: one anchor per class × rotation ``{0, π/2}`` at every BEV cell centre (stride 1), class sizes
  and bottom heights from the config, ordered (y, x, class, rotation) to match the head's output layout.
* :class:`ResidualCoder`: OpenPCDet's residual coding with ``div_by_diagonal`` — x, y offsets divided by the anchor's
  BEV diagonal, z by the anchor height, log size ratios, and the raw angle residual.
* :func:`assign_targets`: OpenPCDet's ``AxisAlignedTargetAssigner`` — per class, BEV IoU between anchors and GT boxes
  each rotated to the nearest multiple of π/2 (axis-aligned); positives at IoU ≥ ``matched``, background below
  ``unmatched``, in between ignored, plus each GT's best anchor(s) forced positive.
* :func:`decode_predictions`: scores, direction-corrected boxes, score threshold, top-``nms_pre``, class-aware NMS and
  top-``nms_post``. By default (``nms_rotated=True``) NMS uses the rotated BEV IoU as the released ``nms_gpu``
  (:func:`rotated_nms`, polygon clipping in torch, no CUDA op); ``nms_rotated=False`` selects the faster
  ``torchvision.ops.batched_nms`` on each box's BEV footprint rotated to the nearest multiple of π/2.
* :func:`project_boxes_to_image`: each 3D box's 2D image box (the devkit's minimum-height rule reads its height).
"""

from __future__ import annotations

import math

import torch

from .models.config import StreamDSGNConfig

__all__ = ["limit_period", "make_anchors", "ResidualCoder", "nearest_bev_boxes", "bev_iou_axis_aligned",
           "assign_targets", "direction_targets", "decode_predictions", "rotated_nms", "enclosing_bev_boxes",
           "box_corners_3d", "project_boxes_to_image", "image_window", "clip_to_window", "KITTI_FOCAL",
           "default_height_scale"]

#: KITTI's left-camera focal length (px) of the full-resolution images (sequence 0000's ``P2[0, 0]``).
KITTI_FOCAL = 721.5377


def limit_period(val: torch.Tensor, offset: float = 0.5, period: float = math.pi) -> torch.Tensor:
    """``val − floor(val / period + offset) · period`` (OpenPCDet)."""
    return val - torch.floor(val / period + offset) * period


def make_anchors(cfg: StreamDSGNConfig, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(anchors [ny·nx·A, 7], anchor_class [ny·nx·A])`` with A = classes × rotations, ordered (y, x, class, rot)."""
    pcr, (nx, ny, _), (vx, vy, _) = cfg.point_cloud_range, cfg.grid_size, cfg.voxel_size
    xs = pcr[0] + (torch.arange(nx, dtype=torch.float32) + 0.5) * vx
    ys = pcr[1] + (torch.arange(ny, dtype=torch.float32) + 0.5) * vy
    per_cell, cls = [], []
    for c, spec in enumerate(cfg.anchors):
        l, w, h = spec.size
        for rot in cfg.rotations:
            per_cell.append([l, w, h, spec.bottom_z + h / 2, rot])
            cls.append(c)
    per_cell_t = torch.tensor(per_cell, dtype=torch.float32)                     # [A, 5]
    a = len(per_cell)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    centers = torch.stack([xx, yy], -1).reshape(-1, 1, 2).expand(-1, a, 2)       # [ny*nx, A, 2]
    attrs = per_cell_t[None].expand(centers.shape[0], a, 5)
    anchors = torch.cat([centers, attrs[..., 3:4], attrs[..., 0:3], attrs[..., 4:5]], -1).reshape(-1, 7)
    anchor_cls = torch.tensor(cls, dtype=torch.long).repeat(ny * nx)
    return anchors.to(device), anchor_cls.to(device)


class ResidualCoder:
    """OpenPCDet ``ResidualCoder`` with ``div_by_diagonal=True`` (x, y offsets / anchor BEV diagonal)."""

    code_size = 7

    @staticmethod
    def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        xa, ya, za, dxa, dya, dza, ra = anchors.unbind(-1)
        xg, yg, zg, dxg, dyg, dzg, rg = boxes.unbind(-1)
        diag = torch.sqrt(dxa ** 2 + dya ** 2)
        return torch.stack([(xg - xa) / diag, (yg - ya) / diag, (zg - za) / dza,
                            torch.log(dxg.clamp_min(1e-5) / dxa), torch.log(dyg.clamp_min(1e-5) / dya),
                            torch.log(dzg.clamp_min(1e-5) / dza), rg - ra], -1)

    @staticmethod
    def decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        xa, ya, za, dxa, dya, dza, ra = anchors.unbind(-1)
        xt, yt, zt, dxt, dyt, dzt, rt = codes.unbind(-1)
        diag = torch.sqrt(dxa ** 2 + dya ** 2)
        return torch.stack([xt * diag + xa, yt * diag + ya, zt * dza + za, torch.exp(dxt.clamp(max=10)) * dxa,
                            torch.exp(dyt.clamp(max=10)) * dya, torch.exp(dzt.clamp(max=10)) * dza, rt + ra], -1)


def nearest_bev_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """BEV footprints ``[N, 4]`` (x1, y1, x2, y2) of boxes rotated to the nearest multiple of π/2."""
    rot = limit_period(boxes[:, 6], 0.5, math.pi).abs()
    swap = rot > math.pi / 4
    dx = torch.where(swap, boxes[:, 4], boxes[:, 3])
    dy = torch.where(swap, boxes[:, 3], boxes[:, 4])
    return torch.stack([boxes[:, 0] - dx / 2, boxes[:, 1] - dy / 2, boxes[:, 0] + dx / 2, boxes[:, 1] + dy / 2], 1)


def bev_iou_axis_aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` IoU of the nearest-axis-aligned BEV footprints (OpenPCDet ``boxes3d_nearest_bev_iou``)."""
    from torchvision.ops import box_iou

    if len(a) == 0 or len(b) == 0:
        return a.new_zeros(len(a), len(b))
    return box_iou(nearest_bev_boxes(a), nearest_bev_boxes(b))


def assign_targets(anchors: torch.Tensor, anchor_cls: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                   cfg: StreamDSGNConfig) -> dict:
    """Targets for one frame. Returns ``labels [N]`` (−1 ignore, 0 background, ``c + 1`` positive of class ``c``),
    ``box_targets [N, 7]`` (encoded, zero where not positive) and ``gt_index [N]`` (matched GT or −1)."""
    n = anchors.shape[0]
    labels = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    gt_index = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    gt_boxes = gt_boxes.to(anchors.device, anchors.dtype).reshape(-1, 7)
    gt_labels = gt_labels.to(anchors.device).reshape(-1)
    for c, spec in enumerate(cfg.anchors):
        a_idx = torch.nonzero(anchor_cls == c, as_tuple=True)[0]
        g_idx = torch.nonzero(gt_labels == c, as_tuple=True)[0]
        if len(g_idx) == 0:
            labels[a_idx] = 0
            continue
        iou = bev_iou_axis_aligned(anchors[a_idx], gt_boxes[g_idx])             # [Na, G]
        best_iou, best_gt = iou.max(1)
        lab = torch.full((len(a_idx),), -1, dtype=torch.long, device=anchors.device)
        match = best_gt.clone()
        lab[best_iou < spec.unmatched] = 0
        lab[best_iou >= spec.matched] = c + 1
        gt_best = iou.max(0).values                                              # [G]
        force_a, force_g = torch.nonzero((iou == gt_best[None]) & (gt_best[None] > 0), as_tuple=True)
        lab[force_a] = c + 1
        match[force_a] = force_g
        labels[a_idx] = lab
        pos = lab > 0
        gt_index[a_idx[pos]] = g_idx[match[pos]]
    box_targets = torch.zeros_like(anchors)
    pos = labels > 0
    if pos.any():
        box_targets[pos] = ResidualCoder.encode(gt_boxes[gt_index[pos]], anchors[pos])
    return {"labels": labels, "box_targets": box_targets, "gt_index": gt_index}


def direction_targets(anchors: torch.Tensor, box_targets: torch.Tensor, dir_offset: float,
                      num_bins: int) -> torch.Tensor:
    """Direction-bin targets (OpenPCDet ``get_direction_target``)."""
    rot = box_targets[..., 6] + anchors[..., 6]
    off = limit_period(rot - dir_offset, 0.0, 2 * math.pi)
    return torch.floor(off / (2 * math.pi / num_bins)).long().clamp(0, num_bins - 1)


def decode_boxes(box_preds: torch.Tensor, dir_logits: torch.Tensor | None, anchors: torch.Tensor,
                 cfg: StreamDSGNConfig) -> torch.Tensor:
    """Decode residuals and apply the direction classifier to the yaw."""
    boxes = ResidualCoder.decode(box_preds, anchors)
    if dir_logits is not None:
        period = 2 * math.pi / cfg.num_dir_bins
        dir_labels = dir_logits.argmax(-1)
        rot = limit_period(boxes[..., 6] - cfg.dir_offset, 0.0, period)
        boxes = torch.cat([boxes[..., :6], (rot + cfg.dir_offset + period * dir_labels.to(rot.dtype))[..., None]], -1)
    return boxes


def enclosing_bev_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Axis-aligned rectangles ``[N, 4]`` enclosing the rotated BEV footprints."""
    c, sn = torch.cos(boxes[:, 6]).abs(), torch.sin(boxes[:, 6]).abs()
    hx = (boxes[:, 3] * c + boxes[:, 4] * sn) / 2
    hy = (boxes[:, 3] * sn + boxes[:, 4] * c) / 2
    return torch.stack([boxes[:, 0] - hx, boxes[:, 1] - hy, boxes[:, 0] + hx, boxes[:, 1] + hy], 1)


@torch.no_grad()
def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
                max_keep: int | None = None) -> torch.Tensor:
    """Class-aware greedy NMS with the rotated BEV IoU (the released ``nms_gpu``): indices kept, by decreasing score,
    at most ``max_keep`` (the greedy pass stops there, so the result equals the first ``max_keep`` of the full pass).
    Each kept box measures the rotated IoU (polygon clipping in torch) only against the live boxes of its class whose
    enclosing rectangles overlap its own; runs on the CPU (a few hundred candidates at most after thresholding)."""
    from .losses import rotated_bev_overlap

    order = scores.argsort(descending=True)
    b, lab = boxes[order].float().cpu(), labels[order].cpu()
    n = len(b)
    if n == 0:
        return order
    enc = enclosing_bev_boxes(b)
    area = b[:, 3] * b[:, 4]
    alive = torch.ones(n, dtype=torch.bool)
    limit = n if max_keep is None else int(max_keep)
    keep: list[int] = []
    for i in range(n):
        if len(keep) >= limit:
            break
        if not alive[i]:
            continue
        keep.append(i)
        e, rest = enc[i], slice(i + 1, n)
        cand = (alive[rest] & (lab[rest] == lab[i]) & (enc[rest, 0] < e[2]) & (enc[rest, 2] > e[0])
                & (enc[rest, 1] < e[3]) & (enc[rest, 3] > e[1]))
        j = torch.nonzero(cand, as_tuple=True)[0] + i + 1
        if len(j):
            inter = rotated_bev_overlap(b[i:i + 1].expand(len(j), 7), b[j])
            iou = inter / (area[i] + area[j] - inter).clamp_min(1e-6)
            alive[j[iou > iou_threshold]] = False
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


@torch.no_grad()
def decode_predictions(preds: dict, anchors: torch.Tensor, cfg: StreamDSGNConfig,
                       score_threshold: float | None = None) -> list[dict]:
    """Per-frame detections ``{"boxes" [K, 7], "scores" [K], "labels" [K]}`` (CPU float tensors) from head outputs."""
    from torchvision.ops import batched_nms

    thr = cfg.score_threshold if score_threshold is None else score_threshold
    out = []
    for b in range(preds["cls"].shape[0]):
        probs = preds["cls"][b].float().sigmoid()
        scores, labels = probs.max(-1)
        keep = torch.nonzero(scores >= thr, as_tuple=True)[0]
        if len(keep) > cfg.nms_pre:
            keep = keep[scores[keep].topk(cfg.nms_pre).indices]
        boxes = decode_boxes(preds["box"][b][keep].float(), preds["dir"][b][keep].float(), anchors[keep], cfg)
        s, lab = scores[keep], labels[keep]
        if len(keep):
            if cfg.nms_rotated:
                sel = rotated_nms(boxes, s, lab, cfg.nms_iou, max_keep=cfg.nms_post)
            else:
                sel = batched_nms(nearest_bev_boxes(boxes), s, lab, cfg.nms_iou)[: cfg.nms_post]
            boxes, s, lab = boxes[sel], s[sel], lab[sel]
        boxes = torch.cat([boxes[:, :6], limit_period(boxes[:, 6:7], 0.5, 2 * math.pi)], 1)
        out.append({"boxes": boxes.cpu(), "scores": s.cpu(), "labels": lab.cpu()})
    return out


def box_corners_3d(boxes: torch.Tensor) -> torch.Tensor:
    """The 8 corners ``[N, 8, 3]`` of LiDAR-style boxes ``(x, y, z_centre, dx, dy, dz, yaw)``."""
    boxes = boxes.reshape(-1, 7).float()
    sign = torch.tensor([[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
                         [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]], dtype=boxes.dtype, device=boxes.device)
    local = sign[None] * boxes[:, None, 3:6] / 2                                 # [N, 8, 3]
    c, s = torch.cos(boxes[:, 6])[:, None], torch.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return torch.stack([x, y, local[..., 2]], -1) + boxes[:, None, :3]


def project_boxes_to_image(boxes: torch.Tensor, calib: dict, image_hw: tuple | None = None) -> torch.Tensor:
    """2D image boxes ``[N, 4]`` (x1, y1, x2, y2) of LiDAR-style 3D boxes: the 8 corners through
    ``P2 · R_rect · Tr_velo_cam``, their bounding rectangle, clipped to the image ``(H, W)`` when given — OpenPCDet's
    ``boxes3d_kitti_camera_to_imageboxes``, which the released evaluation uses to give every detection the 2D box
    that the devkit's minimum-height rule reads. ``calib`` values ``[3, 4]`` / ``[3, 3]`` (one frame). Corners
    behind the camera are clamped to a depth of 0.1 m (as the release, which divides by the clamped depth)."""
    from .models.streamdsgn import lidar_to_image_matrices

    boxes = boxes.reshape(-1, 7).float()
    if len(boxes) == 0:
        return boxes.new_zeros(0, 4)
    calib = {k: torch.as_tensor(v, dtype=torch.float32, device=boxes.device) for k, v in calib.items()
             if k in ("P2", "R_rect", "Tr_velo_cam")}
    cam_from_lidar, p2 = lidar_to_image_matrices(calib)
    pts = box_corners_3d(boxes)                                                 # [N, 8, 3]
    homo = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)
    img = homo @ (p2[0] @ cam_from_lidar[0]).T                                  # [N, 8, 3]
    z = img[..., 2].clamp_min(0.1)
    u, v = img[..., 0] / z, img[..., 1] / z
    out = torch.stack([u.min(1).values, v.min(1).values, u.max(1).values, v.max(1).values], 1)
    if image_hw is not None:
        h, w = image_hw
        out[:, 0::2] = out[:, 0::2].clamp(0, w - 1)
        out[:, 1::2] = out[:, 1::2].clamp(0, h - 1)
    return out


def image_window(sample: dict, image_size: tuple) -> tuple[float, float, float, float]:
    """The pixel window ``(u0, v0, u1, v1)``, in the coordinates of the (cropped) input, that detections' 2D boxes are
    clipped to: the **original** image, as OpenPCDet clips predicted boxes to ``info['image']['image_shape']`` with
    the original calibration, so a box reaching above a bottom crop keeps its full height for the devkit's
    minimum-height rule (as the label boxes of the ground truth do). Samples without ``crop_offset`` /
    ``image_shape`` (e.g. hand-built ones) get the input image ``image_size``."""
    if sample.get("image_shape") is None:
        return 0.0, 0.0, float(image_size[1] - 1), float(image_size[0] - 1)
    x0, y0 = sample.get("crop_offset", (0, 0))
    h, w = sample["image_shape"]
    return float(-x0), float(-y0), float(w - 1 - x0), float(h - 1 - y0)


def clip_to_window(bbox: torch.Tensor, window: tuple) -> torch.Tensor:
    """``bbox [N, 4]`` (x1, y1, x2, y2) clipped to ``window`` ``(u0, v0, u1, v1)`` (a copy)."""
    u0, v0, u1, v1 = window
    out = bbox.clone()
    out[:, 0::2] = out[:, 0::2].clamp(u0, u1)
    out[:, 1::2] = out[:, 1::2].clamp(v0, v1)
    return out


def default_height_scale(calib: dict) -> float:
    """Factor for the devkit's 40 / 25 px minimum box heights: 1.0 for KITTI-resolution images (a focal length
    within 5 % of KITTI's, e.g. the 320×1248 crop, which is cropped, not resized), else ``f_u / 721.5377`` for images
    rendered or resized to another scale (the synthetic default at 96×320 has ``f_u = 721.5377 · 320 / 1248``)."""
    f = float(torch.as_tensor(calib["P2"]).reshape(-1, 4)[0, 0])
    ratio = f / KITTI_FOCAL
    return 1.0 if 0.95 <= ratio <= 1.05 else ratio

"""StreamDSGN losses (notes B5). Every anchor loss is normalised by the number of positive anchors of the frame,
clamped below at ``pos_normalizer_min`` (10 in the released configuration), then summed and divided by the batch.

* :func:`sigmoid_focal_loss` — focal classification, α = 0.25, γ = 2, over positives and negatives (ignored anchors
  excluded); one-hot targets without the background column.
* :func:`box_regression_loss` — Smooth-L1 (β = 1/9) on the residuals with the angle in sin(Δθ) form
  (``sin(a)cos(b)`` vs ``cos(a)sin(b)``, OpenPCDet ``add_sin_difference``), positives only.
* :func:`direction_loss` — cross-entropy of the direction bins, positives only.
* :func:`depth_loss` — soft cross-entropy over depth bins with linear two-bin targets
  ``p_i = max(0, 1 − |d_i − gt| / Δ)``, averaged over pixels whose LiDAR depth lies inside the bin range (B1.6).
* :func:`motion_consistency_loss` — velocity + 0.2·acceleration consistency of the next-frame prediction with the
  object's last two displacements (B5 MCL).
* :func:`iou3d_loss` — 1 − IoU3D of predicted vs target boxes, differentiable: rotated BEV overlap by convex polygon
  clipping (the two rectangles' corners inside the other box plus edge intersections, ordered by angle, shoelace
  area) times the height overlap, in pure torch (the released code uses a CUDA op).

Weights (``LossWeights``): cls 1, loc 0.5, IoU 1, dir 0.2, MCL 0.2, depth 1 (B5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossWeights", "sigmoid_focal_loss", "box_regression_loss", "direction_loss", "depth_loss",
           "motion_consistency_loss", "smooth_l1", "iou3d_loss", "rotated_bev_overlap", "boxes_iou3d_aligned"]


@dataclass
class LossWeights:
    cls: float = 1.0
    loc: float = 0.5
    iou: float = 1.0
    dir: float = 0.2
    mcl: float = 0.2
    depth: float = 1.0
    mcl_acc: float = 0.2            # the acceleration term's balance inside the MCL (bal_hyparam)
    pos_normalizer_min: float = 10.0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"loss weight {k} must be a non-negative number, got {v!r}")


def smooth_l1(diff: torch.Tensor, beta: float = 1.0 / 9.0) -> torch.Tensor:
    """Elementwise Smooth-L1 of a difference: ``0.5 d²/β`` for ``|d| < β``, else ``|d| − β/2``."""
    n = diff.abs()
    if beta < 1e-5:
        return n
    return torch.where(n < beta, 0.5 * n ** 2 / beta, n - 0.5 * beta)


def _normalizer(labels: torch.Tensor, min_value: float) -> torch.Tensor:
    return (labels > 0).sum(-1, keepdim=True).float().clamp_min(min_value)


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float = 0.25,
                       gamma: float = 2.0, pos_normalizer_min: float = 10.0) -> torch.Tensor:
    """``logits [B, N, C]``, ``labels [B, N]`` (−1 ignore, 0 background, c + 1 class c). Returns a scalar."""
    if logits.shape[:2] != labels.shape or logits.shape[-1] != num_classes:
        raise ValueError(f"logits [B, N, {num_classes}] and labels [B, N] expected, got {tuple(logits.shape)}, "
                         f"{tuple(labels.shape)}")
    weights = (labels >= 0).float() / _normalizer(labels, pos_normalizer_min)
    target = F.one_hot(labels.clamp_min(0), num_classes + 1)[..., 1:].to(logits.dtype)
    x = logits.float()
    p = torch.sigmoid(x)
    alpha_w = target * alpha + (1 - target) * (1 - alpha)
    pt = target * (1 - p) + (1 - target) * p
    ce = F.binary_cross_entropy_with_logits(x, target.float(), reduction="none")
    loss = alpha_w * pt.pow(gamma) * ce * weights[..., None]
    return loss.sum() / logits.shape[0]


def _add_sin_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ra = torch.sin(a[..., 6:7]) * torch.cos(b[..., 6:7])
    rb = torch.cos(a[..., 6:7]) * torch.sin(b[..., 6:7])
    return torch.cat([a[..., :6], ra], -1), torch.cat([b[..., :6], rb], -1)


def box_regression_loss(box_preds: torch.Tensor, box_targets: torch.Tensor, labels: torch.Tensor,
                        beta: float = 1.0 / 9.0, pos_normalizer_min: float = 10.0) -> torch.Tensor:
    """``box_preds``/``box_targets [B, N, 7]`` residuals; positives only."""
    weights = (labels > 0).float() / _normalizer(labels, pos_normalizer_min)
    p, t = _add_sin_difference(box_preds.float(), box_targets.float())
    return (smooth_l1(p - t, beta).sum(-1) * weights).sum() / box_preds.shape[0]


def direction_loss(dir_logits: torch.Tensor, dir_targets: torch.Tensor, labels: torch.Tensor,
                   pos_normalizer_min: float = 10.0) -> torch.Tensor:
    """Cross-entropy of direction bins ``[B, N, K]`` against ``[B, N]`` targets, positives only."""
    weights = (labels > 0).float() / _normalizer(labels, pos_normalizer_min)
    ce = F.cross_entropy(dir_logits.float().flatten(0, 1), dir_targets.flatten(), reduction="none")
    return (ce.view_as(weights) * weights).sum() / dir_logits.shape[0]


def depth_loss(depth_logits: torch.Tensor, depth_gt: torch.Tensor, bin_centers: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy ``−Σ_i p_i log softmax_i`` with ``p_i = max(0, 1 − |d_i − gt| / Δ)``, averaged over pixels
    with ``gt`` inside ``[d_0, d_last]`` (elsewhere, including gt = 0 = no LiDAR point, ignored). ``depth_logits
    [B, K, H, W]``, ``depth_gt [B, H, W]``, ``bin_centers [K]`` (uniform). Zero if no pixel is valid."""
    if depth_logits.ndim != 4 or depth_gt.shape != (depth_logits.shape[0], *depth_logits.shape[2:]):
        raise ValueError(f"depth_logits [B, K, H, W] and depth_gt [B, H, W] expected, got "
                         f"{tuple(depth_logits.shape)}, {tuple(depth_gt.shape)}")
    bins = bin_centers.to(depth_logits.device, torch.float32)
    step = float(bins[1] - bins[0]) if len(bins) > 1 else 1.0
    valid = (depth_gt >= bins[0]) & (depth_gt <= bins[-1])
    if not valid.any():
        return depth_logits.sum() * 0.0
    logits = depth_logits.float().permute(0, 2, 3, 1)[valid]                     # [P, K]
    gt = depth_gt.float()[valid]
    target = (1 - (bins[None] - gt[:, None]).abs() / step).clamp_min(0)
    return -(target * logits.log_softmax(-1)).sum(-1).mean()


def _delta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([a[:, :3] - b[:, :3], torch.sin(a[:, 6:7] - b[:, 6:7])], 1)


def motion_consistency_loss(pred_next: torch.Tensor, g_t: torch.Tensor, g_tm1: torch.Tensor, g_tm2: torch.Tensor,
                            normalizer: float, acc_weight: float = 0.2, beta: float = 1.0 / 9.0) -> torch.Tensor:
    """MCL (B5): with ``Δ(a, b) = (x, y, z differences, sin(θ_a − θ_b))``, ``δ1 = Δ(b̂_{t+1}, g_t)``,
    ``δ2 = Δ(g_t, g_{t−1})``, ``δ3 = Δ(g_{t−1}, g_{t−2})``:
    ``Σ_P [SmoothL1(δ1 − δ2) + acc_weight · SmoothL1((δ1 − δ2) − (δ2 − δ3))] / normalizer`` over the matched positive
    anchors ``P`` (all inputs ``[P, 7]`` decoded boxes; the targets are constants)."""
    if not (pred_next.shape == g_t.shape == g_tm1.shape == g_tm2.shape) or pred_next.ndim != 2:
        raise ValueError("pred_next, g_t, g_tm1, g_tm2 must be equal [P, 7] tensors")
    if len(pred_next) == 0:
        return pred_next.sum() * 0.0
    d1 = _delta(pred_next.float(), g_t.float())
    d2 = _delta(g_t.float(), g_tm1.float())
    d3 = _delta(g_tm1.float(), g_tm2.float())
    vel = smooth_l1(d1 - d2, beta).sum(-1)
    acc = smooth_l1((d1 - d2) - (d2 - d3), beta).sum(-1)
    return (vel + acc_weight * acc).sum() / normalizer


# ---------------------------------------------------------------------------------------------------- 3D IoU
def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise BEV corners ``[N, 4, 2]``."""
    x, y, dx, dy, r = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    sx = torch.tensor([-0.5, 0.5, 0.5, -0.5], device=boxes.device, dtype=boxes.dtype)
    sy = torch.tensor([-0.5, -0.5, 0.5, 0.5], device=boxes.device, dtype=boxes.dtype)
    lx, ly = dx[:, None] * sx, dy[:, None] * sy
    c, s = torch.cos(r)[:, None], torch.sin(r)[:, None]
    return torch.stack([x[:, None] + lx * c - ly * s, y[:, None] + lx * s + ly * c], -1)


def _inside(points: torch.Tensor, corners: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``[N, P]`` whether points ``[N, P, 2]`` lie inside the convex CCW quads ``[N, 4, 2]``."""
    a = corners
    b = torch.roll(corners, -1, 1)
    e = (b - a)[:, None]                                                        # [N, 1, 4, 2]
    v = points[:, :, None] - a[:, None]                                         # [N, P, 4, 2]
    cross = e[..., 0] * v[..., 1] - e[..., 1] * v[..., 0]
    return (cross >= -eps).all(-1)


def rotated_bev_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Differentiable BEV intersection area ``[N]`` of paired boxes ``a[i]``, ``b[i]`` (``[N, 7]``)."""
    ca, cb = _corners(a), _corners(b)
    # edge intersections: every edge of a with every edge of b
    p1, p2 = ca[:, :, None], torch.roll(ca, -1, 1)[:, :, None]                   # [N, 4, 1, 2]
    q1, q2 = cb[:, None], torch.roll(cb, -1, 1)[:, None]                         # [N, 1, 4, 2]
    r, s = p2 - p1, q2 - q1
    denom = r[..., 0] * s[..., 1] - r[..., 1] * s[..., 0]
    qp = q1 - p1
    safe = torch.where(denom.abs() < 1e-8, torch.full_like(denom, 1e-8), denom)
    t = (qp[..., 0] * s[..., 1] - qp[..., 1] * s[..., 0]) / safe
    u = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
    inter = p1 + t[..., None] * r                                               # [N, 4, 4, 2]
    inter_ok = (denom.abs() >= 1e-8) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    pts = torch.cat([ca, cb, inter.flatten(1, 2)], 1)                           # [N, 24, 2]
    ok = torch.cat([_inside(ca, cb), _inside(cb, ca), inter_ok.flatten(1)], 1)  # [N, 24]
    cnt = ok.sum(1, keepdim=True).clamp_min(1)
    center = (pts * ok[..., None]).sum(1, keepdim=True) / cnt[..., None]
    ang = torch.atan2(pts[..., 1] - center[..., 1], pts[..., 0] - center[..., 0])
    ang = torch.where(ok, ang, torch.full_like(ang, 10.0))                      # invalid points sort last
    order = ang.argsort(1)
    pts_s = torch.gather(pts, 1, order[..., None].expand(-1, -1, 2))
    ok_s = torch.gather(ok, 1, order)
    # replace invalid trailing points with the first valid point (they add zero area)
    first = pts_s[:, :1].expand_as(pts_s)
    pts_s = torch.where(ok_s[..., None], pts_s, first)
    nxt = torch.roll(pts_s, -1, 1)
    area = 0.5 * (pts_s[..., 0] * nxt[..., 1] - pts_s[..., 1] * nxt[..., 0]).sum(1)
    return torch.where(ok.sum(1) >= 3, area.abs(), area.new_zeros(()))


def boxes_iou3d_aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU3D ``[N]`` of paired boxes (z = centre): rotated BEV overlap × height overlap / union volume."""
    a, b = a.float(), b.float()
    bev = rotated_bev_overlap(a, b)
    top = torch.minimum(a[:, 2] + a[:, 5] / 2, b[:, 2] + b[:, 5] / 2)
    bot = torch.maximum(a[:, 2] - a[:, 5] / 2, b[:, 2] - b[:, 5] / 2)
    inter = bev * (top - bot).clamp_min(0)
    vol_a, vol_b = a[:, 3] * a[:, 4] * a[:, 5], b[:, 3] * b[:, 4] * b[:, 5]
    return inter / (vol_a + vol_b - inter).clamp_min(1e-6)


def iou3d_loss(pred_boxes: torch.Tensor, target_boxes: torch.Tensor, normalizer: float) -> torch.Tensor:
    """``Σ (1 − IoU3D(pred, target)) / normalizer`` over paired decoded boxes ``[P, 7]``."""
    if len(pred_boxes) == 0:
        return pred_boxes.sum() * 0.0
    return (1 - boxes_iou3d_aligned(pred_boxes, target_boxes.detach())).sum() / normalizer


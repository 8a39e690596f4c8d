"""3D detection metrics: rotated BEV / 3D IoU and KITTI-style interpolated average precision.

Boxes follow the LiDAR-style convention ``(x, y, z, dx, dy, dz, yaw)`` with ``z`` the box centre, ``dx``/``dy``
the extents along the box's heading / lateral axes and ``yaw`` the rotation about the up axis (radians).
The BEV footprint is the rectangle in the ``x``-``y`` plane. AP follows the KITTI definition: precision
interpolated as the maximum precision at recall >= r, averaged over 40 recall points ``1/40..1`` (R40) or
11 points ``0, 0.1..1`` (R11).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "box_corners_bev",
    "polygon_area",
    "iou_bev",
    "iou_3d",
    "average_precision",
    "match_detections",
    "kitti_difficulty_mask",
]


def box_corners_bev(box: np.ndarray) -> np.ndarray:
    """Counter-clockwise BEV corners ``[4, 2]`` of one box ``(x, y, z, dx, dy, dz, yaw)``."""
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (7,):
        raise ValueError(f"box must have shape (7,) (x, y, z, dx, dy, dz, yaw), got {box.shape}")
    x, y, _, dx, dy, _, yaw = box
    local = np.array([[dx, dy], [-dx, dy], [-dx, -dy], [dx, -dy]]) / 2.0
    local = local[[2, 3, 0, 1]]  # start bottom-left, counter-clockwise
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.array([x, y])


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon ``[N, 2]`` (0 for fewer than 3 vertices)."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _clip(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clipping of a convex polygon by a convex counter-clockwise polygon."""
    out = list(subject)
    n = len(clip)
    for i in range(n):
        a, b = clip[i], clip[(i + 1) % n]
        edge = b - a
        if not out:
            break
        inp, out = out, []

        def side(p, a=a, edge=edge):
            return edge[0] * (p[1] - a[1]) - edge[1] * (p[0] - a[0])

        for j in range(len(inp)):
            p, q = inp[j], inp[(j + 1) % len(inp)]
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 2)


def _inter_bev(a: np.ndarray, b: np.ndarray) -> float:
    return polygon_area(_clip(box_corners_bev(a), box_corners_bev(b)))


def iou_bev(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise rotated BEV IoU ``[N, M]`` of boxes ``[N, 7]`` and ``[M, 7]``."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            inter = _inter_bev(a[i], b[j])
            union = a[i, 3] * a[i, 4] + b[j, 3] * b[j, 4] - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def iou_3d(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise rotated 3D IoU ``[N, M]``: BEV intersection times height overlap over the volume union."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            top = min(a[i, 2] + a[i, 5] / 2, b[j, 2] + b[j, 5] / 2)
            bottom = max(a[i, 2] - a[i, 5] / 2, b[j, 2] - b[j, 5] / 2)
            h = max(0.0, top - bottom)
            inter = _inter_bev(a[i], b[j]) * h
            union = np.prod(a[i, 3:6]) + np.prod(b[j, 3:6]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def match_detections(scores, ious: np.ndarray, iou_threshold: float):
    """Greedy matching in descending score order: returns the true-positive flag of each detection (sorted)
    and the sorted scores. ``ious`` is ``[num_det, num_gt]``."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    used = np.zeros(ious.shape[1], dtype=bool)
    tp = np.zeros(len(scores), dtype=bool)
    for k, d in enumerate(order):
        if ious.shape[1] == 0:
            break
        cand = np.where(~used, ious[d], -1.0)
        g = int(np.argmax(cand))
        if cand[g] >= iou_threshold:
            used[g] = True
            tp[k] = True
    return tp, scores[order]


def average_precision(tp_flags, num_gt: int, points: str = "R40") -> float:
    """Interpolated AP from true-positive flags of detections sorted by descending score (pooled over frames).

    ``points``: ``"R40"`` (recall 1/40..1) or ``"R11"`` (recall 0, 0.1..1). Returns a value in [0, 1].
    """
    if points not in ("R40", "R11"):
        raise ValueError(f"points must be 'R40' or 'R11', got {points!r}")
    if num_gt <= 0:
        raise ValueError(f"num_gt must be positive, got {num_gt}")
    tp = np.asarray(tp_flags, dtype=np.float64)
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / num_gt
    precision = ctp / np.arange(1, len(tp) + 1)
    grid = np.linspace(1 / 40, 1.0, 40) if points == "R40" else np.linspace(0.0, 1.0, 11)
    vals = [precision[recall >= r - 1e-12].max() if np.any(recall >= r - 1e-12) else 0.0 for r in grid]
    return float(np.mean(vals))


# KITTI benchmark thresholds: minimum 2D box height (px), maximum occlusion level, maximum truncation.
_DIFFICULTY = {"easy": (40.0, 0, 0.15), "moderate": (25.0, 1, 0.30), "hard": (25.0, 2, 0.50)}


def kitti_difficulty_mask(bbox_height, occluded, truncated, difficulty: str) -> np.ndarray:
    """Boolean mask of the ground-truth boxes counted at a KITTI difficulty ("easy", "moderate", "hard");
    as in KITTI, each level includes the easier ones."""
    if difficulty not in _DIFFICULTY:
        raise ValueError(f"difficulty must be one of {sorted(_DIFFICULTY)}, got {difficulty!r}")
    min_h, max_occ, max_trunc = _DIFFICULTY[difficulty]
    h = np.asarray(bbox_height, dtype=np.float64)
    return (h >= min_h) & (np.asarray(occluded) <= max_occ) & (np.asarray(truncated, dtype=np.float64) <= max_trunc)

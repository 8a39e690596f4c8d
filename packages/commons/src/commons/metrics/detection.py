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
    "kitti_eval",
    "KITTI_CLASSES",
    "KITTI_IOU",
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


def _candidate_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs whose BEV circumscribed circles overlap (all others have zero intersection)."""
    ra = np.hypot(a[:, 3], a[:, 4]) / 2
    rb = np.hypot(b[:, 3], b[:, 4]) / 2
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    return np.nonzero(d < ra[:, None] + rb[None, :])


def _bev_intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise rotated BEV intersection areas ``[N, M]`` (polygon clipping only for nearby pairs)."""
    inter = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return inter
    ii, jj = _candidate_pairs(a, b)
    for i, j in zip(ii.tolist(), jj.tolist()):
        inter[i, j] = _inter_bev(a[i], b[j])
    return inter


def iou_bev(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise rotated BEV IoU ``[N, M]`` of boxes ``[N, 7]`` and ``[M, 7]``."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    inter = _bev_intersections(a, b)
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def iou_3d(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise rotated 3D IoU ``[N, M]``: BEV intersection times height overlap over the volume union."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    top = np.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None, :])
    bottom = np.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None, :])
    inter = _bev_intersections(a, b) * np.clip(top - bottom, 0.0, None)
    union = np.prod(a[:, 3:6], 1)[:, None] + np.prod(b[:, 3:6], 1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


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
    as in KITTI, each level includes the easier ones. Like the devkit's ``clean_data``: height strictly above the
    minimum, occlusion and truncation at most the maximum."""
    if difficulty not in _DIFFICULTY:
        raise ValueError(f"difficulty must be one of {sorted(_DIFFICULTY)}, got {difficulty!r}")
    min_h, max_occ, max_trunc = _DIFFICULTY[difficulty]
    h = np.asarray(bbox_height, dtype=np.float64)
    return (h > min_h) & (np.asarray(occluded) <= max_occ) & (np.asarray(truncated, dtype=np.float64) <= max_trunc)


# ------------------------------------------------------------------------------------- KITTI evaluation (devkit)
KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")
#: (strict, loose) IoU thresholds of the KITTI 3D / BEV benchmark (OpenPCDet ``kitti_object_eval_python``).
KITTI_IOU = {"Car": (0.7, 0.5), "Pedestrian": (0.5, 0.25), "Cyclist": (0.5, 0.25)}
# the devkit's neighbouring classes: a Van is "don't care" for Car, a Person_sitting for Pedestrian
_NEIGHBOUR = {"Car": "Van", "Pedestrian": "Person_sitting"}
_DEVKIT_MIN_HEIGHT = {"easy": 40.0, "moderate": 25.0, "hard": 25.0}
_DEVKIT_MAX_OCC = {"easy": 0, "moderate": 1, "hard": 2}
_DEVKIT_MAX_TRUNC = {"easy": 0.15, "moderate": 0.30, "hard": 0.50}
_NUM_SAMPLE_PTS = 41


def _devkit_thresholds(scores: np.ndarray, num_gt: int) -> np.ndarray:
    """Score thresholds at about evenly spaced recall levels (the devkit's ``get_thresholds``, 41 points)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    current, out = 0.0, []
    for i, sc in enumerate(scores):
        l_rec = (i + 1) / num_gt
        r_rec = (i + 2) / num_gt if i < len(scores) - 1 else l_rec
        if (r_rec - current) < (current - l_rec) and i < len(scores) - 1:
            continue
        out.append(sc)
        current += 1.0 / (_NUM_SAMPLE_PTS - 1)
    return np.asarray(out)


def _frame_statuses(gt: dict, det: dict, cls: str, cls_index: int, difficulty: str, height_scale: float):
    """The devkit's ``clean_data`` for one frame: GT status 0 counted / 1 ignored / -1 other, det status 0 / 1 / -1."""
    g = len(gt["boxes"])
    names = gt.get("names")
    if names is not None:
        is_cls = np.array([n == cls for n in names], dtype=bool)
        is_neighbour = np.array([n == _NEIGHBOUR.get(cls) for n in names], dtype=bool)
    else:
        is_cls = np.asarray(gt["labels"]).reshape(-1) == cls_index
        is_neighbour = np.zeros(g, dtype=bool)
    height = np.asarray(gt.get("bbox_height", np.full(g, np.inf)), dtype=np.float64).reshape(-1)
    occ = np.asarray(gt.get("occluded", np.zeros(g)), dtype=np.float64).reshape(-1)
    trunc = np.asarray(gt.get("truncated", np.zeros(g)), dtype=np.float64).reshape(-1)
    min_h = _DEVKIT_MIN_HEIGHT[difficulty] * height_scale
    ignore = (occ > _DEVKIT_MAX_OCC[difficulty]) | (trunc > _DEVKIT_MAX_TRUNC[difficulty]) | (height <= min_h)
    gs = np.full(g, -1, dtype=np.int64)
    gs[is_cls & ~ignore] = 0
    gs[is_neighbour | (is_cls & ignore)] = 1
    ds = np.where(np.asarray(det["labels"]).reshape(-1) == cls_index, 0, -1).astype(np.int64)
    if "bbox_height" in det:  # the devkit ignores (neither TP nor FP) detections lower than the minimum height
        ds[np.asarray(det["bbox_height"], dtype=np.float64).reshape(-1) < min_h] = 1
    return gs, ds


def _tp_scores(ov: np.ndarray, scores: np.ndarray, gs: np.ndarray, ds: np.ndarray, thr: float) -> list[float]:
    """Devkit pass 1 (``compute_fp=False``): each GT takes the highest-scoring free detection above the IoU threshold;
    the scores of true positives give the recall thresholds."""
    assigned = np.zeros(len(ds), dtype=bool)
    out = []
    for i in np.nonzero(gs != -1)[0]:
        cand = (ds != -1) & ~assigned & (ov[:, i] > thr)
        if not cand.any():
            continue
        j = int(np.argmax(np.where(cand, scores, -np.inf)))
        assigned[j] = True
        if gs[i] == 0 and ds[j] == 0:
            out.append(float(scores[j]))
    return out


def _stats_at_thresholds(ov, scores, gs, ds, thr: float, thresholds: np.ndarray) -> np.ndarray:
    """Devkit pass 2 (``compute_fp=True``) for all score thresholds at once: ``[T, 3]`` (tp, fp, fn).

    For each GT (in order) the free detection above the IoU threshold with the largest overlap among non-ignored
    detections wins, else the first ignored one; a match involving an ignored GT or detection counts as neither TP
    nor FP; unmatched non-ignored detections are false positives."""
    t_n, d_n = len(thresholds), len(ds)
    stats = np.zeros((t_n, 3), dtype=np.int64)
    if d_n == 0:  # nothing detected: every counted GT is missed
        stats[:, 2] = int((gs == 0).sum())
        return stats
    active = scores[None, :] >= thresholds[:, None]  # [T, D]
    assigned = np.zeros((t_n, d_n), dtype=bool)
    rows = np.arange(t_n)
    for i in np.nonzero(gs != -1)[0]:
        cand = active & ~assigned & (ds != -1)[None, :] & (ov[:, i] > thr)[None, :]
        valid = cand & (ds == 0)[None, :]
        ign = cand & (ds == 1)[None, :]
        has_valid, has_ign = valid.any(1), ign.any(1)
        best = np.argmax(np.where(valid, ov[:, i][None, :], -1.0), 1)
        first_ign = np.argmax(ign, 1)
        matched = has_valid | has_ign
        j = np.where(has_valid, best, first_ign)
        if gs[i] == 0:
            stats[:, 2] += ~matched
            stats[:, 0] += matched & has_valid
        assigned[rows[matched], j[matched]] = True
    stats[:, 1] = (active & ~assigned & (ds == 0)[None, :]).sum(1)
    return stats


def _devkit_ap(precision: np.ndarray) -> tuple[float, float]:
    """(R40, R11) in percent from the 41-slot max-interpolated precision."""
    return float(precision[1:].sum() / 40 * 100), float(precision[0::4].sum() / 11 * 100)


def kitti_eval(
    gt_frames: list[dict],
    det_frames: list[dict],
    classes: tuple[str, ...] = KITTI_CLASSES,
    metrics: tuple[str, ...] = ("bev", "3d"),
    difficulties: tuple[str, ...] = ("easy", "moderate", "hard"),
    height_scale: float = 1.0,
    iou_thresholds: dict | None = None,
) -> dict:
    """KITTI 3D / BEV average precision per class and difficulty, R40 and R11, as the official devkit
    (``kitti_object_eval_python`` in OpenPCDet) computes it.

    Args:
        gt_frames: one dict per frame: ``"boxes"`` ``[G, 7]`` LiDAR-style, ``"labels"`` ``[G]`` (index into
            ``classes``; anything else is another class), optional ``"names"`` (KITTI type strings, which then
            decide the class and mark ``Van`` / ``Person_sitting`` as ignored for Car / Pedestrian; ``DontCare`` rows
            may be included), and ``"bbox_height"`` (2D box height, px), ``"occluded"``, ``"truncated"`` for the
            difficulty filter (missing -> every GT counts at every difficulty).
        det_frames: one dict per frame: ``"boxes"`` ``[D, 7]``, ``"labels"`` ``[D]``, ``"scores"`` ``[D]``; optional
            ``"bbox_height"`` (detections lower than the difficulty's minimum height are ignored, as in the devkit).
        classes: class names in label order (subset of Car, Pedestrian, Cyclist or any with ``iou_thresholds``).
        metrics: ``"bev"`` and/or ``"3d"``.
        height_scale: multiplies the 40 / 25 px minimum heights (use ``image_width / 1242`` for downscaled images).
        iou_thresholds: ``{class: (strict, loose)}``; default :data:`KITTI_IOU`.

    GT handling (devkit ``clean_data``): a GT of the class that passes the difficulty filter (height > min,
    occlusion <= max, truncation <= max) is counted; a GT of the class failing it, or of the neighbouring class,
    is *ignored*: a detection matched to it is neither TP nor FP. Matching (devkit ``compute_statistics``): IoU
    strictly above the threshold; recall thresholds from the true-positive scores (``get_thresholds``, 41 points),
    precision max-interpolated; R40 = mean over points 1..40, R11 = points 0, 4, ..., 40. Note the devkit's
    property that with fewer than ~40 GT the 41 slots are not all reached and the AP is low.

    Returns:
        ``{class: {"bev_R40": {difficulty: AP%}, "bev_R11": ..., "3d_R40": ..., "3d_R11": ..., and the same with a
        ``"_loose"`` suffix at the loose IoU, "num_gt": {difficulty: n}}}``; AP is in percent (0-100), ``nan`` for a
        class/difficulty without counted GT.
    """
    if len(gt_frames) != len(det_frames):
        raise ValueError(f"gt_frames and det_frames must have the same length, got {len(gt_frames)} "
                         f"and {len(det_frames)}")
    if any(m not in ("bev", "3d") for m in metrics):
        raise ValueError(f"metrics must be a subset of ('bev', '3d'), got {metrics!r}")
    if any(d not in _DEVKIT_MIN_HEIGHT for d in difficulties):
        raise ValueError(f"difficulties must be a subset of ('easy', 'moderate', 'hard'), got {difficulties!r}")
    if height_scale <= 0:
        raise ValueError(f"height_scale must be positive, got {height_scale}")
    ious_cfg = dict(KITTI_IOU)
    ious_cfg.update(iou_thresholds or {})
    missing = [c for c in classes if c not in ious_cfg]
    if missing:
        raise ValueError(f"no IoU thresholds for classes {missing}; pass iou_thresholds={{name: (strict, loose)}}")

    def arr(d: dict, key: str, width: int | None = None) -> np.ndarray:
        v = d.get(key)
        v = np.zeros((0, width) if width else 0) if v is None else v
        v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        return v.reshape(-1, width) if width else v.reshape(-1)

    gts, dets = [], []
    for g, d in zip(gt_frames, det_frames):
        gg = {k: arr(g, k) for k in ("labels", "bbox_height", "occluded", "truncated") if g.get(k) is not None}
        gg["boxes"] = arr(g, "boxes", 7).astype(np.float64)
        gg.setdefault("labels", np.full(len(gg["boxes"]), -1))
        if g.get("names") is not None:
            gg["names"] = list(g["names"])
            keep = np.array([n != "DontCare" for n in gg["names"]], dtype=bool)  # no 3D box: only used for 2D AP
            if not keep.all():
                gg = {k: (np.asarray(v)[keep] if k != "names" else [n for n, kp in zip(v, keep) if kp])
                      for k, v in gg.items()}
        dd = {"boxes": arr(d, "boxes", 7).astype(np.float64), "labels": arr(d, "labels"),
              "scores": arr(d, "scores").astype(np.float64)}
        if d.get("bbox_height") is not None:
            dd["bbox_height"] = arr(d, "bbox_height")
        if not (len(dd["boxes"]) == len(dd["labels"]) == len(dd["scores"])):
            raise ValueError("each detection frame needs boxes [D,7], labels [D] and scores [D] of one length")
        gts.append(gg)
        dets.append(dd)
    overlaps = {m: [(iou_bev if m == "bev" else iou_3d)(d["boxes"], g["boxes"]) for g, d in zip(gts, dets)]
                for m in metrics}

    result: dict = {}
    for ci, cls in enumerate(classes):
        res_c: dict = {"num_gt": {}}
        for diff in difficulties:
            statuses = [_frame_statuses(g, d, cls, ci, diff, height_scale) for g, d in zip(gts, dets)]
            num_gt = int(sum((gs == 0).sum() for gs, _ in statuses))
            res_c["num_gt"][diff] = num_gt
            for m in metrics:
                for tag, thr in (("", ious_cfg[cls][0]), ("_loose", ious_cfg[cls][1])):
                    if num_gt == 0:
                        r40 = r11 = float("nan")
                    else:
                        tp_scores = []
                        for (gs, ds), ov, d in zip(statuses, overlaps[m], dets):
                            tp_scores += _tp_scores(ov, d["scores"], gs, ds, thr)
                        thresholds = _devkit_thresholds(np.asarray(tp_scores), num_gt)
                        total = np.zeros((len(thresholds), 3), dtype=np.int64)
                        if len(thresholds):
                            for (gs, ds), ov, d in zip(statuses, overlaps[m], dets):
                                if (gs != -1).any() or (ds == 0).any():
                                    total += _stats_at_thresholds(ov, d["scores"], gs, ds, thr, thresholds)
                        prec = np.zeros(_NUM_SAMPLE_PTS)
                        if len(thresholds):
                            p = total[:, 0] / np.maximum(total[:, 0] + total[:, 1], 1)
                            prec[:len(p)] = np.maximum.accumulate(p[::-1])[::-1]
                        r40, r11 = _devkit_ap(prec)
                    res_c.setdefault(f"{m}_R40{tag}", {})[diff] = r40
                    res_c.setdefault(f"{m}_R11{tag}", {})[diff] = r11
        result[cls] = res_c
    return result

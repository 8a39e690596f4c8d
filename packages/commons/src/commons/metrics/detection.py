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


def _corners_bev_many(boxes: np.ndarray) -> np.ndarray:
    """Counter-clockwise BEV corners ``[N, 4, 2]`` of boxes ``[N, 7]`` (same order as :func:`box_corners_bev`)."""
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) / 2.0
    half = local[None] * boxes[:, None, 3:5]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = half[..., 0] * c - half[..., 1] * s + boxes[:, None, 0]
    y = half[..., 0] * s + half[..., 1] * c + boxes[:, None, 1]
    return np.stack([x, y], -1)


def _convex_intersection_areas(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """Areas of the intersections of convex counter-clockwise quadrilaterals ``pa[k]`` and ``pb[k]`` (``[K, 4, 2]``),
    vectorised over ``k``: the intersection polygon's vertices are the corners of each inside the other plus the
    edge-edge crossings; they are sorted by angle around their mean and fed to the shoelace formula."""
    k = len(pa)
    eps = 1e-9

    def inside(pts, poly):  # [K, P, 2] points inside (or on) convex ccw poly [K, 4, 2]
        e0, e1 = poly, np.roll(poly, -1, axis=1)
        edge = (e1 - e0)[:, None]  # [K, 1, 4, 2]
        rel = pts[:, :, None] - e0[:, None]  # [K, P, 4, 2]
        cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]
        scale = np.linalg.norm(edge, axis=-1)
        return (cross >= -eps * np.maximum(scale, 1.0)).all(-1)

    a0, a1 = pa, np.roll(pa, -1, axis=1)
    b0, b1 = pb, np.roll(pb, -1, axis=1)
    da, db = (a1 - a0)[:, :, None], (b1 - b0)[:, None, :]  # [K, 4, 1, 2], [K, 1, 4, 2]
    denom = da[..., 0] * db[..., 1] - da[..., 1] * db[..., 0]  # [K, 4, 4]
    diff = b0[:, None, :] - a0[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (diff[..., 0] * db[..., 1] - diff[..., 1] * db[..., 0]) / denom
        u = (diff[..., 0] * da[..., 1] - diff[..., 1] * da[..., 0]) / denom
    ok_x = (np.abs(denom) > eps) & (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    cross_pts = (a0[:, :, None] + np.where(ok_x, t, 0.0)[..., None] * da).reshape(k, 16, 2)
    pts = np.concatenate([pa, pb, cross_pts], 1)  # [K, 24, 2]
    valid = np.concatenate([inside(pa, pb), inside(pb, pa), ok_x.reshape(k, 16)], 1)
    pts = np.where(valid[..., None], pts, 0.0)
    cnt = valid.sum(1)
    centre = (pts * valid[..., None]).sum(1) / np.maximum(cnt, 1)[:, None]
    ang = np.arctan2(pts[..., 1] - centre[:, None, 1], pts[..., 0] - centre[:, None, 0])
    ang = np.where(valid, ang, np.inf)
    order = np.argsort(ang, axis=1)
    sp = np.take_along_axis(pts, order[..., None], 1)
    sv = np.take_along_axis(valid, order, 1)
    sp = np.where(sv[..., None], sp, sp[:, :1])  # invalid slots repeat the first vertex: zero-area edges
    nxt = np.roll(sp, -1, axis=1)
    area = 0.5 * np.abs((sp[..., 0] * nxt[..., 1] - nxt[..., 0] * sp[..., 1]).sum(1))
    return np.where(cnt >= 3, area, 0.0)


def _bev_intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise rotated BEV intersection areas ``[N, M]`` (vectorised over the pairs whose circles overlap)."""
    inter = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return inter
    ii, jj = _candidate_pairs(a, b)
    if len(ii):
        inter[ii, jj] = _convex_intersection_areas(_corners_bev_many(a[ii]), _corners_bev_many(b[jj]))
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


def _pad_frames(statuses, overlaps: list[np.ndarray], dets: list[dict]):
    """Stack the frames that matter for one class/difficulty into padded arrays, keeping only GT with status != -1
    and detections with status != -1 (in their original order): ``GS [F, G]``, ``DS [F, D]`` (padding -1),
    ``OV [F, D, G]`` (padding 0), ``SC [F, D]`` (padding -inf)."""
    sel = []
    for (gs, ds), ov, d in zip(statuses, overlaps, dets):
        gi, di = np.nonzero(gs != -1)[0], np.nonzero(ds != -1)[0]
        if len(gi) or len(di):
            sel.append((gs[gi], ds[di], ov[np.ix_(di, gi)], d["scores"][di]))
    f_n = len(sel)
    g_n = max((len(x[0]) for x in sel), default=0)
    d_n = max((len(x[1]) for x in sel), default=0)
    gs_a, ds_a = np.full((f_n, g_n), -1, np.int64), np.full((f_n, d_n), -1, np.int64)
    ov_a, sc_a = np.zeros((f_n, d_n, g_n)), np.full((f_n, d_n), -np.inf)
    for f, (gs, ds, ov, sc) in enumerate(sel):
        gs_a[f, :len(gs)], ds_a[f, :len(ds)], sc_a[f, :len(ds)] = gs, ds, sc
        ov_a[f, :len(ds), :len(gs)] = ov
    return gs_a, ds_a, ov_a, sc_a


def _tp_scores(gs, ds, ov, sc, thr: float) -> np.ndarray:
    """Devkit pass 1 (``compute_fp=False``), all frames at once: each GT (in order) takes the highest-scoring free
    detection with IoU above the threshold; the scores of true positives give the recall thresholds."""
    f_n, d_n = ds.shape
    assigned = np.zeros((f_n, d_n), dtype=bool)
    out = []
    for i in range(gs.shape[1]):
        g = gs[:, i]
        cand = (ds != -1) & ~assigned & (ov[:, :, i] > thr) & (g != -1)[:, None]
        f = np.nonzero(cand.any(1))[0]
        if len(f) == 0:
            continue
        j = np.argmax(np.where(cand[f], sc[f], -np.inf), 1)
        assigned[f, j] = True
        ok = (g[f] == 0) & (ds[f, j] == 0)
        out.append(sc[f[ok], j[ok]])
    return np.concatenate(out) if out else np.zeros(0)


def _stats_at_thresholds(gs, ds, ov, sc, thr: float, thresholds: np.ndarray) -> np.ndarray:
    """Devkit pass 2 (``compute_fp=True``) for all frames and score thresholds at once: ``[T, 3]`` (tp, fp, fn).

    For each GT (in order) the free detection above the IoU threshold with the largest overlap among non-ignored
    detections wins, else the first ignored one; a match involving an ignored GT or detection counts as neither TP
    nor FP; unmatched non-ignored detections are false positives."""
    f_n, d_n = ds.shape
    t_n = len(thresholds)
    stats = np.zeros((t_n, 3), dtype=np.int64)
    active = sc[:, None, :] >= thresholds[None, :, None]  # [F, T, D]
    assigned = np.zeros((f_n, t_n, d_n), dtype=bool)
    valid_det, ign_det = (ds == 0)[:, None, :], (ds == 1)[:, None, :]
    for i in range(gs.shape[1]):
        g = gs[:, i]
        rows = np.nonzero(g != -1)[0]
        if len(rows) == 0:
            continue
        ovi = ov[rows, :, i][:, None, :]  # [f, 1, D]
        cand = active[rows] & ~assigned[rows] & (ovi > thr)
        valid = cand & valid_det[rows]
        ign = cand & ign_det[rows]
        has_valid, has_ign = valid.any(2), ign.any(2)
        best = np.argmax(np.where(valid, ovi, -1.0), 2)
        j = np.where(has_valid, best, np.argmax(ign, 2))
        matched = has_valid | has_ign  # [f, T]
        counted = (g[rows] == 0)[:, None]
        stats[:, 2] += (counted & ~matched).sum(0)
        stats[:, 0] += (counted & matched & has_valid).sum(0)
        ff, tt = np.nonzero(matched)
        assigned[rows[ff], tt, j[ff, tt]] = True
    stats[:, 1] = (active & ~assigned & valid_det).sum((0, 2))
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
                batch = _pad_frames(statuses, overlaps[m], dets) if num_gt else None
                for tag, thr in (("", ious_cfg[cls][0]), ("_loose", ious_cfg[cls][1])):
                    if num_gt == 0:
                        r40 = r11 = float("nan")
                    else:
                        thresholds = _devkit_thresholds(_tp_scores(*batch, thr), num_gt)
                        total = _stats_at_thresholds(*batch, thr, thresholds) if len(thresholds) else None
                        prec = np.zeros(_NUM_SAMPLE_PTS)
                        if len(thresholds):
                            p = total[:, 0] / np.maximum(total[:, 0] + total[:, 1], 1)
                            prec[:len(p)] = np.maximum.accumulate(p[::-1])[::-1]
                        r40, r11 = _devkit_ap(prec)
                    res_c.setdefault(f"{m}_R40{tag}", {})[diff] = r40
                    res_c.setdefault(f"{m}_R11{tag}", {})[diff] = r11
        result[cls] = res_c
    return result

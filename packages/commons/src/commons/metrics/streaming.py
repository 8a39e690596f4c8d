"""Streaming AP (Li et al., "Towards Streaming Perception", ECCV 2020), as used by StreamDSGN.

Every detector output is stamped with the time it became available (input timestamp + latency). Each
ground-truth frame at time ``t`` is scored against the latest output finished at or before ``t`` (no output
yet -> no detections), then the usual AP is computed over all frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .detection import average_precision, iou_bev, match_detections

__all__ = ["select_latest_outputs", "streaming_ap"]


def select_latest_outputs(gt_times: Sequence[float], finish_times: Sequence[float]) -> list[int | None]:
    """For each GT timestamp, the index of the latest output with ``finish_time <= t`` (or ``None``)."""
    finish = np.asarray(finish_times, dtype=np.float64)
    if finish.ndim != 1:
        raise ValueError("finish_times must be a 1-D sequence of seconds")
    order = np.argsort(finish, kind="stable")
    sorted_f = finish[order]
    out: list[int | None] = []
    for t in gt_times:
        k = int(np.searchsorted(sorted_f, t + 1e-9, side="right")) - 1
        out.append(int(order[k]) if k >= 0 else None)
    return out


def streaming_ap(
    gt_boxes: Sequence[np.ndarray],
    gt_times: Sequence[float],
    det_boxes: Sequence[np.ndarray],
    det_scores: Sequence[np.ndarray],
    finish_times: Sequence[float],
    iou_threshold: float = 0.7,
    points: str = "R40",
    iou_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] = iou_bev,
) -> float:
    """Streaming AP of one class. ``gt_boxes[i]`` ``[G_i, 7]`` at ``gt_times[i]``; output ``j`` (boxes
    ``[D_j, 7]``, scores ``[D_j]``) finished at ``finish_times[j]``."""
    if len(gt_boxes) != len(gt_times):
        raise ValueError("gt_boxes and gt_times must have the same length")
    if not (len(det_boxes) == len(det_scores) == len(finish_times)):
        raise ValueError("det_boxes, det_scores and finish_times must have the same length")
    chosen = select_latest_outputs(gt_times, finish_times)
    flags, scores, num_gt = [], [], 0
    for gts, j in zip(gt_boxes, chosen):
        gts = np.asarray(gts, dtype=np.float64).reshape(-1, 7)
        num_gt += len(gts)
        if j is None or len(det_scores[j]) == 0:
            continue
        dets = np.asarray(det_boxes[j], dtype=np.float64).reshape(-1, 7)
        tp, s = match_detections(det_scores[j], iou_fn(dets, gts), iou_threshold)
        flags.append(tp)
        scores.append(s)
    if num_gt == 0:
        raise ValueError("no ground-truth boxes")
    if not flags:
        return 0.0
    flags_all, scores_all = np.concatenate(flags), np.concatenate(scores)
    return average_precision(flags_all[np.argsort(-scores_all, kind="stable")], num_gt, points)

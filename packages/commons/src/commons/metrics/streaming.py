"""Streaming AP (Li et al., "Towards Streaming Perception", ECCV 2020), as used by StreamDSGN.

Every detector output is stamped with the time it became available (input timestamp + latency). Each
ground-truth frame at time ``t`` is scored against the latest output finished at or before ``t`` (no output
yet -> no detections), then the usual AP is computed over all frames.

:func:`simulate_stream` produces those time stamps from per-frame latencies with the frame skipping of the
StreamDSGN protocol (``stereo_kitti_streaming.py::streaming_simulation``, paper notes B7.2); a one-call
per-class / per-difficulty streaming score is :func:`commons.metrics.detection.kitti_eval` on the streamed
pairs (GT at each time stamp, the output chosen by :func:`select_latest_outputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .detection import average_precision, iou_bev, match_detections

__all__ = ["select_latest_outputs", "streaming_ap", "simulate_stream"]

_EPS = 1e-9  # a frame arriving exactly when the detector finishes counts as arrived (float time stamps)


def simulate_stream(
    frame_times: Sequence[float],
    latencies: float | Sequence[float] | Callable[[np.random.Generator], float],
    seed: int = 0,
    draw: str = "random",
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a detector running on a real-time stream (paper notes B7.2, Li et al. ECCV'20).

    The detector starts on frame 0 when it arrives and finishes ``latency`` seconds later. It then takes the
    **latest** frame that has arrived by that time (frames in between are skipped, never processed); if no new
    frame has arrived it idles until the next one arrives. The simulation ends after the last frame that it
    picks up (a frame arriving after the detector's last pick-up is never processed).

    Args:
        frame_times: arrival times (seconds, non-decreasing), e.g. ``frame / 10`` for 10 Hz.
        latencies: one number (constant latency), a sequence of measured latencies, or ``callable(rng) ->
            seconds`` called once per processed frame with a ``numpy.random.Generator`` seeded by ``seed``.
        seed: seed of the generator used to draw latencies.
        draw: for a sequence: ``"random"`` draws each latency uniformly with replacement (the official
            ``Empirical.draw``, here seeded) and ``"cycle"`` uses them in order, repeating.
    Returns:
        ``(processed, finish_times)``: indices of the processed frames (increasing, starting at 0) and the time each
        output became available (``start + latency``; start = max(arrival, previous finish)).
    """
    t = np.asarray(frame_times, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError("frame_times must be a non-empty 1-D sequence of seconds")
    if np.any(np.diff(t) < 0):
        raise ValueError("frame_times must be non-decreasing")
    if draw not in ("random", "cycle"):
        raise ValueError(f"draw must be 'random' or 'cycle', got {draw!r}")
    rng = np.random.default_rng(seed)
    if callable(latencies):
        def next_latency(k: int) -> float:
            return float(latencies(rng))
    elif np.ndim(latencies) == 0:
        const = float(latencies)

        def next_latency(k: int) -> float:
            return const
    else:
        pool = np.asarray(latencies, dtype=np.float64).ravel()
        if pool.size == 0:
            raise ValueError("latencies must not be empty")

        def next_latency(k: int) -> float:
            return float(pool[k % pool.size] if draw == "cycle" else pool[rng.integers(pool.size)])

    processed, finish = [], []
    frame, now, k = 0, float(t[0]), 0
    while True:
        lat = next_latency(k)
        if not np.isfinite(lat) or lat <= 0:
            raise ValueError(f"latencies must be positive and finite seconds, got {lat}")
        start = max(now, float(t[frame]))
        done = start + lat
        processed.append(frame)
        finish.append(done)
        k += 1
        latest = int(np.searchsorted(t, done + _EPS, side="right")) - 1  # latest frame arrived by `done`
        if latest > frame:
            frame = latest
        elif frame + 1 < len(t):
            frame += 1  # nothing new yet: idle until the next frame arrives
        else:
            break
        now = done
    return np.asarray(processed, dtype=np.int64), np.asarray(finish, dtype=np.float64)


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

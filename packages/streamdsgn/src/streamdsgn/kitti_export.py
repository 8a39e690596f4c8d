"""KITTI-format result files of detections, for the official devkits.

Two layouts, both in the rectified camera-2 frame (``x`` right, ``y`` down, ``z`` forward; ``(x, y, z)`` the box's
bottom centre; dimensions ``h w l``; ``rotation_y``; ``alpha = rotation_y − atan2(x, z)``) with the 2D box in pixels of
the **original** image (crop offset added back) and the score last:

* tracking layout ``DIR/label_02/<seq>.txt``: 18 columns ``frame track_id type truncated occluded alpha x1 y1 x2 y2
  h w l x y z rotation_y score`` per line (track id −1: a detector has none), the format of KITTI tracking labels
  with a score column (TrackEval's ``KITTI-format``), which :func:`commons.data.kitti_tracking.read_labels` reads;
* object layout ``DIR/object/<seq>/<frame:06d>.txt``: 16 columns ``type truncated occluded alpha x1 y1 x2 y2 h w l x
  y z rotation_y score``, the result format of the KITTI object devkit (``evaluate_object``; OpenPCDet's
  ``generate_prediction_dicts``), one file per frame, empty when nothing was detected.

Truncation and occlusion are unknown for detections and written as −1 (the devkit ignores them for results).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["detections_to_kitti_rows", "write_kitti_results"]

CLASS_NAMES = ("Car", "Pedestrian", "Cyclist")


def detections_to_kitti_rows(det: dict, calib: dict, crop_offset: tuple = (0, 0),
                             class_names: tuple = CLASS_NAMES) -> list[dict]:
    """One dict per detection: ``type, alpha, bbox (x1, y1, x2, y2 original-image px), hwl, xyz, ry, score``.
    ``det`` holds LiDAR-style ``boxes [K, 7]``, ``scores``, ``labels`` and ``bbox [K, 4]`` (crop pixels, from
    :meth:`streamdsgn.StreamDSGN.detect_sample`)."""
    from commons.data.kitti_tracking import lidar_to_camera_boxes

    boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 7)
    if len(boxes) == 0:
        return []
    cam = np.asarray(lidar_to_camera_boxes(boxes, calib), dtype=np.float64)     # x y z h w l ry
    if det.get("bbox") is not None:
        bbox = np.asarray(det["bbox"], dtype=np.float64).reshape(-1, 4)
    else:
        import torch

        from .boxes import project_boxes_to_image

        bbox = project_boxes_to_image(torch.as_tensor(boxes), calib).numpy().astype(np.float64)
    dx, dy = float(crop_offset[0]), float(crop_offset[1])
    bbox = bbox + np.array([dx, dy, dx, dy])
    rows = []
    for k in range(len(boxes)):
        x, y, z, h, w, l, ry = cam[k]
        ry = (ry + math.pi) % (2 * math.pi) - math.pi
        alpha = (ry - math.atan2(x, z) + math.pi) % (2 * math.pi) - math.pi
        rows.append({"type": class_names[int(det["labels"][k])], "alpha": alpha, "bbox": tuple(bbox[k]),
                     "hwl": (h, w, l), "xyz": (x, y, z), "ry": ry, "score": float(det["scores"][k])})
    return rows


def _fields(r: dict) -> str:
    x1, y1, x2, y2 = r["bbox"]
    h, w, l = r["hwl"]
    x, y, z = r["xyz"]
    return (f"{r['type']} -1 -1 {r['alpha']:.6f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {h:.4f} {w:.4f} {l:.4f} "
            f"{x:.4f} {y:.4f} {z:.4f} {r['ry']:.6f} {r['score']:.6f}")


def write_kitti_results(out_dir: str | Path, frames: list[dict]) -> list[Path]:
    """Write the tracking- and object-layout files for ``frames``: dicts ``{"seq": name, "frame": int, "det": ...,
    "calib": ..., "crop_offset": (x0, y0)}`` (any order, several sequences). Returns the files written. Existing
    files of the same sequences are replaced."""
    out = Path(out_dir)
    by_seq: dict[str, list[dict]] = {}
    for f in frames:
        by_seq.setdefault(f"{int(f['seq']):04d}" if str(f["seq"]).isdigit() else str(f["seq"]), []).append(f)
    written = []
    for seq, items in sorted(by_seq.items()):
        items = sorted(items, key=lambda f: int(f["frame"]))
        (out / "label_02").mkdir(parents=True, exist_ok=True)
        (out / "object" / seq).mkdir(parents=True, exist_ok=True)
        lines = []
        for f in items:
            rows = detections_to_kitti_rows(f["det"], f["calib"], f.get("crop_offset", (0, 0)))
            obj = [_fields(r) for r in rows]
            lines += [f"{int(f['frame'])} -1 {line}" for line in obj]
            path = out / "object" / seq / f"{int(f['frame']):06d}.txt"
            path.write_text("\n".join(obj) + ("\n" if obj else ""))
            written.append(path)
        path = out / "label_02" / f"{seq}.txt"
        path.write_text("\n".join(lines) + ("\n" if lines else ""))
        written.append(path)
    return written

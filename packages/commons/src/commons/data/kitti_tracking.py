"""Reader for the KITTI tracking layout (``training/{image_02,image_03,label_02,calib}``).

Label lines (``label_02/<seq>.txt``): ``frame track_id type truncated occluded alpha x1 y1 x2 y2 h w l x y z
rotation_y [score]`` in camera-2 coordinates (``y`` down, ``(x, y, z)`` the bottom centre). ``DontCare``
rows (track id -1) are kept with ``track_id=-1``. Calib files (``calib/<seq>.txt``) hold ``P0..P3``,
``R_rect`` and ``Tr_velo_cam``. Clips: each sequence is cut into 40-frame clips; even clip indices form
the train split and odd ones the val split (the StreamDSGN protocol).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

__all__ = ["TrackLabel", "read_labels", "read_calib", "split_clips"]


@dataclasses.dataclass(frozen=True)
class TrackLabel:
    frame: int
    track_id: int
    cls: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dims_hwl: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float


def read_labels(path: str | pathlib.Path) -> dict[int, list[TrackLabel]]:
    """Labels of one sequence grouped by frame index."""
    out: dict[int, list[TrackLabel]] = {}
    for n, line in enumerate(pathlib.Path(path).read_text().splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (17, 18):
            raise ValueError(f"{path}:{n + 1}: expected 17 or 18 fields, got {len(parts)}")
        v = [float(p) for p in parts[3:17]]
        lab = TrackLabel(int(parts[0]), int(parts[1]), parts[2], v[0], int(v[1]), v[2], tuple(v[3:7]),
                         tuple(v[7:10]), tuple(v[10:13]), v[13])
        out.setdefault(lab.frame, []).append(lab)
    return out


def read_calib(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Calibration matrices: ``P0..P3`` ``[3, 4]``, ``R_rect`` ``[3, 3]``, ``Tr_velo_cam`` ``[3, 4]``."""
    mats: dict[str, np.ndarray] = {}
    for line in pathlib.Path(path).read_text().splitlines():
        if ":" in line:
            key, vals = line.split(":", 1)
        elif line.strip():
            key, vals = line.split(None, 1)
        else:
            continue
        arr = np.array([float(x) for x in vals.split()])
        key = key.strip()
        mats[key] = arr.reshape(3, 3) if arr.size == 9 else arr.reshape(3, 4)
    for k in ("P2", "P3"):
        if k not in mats:
            raise ValueError(f"{path}: calib is missing {k}")
    return mats


def split_clips(num_frames: int, clip_len: int = 40) -> dict[str, list[range]]:
    """Cut ``num_frames`` into ``clip_len`` clips: even clip indices -> train, odd -> val (last partial kept)."""
    if clip_len <= 0:
        raise ValueError(f"clip_len must be positive, got {clip_len}")
    clips = [range(s, min(s + clip_len, num_frames)) for s in range(0, num_frames, clip_len)]
    return {"train": clips[0::2], "val": clips[1::2]}

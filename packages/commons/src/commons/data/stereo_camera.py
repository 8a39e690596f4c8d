"""The stereo camera of :mod:`commons.data.synthetic_stereo`: KITTI's geometry scaled to the image width, the
calibration it writes, depth <-> disparity, and the projection of 3D boxes (see that module's docstring, *Camera*)."""

from __future__ import annotations

import pathlib

import numpy as np

#: KITTI mean object sizes (height, width, length) in metres.
CLASS_SIZES_HWL = {
    "Car": (1.53, 1.63, 3.88),
    "Van": (2.21, 1.90, 5.08),
    "Pedestrian": (1.76, 0.66, 0.84),
    "Cyclist": (1.74, 0.60, 1.76),
}

CAMERA_HEIGHT = 1.65
BASELINE = 0.54
FPS = 10.0
_KITTI_F, _KITTI_CX, _KITTI_CY_BOTTOM = 721.5377, 609.5593, 202.146
_VELO_OFFSET = np.array([0.0, -0.08, -0.27])  # LiDAR origin in camera coordinates: 8 cm above, 27 cm behind
_MAX_LIDAR_DEPTH = 80.0


# ----------------------------------------------------------------------------------------------- depth / disparity
def fu_baseline_from_calib(calib: dict) -> float:
    """``f_u * b`` (px * m) from a KITTI calib: ``(P2[0, 3] - P3[0, 3])`` (KITTI stores ``-f_u * t_x`` there)."""
    p2, p3 = np.asarray(calib["P2"], dtype=np.float64), np.asarray(calib["P3"], dtype=np.float64)
    fub = float(p2[0, 3] - p3[0, 3])
    if fub <= 0:
        raise ValueError(f"calib has a non-positive stereo baseline (P2[0,3] - P3[0,3] = {fub})")
    return fub


def depth_to_disparity(depth, fu_baseline: float):
    """Disparity ``f_u b / depth`` in pixels (0 where ``depth`` is 0, non-finite or negative). numpy or torch."""
    if fu_baseline <= 0:
        raise ValueError(f"fu_baseline must be positive, got {fu_baseline}")
    try:
        import torch

        if isinstance(depth, torch.Tensor):
            ok = torch.isfinite(depth) & (depth > 0)
            return torch.where(ok, fu_baseline / torch.where(ok, depth, torch.ones_like(depth)),
                               torch.zeros_like(depth))
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    d = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    out = np.zeros_like(d)
    out[ok] = fu_baseline / d[ok]
    return out


def disparity_to_depth(disparity, fu_baseline: float):
    """Depth ``f_u b / disparity`` in metres (``inf`` where the disparity is 0 or not finite). numpy or torch."""
    if fu_baseline <= 0:
        raise ValueError(f"fu_baseline must be positive, got {fu_baseline}")
    try:
        import torch

        if isinstance(disparity, torch.Tensor):
            ok = torch.isfinite(disparity) & (disparity > 0)
            return torch.where(ok, fu_baseline / torch.where(ok, disparity, torch.ones_like(disparity)),
                               torch.full_like(disparity, float("inf")))
    except ImportError:  # pragma: no cover
        pass
    d = np.asarray(disparity, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    out = np.full_like(d, np.inf)
    out[ok] = fu_baseline / d[ok]
    return out


def warp_right_to_left(right: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """The right image resampled into the left view: ``out[v, u] = right[v, u - disparity[v, u]]`` (linear in ``u``;
    NaN where the disparity is not finite or the sample falls outside the image). ``right`` ``[H, W]`` or
    ``[H, W, C]``, ``disparity`` ``[H, W]`` in pixels (positive: the right view sees a point further left)."""
    r = np.asarray(right, dtype=np.float64)
    d = np.asarray(disparity, dtype=np.float64)
    if d.ndim != 2 or r.shape[:2] != d.shape:
        raise ValueError(f"right [H, W(, C)] and disparity [H, W] must agree, got {r.shape} and {d.shape}")
    h, w = d.shape
    x = np.arange(w)[None, :] - d
    ok = np.isfinite(x) & (x >= 0) & (x <= w - 1)
    x = np.where(ok, x, 0.0)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 1)
    x1 = np.clip(x0 + 1, 0, w - 1)
    fx = x - x0
    rows = np.arange(h)[:, None]
    if r.ndim == 3:
        fx = fx[..., None]
    out = r[rows, x0] * (1 - fx) + r[rows, x1] * fx
    out[~ok] = np.nan
    return out


# ------------------------------------------------------------------------------------------------------- calib
def kitti_like_calib(image_size: tuple[int, int], baseline: float = BASELINE) -> dict[str, np.ndarray]:
    """KITTI-like rectified stereo calibration for an image of ``(H, W)`` pixels (see the module docstring)."""
    h, w = int(image_size[0]), int(image_size[1])
    s = w / 1248.0
    f, cx, cy = _KITTI_F * s, _KITTI_CX * s, h - _KITTI_CY_BOTTOM * s
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    p2 = np.concatenate([k, np.zeros((3, 1))], 1)
    p3 = p2.copy()
    p3[0, 3] = -f * baseline
    # LiDAR (x fwd, y left, z up) -> camera (x right, y down, z fwd), then the LiDAR origin offset in camera coords.
    rot = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    tr = np.concatenate([rot, _VELO_OFFSET[:, None]], 1)
    tr_imu = np.concatenate([np.eye(3), np.array([[-0.81], [0.32], [-0.80]])], 1)
    return {"P0": p2.copy(), "P1": p3.copy(), "P2": p2, "P3": p3, "R_rect": np.eye(3), "Tr_velo_cam": tr,
            "Tr_imu_velo": tr_imu}


def _write_calib(path: pathlib.Path, calib: dict[str, np.ndarray]) -> None:
    lines = []
    for key in ("P0", "P1", "P2", "P3"):
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in calib[key].ravel()))
    for key in ("R_rect", "Tr_velo_cam", "Tr_imu_velo"):  # KITTI tracking writes these without a colon
        lines.append(f"{key} " + " ".join(f"{v:.12e}" for v in calib[key].ravel()))
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------- textures
def _box_corners(loc: np.ndarray, hwl: np.ndarray, ry: float) -> np.ndarray:
    """8 corners ``[8, 3]`` of a KITTI box (bottom-centre ``loc``, camera coordinates)."""
    h, w, l = hwl
    xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
    ys = np.array([0, 0, 0, 0, -1, -1, -1, -1]) * h
    zs = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    c, s = np.cos(ry), np.sin(ry)
    x = c * xs + s * zs
    z = -s * xs + c * zs
    return np.stack([x, ys, z], 1) + loc


_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def _project_rect(corners: np.ndarray, f: float, cx: float, cy: float, cam_x: float, near: float = 0.1):
    """Projected bounding rectangle ``(x1, y1, x2, y2)`` of a box seen from a camera at ``(cam_x, 0, 0)``, with the box
    clipped against the plane ``z = near``; ``None`` if the box is entirely behind it."""
    p = corners - np.array([cam_x, 0.0, 0.0])
    front = p[:, 2] > near
    if not front.any():
        return None
    pts = [p[front]]
    if not front.all():
        extra = []
        for a, b in _EDGES:
            if front[a] != front[b]:
                t = (near - p[a, 2]) / (p[b, 2] - p[a, 2])
                extra.append(p[a] + t * (p[b] - p[a]))
        pts.append(np.array(extra))
    q = np.concatenate(pts, 0)
    u = f * q[:, 0] / q[:, 2] + cx
    v = f * q[:, 1] / q[:, 2] + cy
    return float(u.min()), float(v.min()), float(u.max()), float(v.max())

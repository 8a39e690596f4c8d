"""Synthetic stereo driving sequences rendered with a real pinhole stereo camera, written in the KITTI tracking layout.

This is the embedded default of the StreamDSGN work (issue 12): no download, deterministic under ``seed``, and read by
:class:`commons.data.kitti_tracking.KittiTrackingStream` through the same code path as a real KITTI tracking folder::

    out_dir/training/image_02/<seq:04d>/<frame:06d>.png     left camera (KITTI camera 2)
    out_dir/training/image_03/<seq:04d>/<frame:06d>.png     right camera (KITTI camera 3)
    out_dir/training/label_02/<seq:04d>.txt                 17-column KITTI tracking labels
    out_dir/training/calib/<seq:04d>.txt                    P0..P3, R_rect, Tr_velo_cam, Tr_imu_velo
    out_dir/training/velodyne/<seq:04d>/<frame:06d>.bin     float32 (x, y, z, intensity), LiDAR frame

**Camera.** A rectified pair with KITTI's geometry scaled to the image width ``W`` (``s = W / 1248``, the StreamDSGN
crop width): focal length ``f = 721.5377 s`` px, principal point ``cx = 609.5593 s``, ``cy = H - 202.146 s`` (KITTI's
``cy`` after the 320-row bottom crop), baseline ``b = 0.54`` m. ``P2 = K [I | 0]`` (camera 2 is the reference frame)
and ``P3 = K [I | (-b, 0, 0)]``, so ``P3[0, 3] = -f b`` as in KITTI and ``disparity = f b / depth``.
``R_rect`` is the identity and ``Tr_velo_cam`` is KITTI's axis permutation (LiDAR x forward, y left, z up to camera
x right, y down, z forward) plus a small offset (the LiDAR sits 8 cm above and 27 cm behind the camera).

**Scene.** A ground plane at camera height 1.65 m (road with lane markings and bike lanes, side-walks), two building
facades and a sky at infinity, all with view-independent procedural textures attached to the surfaces (so a stereo
matcher sees the same texture in both views); cuboid Car / Van / Pedestrian / Cyclist objects (KITTI mean sizes +-8
%) with random per-object colour and texture, moving at constant speed along their heading, some with a constant yaw
rate (gentle turns); the ego camera moves forward at a constant speed per sequence (0 in about a quarter of them).
Speeds (world frame): the ego 0 or 3–10 m/s; cars and vans 4–13 m/s in the two side lanes (the left one oncoming,
so up to about 23 m/s relative to the ego) and 0.5–3 m/s faster than the ego in its own lane; cyclists 2.5–6 m/s;
pedestrians 0.4–1.6 m/s (walking along or across the street). At 10 Hz, 100–300 ms of latency therefore moves many
boxes by more than their width relative to the ego (``tools/bench/streamdsgn.py`` tabulates the BEV IoU a box keeps
with itself 1–3 frames later). Objects enter and leave the view, overtake and occlude each other; an object whose
footprint (+25 cm) would overlap an earlier one at any time of the sequence is not placed, so boxes never
interpenetrate.

**Rendering.** Per pixel ray casting: every pixel ray of each camera is intersected with the ground, the facades and
every cuboid (slab test in the box frame, restricted to the box's projected rectangle), and the nearest hit wins
(a z-buffer). Faces get a fixed Lambert-like shade from their normal (view independent).

**Labels** (left camera): 2D box = the projected 3D box corners (clipped against the near plane, then to the image);
``truncated`` 0/1/2 from the fraction of that box outside the image (< 5 %, < 50 %, more); ``occluded`` 0/1/2 from the
z-buffer: the fraction of the object's in-image silhouette hidden by nearer surfaces (< 15 %, < 50 %, more);
``alpha = rotation_y - atan2(x, z)``. An object is labelled when at least ``min_visible_pixels`` of it are visible;
visible objects farther than ``max_label_depth`` are written as ``DontCare`` regions (as KITTI annotators do for
far objects). **LiDAR**: a seeded random ``lidar_density`` fraction of the left camera's pixels with finite depth
below 80 m, back-projected at the pixel centre with the rendered depth and moved to the LiDAR frame (intensity = grey
value), so projecting them with ``P2`` gives back the rendered depth exactly.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np

__all__ = [
    "render_kitti_tracking",
    "kitti_like_calib",
    "CLASS_SIZES_HWL",
    "disparity_to_depth",
    "depth_to_disparity",
    "fu_baseline_from_calib",
    "warp_right_to_left",
]

logger = logging.getLogger(__name__)

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
def _smooth_noise(rng: np.random.Generator, size: int, sigmas=(1.0, 3.0, 8.0), weights=(0.45, 0.35, 0.2)):
    """Tileable multi-octave noise in [0, 1] (Gaussian-filtered white noise, filtered in the Fourier domain)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    out = np.zeros((size, size))
    for s, wgt in zip(sigmas, weights):
        spec = np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-2 * (np.pi * s) ** 2 * (fx ** 2 + fy ** 2))
        layer = np.real(np.fft.ifft2(spec))
        out += wgt * layer / (layer.std() + 1e-12)
    out = (out - out.min()) / (out.max() - out.min() + 1e-12)
    return out.astype(np.float32)


def _bilinear_wrap(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a tileable texture ``[S, S]`` (``S`` a power of two) at texel coordinates ``(u, v)``."""
    s = tex.shape[0]
    m = s - 1
    flat = tex.ravel()
    u = np.asarray(u, dtype=np.float32)
    v = np.asarray(v, dtype=np.float32)
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = u - u0
    fv = v - v0
    iu = u0.astype(np.int32) & m
    iv = v0.astype(np.int32) & m
    iu1 = (iu + 1) & m
    r0 = iv * s
    r1 = ((iv + 1) & m) * s
    a = flat.take(r0 + iu) * (1 - fu) + flat.take(r0 + iu1) * fu
    b = flat.take(r1 + iu) * (1 - fu) + flat.take(r1 + iu1) * fu
    return a + (b - a) * fv


# ------------------------------------------------------------------------------------------------------ scene
# face shade [axis, sign]: axes x (length), y (height, y down: sign 1 = top face), z (width); sign 1 = negative side
_SHADE = np.array([[0.92, 0.70], [0.55, 1.0], [0.80, 0.62]], dtype=np.float32)


def _make_objects(rng: np.random.Generator, num_frames: int, ego_speed: float) -> list[dict]:
    """Objects in the world frame (x right, y down, z forward; the camera starts at the origin)."""
    objs: list[dict] = []
    duration = num_frames / FPS
    z_lo, z_hi = -35.0, 75.0 + ego_speed * duration

    def add(cls, x, z, heading_ry, speed, yaw_rate=0.0):
        hwl = np.array(CLASS_SIZES_HWL[cls]) * rng.uniform(0.92, 1.08, 3)
        colour = rng.uniform(0.15, 0.95, 3).astype(np.float32)
        objs.append({"cls": cls, "hwl": hwl, "x0": float(x), "z0": float(z), "ry0": float(heading_ry),
                     "speed": float(speed), "yaw_rate": float(yaw_rate), "colour": colour,
                     "tex": int(rng.integers(4)), "tex_off": rng.uniform(0, 128, 2)})

    # vehicles: oncoming lane x=-3.5, ego lane x=0 (only ahead and faster than the ego), lane x=+3.5
    for lane_x, direction in ((-3.5, -1.0), (0.0, 1.0), (3.5, 1.0)):
        if lane_x == 0.0:
            speed = ego_speed + rng.uniform(0.5, 3.0)
            z = rng.uniform(8.0, 20.0)
        else:
            speed = rng.uniform(4.0, 13.0)
            z = z_lo + rng.uniform(0, 15)
        while z < z_hi:
            cls = "Van" if rng.random() < 0.12 else "Car"
            turn = rng.uniform(0.03, 0.08) * rng.choice([-1, 1]) if rng.random() < 0.2 else 0.0
            ry = -np.pi / 2 if direction > 0 else np.pi / 2
            add(cls, lane_x + rng.uniform(-0.3, 0.3), z, ry + rng.uniform(-0.03, 0.03), speed, turn)
            z += rng.uniform(11.0, 30.0)
    # cyclists on the bike lanes (|x| 5.6-6.0 m; the side-walks start at 6.5 m), same direction as the traffic
    for _ in range(int(rng.integers(2, 6))):
        add("Cyclist", rng.uniform(5.6, 6.0) * rng.choice([-1, 1]), rng.uniform(z_lo + 20, z_hi * 0.7),
            -np.pi / 2 + rng.uniform(-0.05, 0.05), rng.uniform(2.5, 6.0))
    # pedestrians on the side-walks (along the street) and a few crossing it
    for _ in range(int(rng.integers(5, 11))):
        side = rng.choice([-1.0, 1.0])
        if rng.random() < 0.25:
            ry = 0.0 if side < 0 else np.pi  # walking towards +x or -x (crossing)
            add("Pedestrian", side * rng.uniform(6.8, 9.0), rng.uniform(8.0, z_hi), ry, rng.uniform(0.4, 1.0))
        else:
            ry = rng.choice([-np.pi / 2, np.pi / 2]) + rng.uniform(-0.1, 0.1)
            add("Pedestrian", side * rng.uniform(6.8, 9.5), rng.uniform(0.0, z_hi * 0.7), ry, rng.uniform(0.8, 1.6))
    return _drop_colliding(objs, np.arange(num_frames) / FPS)


def _footprints(obj: dict, times: np.ndarray, margin: float) -> np.ndarray:
    """BEV corners ``[T, 4, 2]`` (x, z) of an object over time, inflated by ``margin`` metres."""
    x, z, ry = _object_pose_many(obj, times)
    _, w, l = obj["hwl"]
    hl, hw = l / 2 + margin, w / 2 + margin
    local = np.array([[hl, hw], [hl, -hw], [-hl, -hw], [-hl, hw]])  # (along heading, along width)
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    # heading (c, -s) in (x, z); width axis (s, c)
    px = x[:, None] + local[None, :, 0] * c + local[None, :, 1] * s
    pz = z[:, None] - local[None, :, 0] * s + local[None, :, 1] * c
    return np.stack([px, pz], -1)


def _overlap_any(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two sequences of convex quadrilaterals ``[T, 4, 2]``: do they overlap at any time?"""
    sep = np.zeros(a.shape[0], dtype=bool)
    for poly in (a, b):
        for e in range(2):  # a rectangle has two edge directions
            edge = poly[:, e + 1] - poly[:, e]
            axis = np.stack([-edge[:, 1], edge[:, 0]], -1)
            pa = np.einsum("tkc,tc->tk", a, axis)
            pb = np.einsum("tkc,tc->tk", b, axis)
            sep |= (pa.max(1) < pb.min(1)) | (pb.max(1) < pa.min(1))
    return not sep.all()


def _drop_colliding(objs: list[dict], times: np.ndarray, margin: float = 0.25) -> list[dict]:
    """Keep objects (in order) whose footprints never overlap an already kept one during the sequence."""
    kept, prints = [], []
    for obj in objs:
        fp = _footprints(obj, times, margin)
        if all(not _overlap_any(fp, other) for other in prints):
            kept.append(obj)
            prints.append(fp)
    return kept


def _object_pose_many(obj: dict, t: np.ndarray):
    ry0, w, v = obj["ry0"], obj["yaw_rate"], obj["speed"]
    if abs(w) < 1e-9:
        return obj["x0"] + v * t * np.cos(ry0), obj["z0"] - v * t * np.sin(ry0), np.full_like(t, ry0)
    ry = ry0 + w * t
    return obj["x0"] + v / w * (np.sin(ry) - np.sin(ry0)), obj["z0"] + v / w * (np.cos(ry) - np.cos(ry0)), ry


def _object_pose(obj: dict, t: float) -> tuple[float, float, float]:
    """World (x, z, rotation_y) at time ``t`` (constant speed along the heading, constant yaw rate)."""
    ry0, w, v = obj["ry0"], obj["yaw_rate"], obj["speed"]
    # heading direction in camera coordinates is (cos ry, 0, -sin ry)
    if abs(w) < 1e-9:
        return obj["x0"] + v * t * np.cos(ry0), obj["z0"] - v * t * np.sin(ry0), ry0
    ry = ry0 + w * t
    x = obj["x0"] + v / w * (np.sin(ry) - np.sin(ry0))
    z = obj["z0"] + v / w * (np.cos(ry) - np.cos(ry0))
    return x, z, ry


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


class _Renderer:
    def __init__(self, image_size, calib, rng: np.random.Generator, facade_x: tuple[float, float]):
        self.h, self.w = image_size
        p2 = calib["P2"]
        self.f, self.cx, self.cy = float(p2[0, 0]), float(p2[0, 2]), float(p2[1, 2])
        self.b = float(-calib["P3"][0, 3] / self.f)
        vv, uu = np.meshgrid(np.arange(self.h, dtype=np.float64), np.arange(self.w, dtype=np.float64), indexing="ij")
        self.dx = (uu - self.cx) / self.f  # ray direction with z = 1, so the ray parameter is the depth
        self.dy = (vv - self.cy) / self.f
        self.dx32, self.dy32 = self.dx.astype(np.float32), self.dy.astype(np.float32)
        self.textures = [_smooth_noise(rng, 128) for _ in range(4)]
        self.ground_tex = _smooth_noise(rng, 256, sigmas=(0.7, 2.5, 10.0))
        self.facade_tex = _smooth_noise(rng, 256, sigmas=(0.8, 2.0, 6.0))
        self.facade_x = facade_x
        self.facade_colour = rng.uniform(0.35, 0.85, (2, 3)).astype(np.float32)
        self.static = {cam_x: self._static_geometry(cam_x) for cam_x in (0.0, self.b)}
        self.sky = self._sky(rng)

    def _static_geometry(self, cam_x: float) -> dict:
        """Ground / facade hits that do not change over time (the ego translates along z only)."""
        depth = np.full((self.h, self.w), np.inf)
        kind = np.zeros((self.h, self.w), np.int8)  # 0 sky, 1 ground, 2 left facade, 3 right facade
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = np.where(self.dy > 1e-9, CAMERA_HEIGHT / self.dy, np.inf)
            depth = np.where(tg < depth, tg, depth)
            kind[np.isfinite(tg)] = 1
            for k, xf in ((2, self.facade_x[0]), (3, self.facade_x[1])):
                t = (xf - cam_x) / self.dx
                yh = t * self.dy
                ok = (t > 0) & np.isfinite(t) & (yh >= CAMERA_HEIGHT - 9.0) & (yh <= CAMERA_HEIGHT) & (t < depth)
                depth = np.where(ok, t, depth)
                kind[ok] = k
        with np.errstate(invalid="ignore"):
            x = cam_x + depth * self.dx
            y = depth * self.dy
        out = {"depth": depth, "ground": None, "facades": [None, None]}
        g = kind == 1
        if g.any():
            gx = x[g].astype(np.float32)
            out["ground"] = {"mask": g, "u": gx * 12.0, "z": depth[g].astype(np.float32), "side": np.abs(gx) > 6.5,
                             "lane": np.abs(np.abs(gx) - 1.75) < 0.08}
        for idx, k in enumerate((2, 3)):
            m = kind == k
            if m.any():
                out["facades"][idx] = {"mask": m, "z": depth[m].astype(np.float32),
                                       "v": (y[m] * 10.0).astype(np.float32), "win_y": np.mod(y[m], 3.0) < 1.4}
        return out

    def _sky(self, rng: np.random.Generator) -> np.ndarray:
        # a function of the ray direction only (points at infinity): identical in both cameras, disparity 0
        tex = _smooth_noise(rng, 128, sigmas=(2.0, 6.0, 16.0))
        n = _bilinear_wrap(tex, np.arctan(self.dx) * 80.0, np.arctan(self.dy) * 80.0)
        base = np.array([0.55, 0.70, 0.92], np.float32)
        return (base[None, None] * (0.75 + 0.35 * n[..., None])).astype(np.float32)

    def background(self, cam_x: float, ego_z: float) -> tuple[np.ndarray, np.ndarray]:
        st = self.static[cam_x]
        key = (cam_x, ego_z)
        if st.get("cache_key") == key:
            return st["cache_img"].copy(), st["depth"]
        img = self.sky.copy()
        g = st["ground"]
        if g is not None:
            gz = g["z"] + np.float32(ego_z)
            n = _bilinear_wrap(self.ground_tex, g["u"], gz * 12.0)
            val = np.where(g["side"], 0.55 + 0.30 * n, 0.22 + 0.35 * n)
            val = np.where(g["lane"] & (np.mod(gz, 6.0) < 3.0), np.float32(0.92), val)
            img[g["mask"]] = val[:, None] * np.array([1.0, 1.0, 0.97], np.float32)
        for idx, fac in enumerate(st["facades"]):
            if fac is None:
                continue
            zw = fac["z"] + np.float32(ego_z)
            n = _bilinear_wrap(self.facade_tex, zw * 10.0, fac["v"])
            window = (np.mod(zw, 3.0) < 1.2) & fac["win_y"]
            shade = np.where(window, np.float32(0.35), np.float32(1.0)) * (0.55 + 0.45 * n)
            img[fac["mask"]] = self.facade_colour[idx][None] * shade[:, None]
        st["cache_key"], st["cache_img"] = key, img.copy()
        return img, st["depth"]

    def render(self, cam_x: float, ego_z: float, boxes: list[dict], want_ids: bool = False):
        """Image ``[H, W, 3]`` float32 in [0, 1], depth ``[H, W]`` (inf = sky), and optionally per-pixel object ids and
        per-object in-image silhouette sizes."""
        img, depth = self.background(cam_x, ego_z)
        depth = depth.copy()
        ids = np.full((self.h, self.w), -1, np.int32) if want_ids else None
        silhouette = np.zeros(len(boxes), np.int64)
        for k, bx in enumerate(boxes):
            rect = _project_rect(bx["corners"], self.f, self.cx, self.cy, cam_x)
            if rect is None:
                continue
            u0, v0 = max(int(np.floor(rect[0])), 0), max(int(np.floor(rect[1])), 0)
            u1, v1 = min(int(np.ceil(rect[2])) + 1, self.w), min(int(np.ceil(rect[3])) + 1, self.h)
            if u0 >= u1 or v0 >= v1:
                continue
            dx, dy = self.dx32[v0:v1, u0:u1], self.dy32[v0:v1, u0:u1]
            c, s = np.float32(np.cos(bx["ry"])), np.float32(np.sin(bx["ry"]))
            hh, ww, ll = bx["hwl"]
            centre = bx["loc"] - np.array([cam_x, hh / 2, 0.0])  # geometric centre relative to the camera
            # box frame axes in camera coords: a = (c, 0, -s) (length), y, b = (s, 0, c) (width)
            o = np.array([-(c * centre[0] - s * centre[2]), -centre[1], -(s * centre[0] + c * centre[2])],
                         dtype=np.float32)
            d = np.stack([c * dx - s, dy, s * dx + c], 0)  # ray direction in the box frame, [3, h, w]
            half = np.array([ll / 2, hh / 2, ww / 2], dtype=np.float32)[:, None, None]
            d = np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)  # no exact zeros: slabs stay finite
            inv = 1.0 / d
            t1 = (-half - o[:, None, None]) * inv
            t2 = (half - o[:, None, None]) * inv
            tmin_ax = np.minimum(t1, t2)
            tmax_ax = np.maximum(t1, t2)
            tnear = tmin_ax.max(0)
            tfar = tmax_ax.min(0)
            hit = (tnear <= tfar) & (tnear > 0.05)
            silhouette[k] = int(hit.sum())
            sub_depth = depth[v0:v1, u0:u1]
            win = hit & (tnear < sub_depth)
            if not win.any():
                continue
            axis = tmin_ax.argmax(0)[win]
            t = tnear[win]
            p = o[:, None] + d[:, win] * t[None]  # hit point in the box frame
            sign = (p[axis, np.arange(len(t))] < 0).astype(np.int64)
            # texture coordinates: the two in-face coordinates (metres, 20 texels per metre) + a per-face offset
            other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
            pu = p[other[:, 0], np.arange(len(t))]
            pv = p[other[:, 1], np.arange(len(t))]
            tex = self.textures[bx["tex"]]
            n = _bilinear_wrap(tex, pu * 20.0 + bx["tex_off"][0] + axis * 37.0,
                               pv * 20.0 + bx["tex_off"][1] + sign * 53.0)
            shade = _SHADE[axis, sign] * (0.45 + 0.55 * n)
            sub_img = img[v0:v1, u0:u1]
            sub_img[win] = bx["colour"][None] * shade[:, None]
            sub_depth[win] = t
            if ids is not None:
                ids[v0:v1, u0:u1][win] = k
        return img, depth, ids, silhouette


def _truncation_level(full, clipped) -> int:
    area_full = max(full[2] - full[0], 1e-6) * max(full[3] - full[1], 1e-6)
    area_clip = max(clipped[2] - clipped[0], 0.0) * max(clipped[3] - clipped[1], 0.0)
    out = 1.0 - area_clip / area_full
    return 0 if out < 0.05 else (1 if out < 0.5 else 2)


def _occlusion_level(frac: float) -> int:
    return 0 if frac < 0.15 else (1 if frac < 0.5 else 2)


def _wrap_angle(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def _save_png(path: pathlib.Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(img).save(path, compress_level=1)


def _written_by_us(train: pathlib.Path) -> bool:
    """True when ``train`` has no calib files, or only ones with this module's signature (P0 = P2 and P1 = P3; real
    KITTI calibs differ there)."""
    calibs = sorted((train / "calib").glob("*.txt")) if (train / "calib").is_dir() else []
    for path in calibs:
        try:
            from .kitti_tracking import read_calib

            c = read_calib(path)
            if not (np.allclose(c.get("P0", np.nan), c["P2"]) and np.allclose(c.get("P1", np.nan), c["P3"])):
                return False
        except (ValueError, OSError):
            return False
    return True


def _remove_stale(train: pathlib.Path, num_sequences: int, frames_per_sequence: int) -> None:
    """Delete files of an earlier render (only names of this layout) that a new, smaller render will not overwrite."""
    import re
    import shutil

    for sub in ("image_02", "image_03", "velodyne"):
        for d in (train / sub).iterdir():
            if not (d.is_dir() and re.fullmatch(r"\d{4}", d.name)):
                continue
            if int(d.name) >= num_sequences:
                shutil.rmtree(d)
                continue
            for f in d.iterdir():
                if re.fullmatch(r"\d{6}\.(png|bin)", f.name) and int(f.name[:6]) >= frames_per_sequence:
                    f.unlink()
    for sub in ("label_02", "calib"):
        for f in (train / sub).iterdir():
            if re.fullmatch(r"\d{4}\.txt", f.name) and int(f.name[:4]) >= num_sequences:
                f.unlink()


def _render_sequence(train: pathlib.Path, seq: int, seed: int, frames_per_sequence: int, size: tuple[int, int],
                     lidar_density: float, min_visible_pixels: int, max_label_depth: float) -> int:
    """Render and write one sequence (everything derives from ``(seed, seq)``); returns the number of label rows."""
    h, w = size
    calib = kitti_like_calib((h, w))
    rot, off = calib["Tr_velo_cam"][:, :3], calib["Tr_velo_cam"][:, 3]
    rng = np.random.default_rng([int(seed), seq])
    name = f"{seq:04d}"
    ego_speed = 0.0 if rng.random() < 0.25 else float(rng.uniform(3.0, 10.0))
    facade_x = (-float(rng.uniform(10.0, 14.0)), float(rng.uniform(10.0, 14.0)))
    renderer = _Renderer((h, w), calib, rng, facade_x)
    objects = _make_objects(rng, frames_per_sequence, ego_speed)
    lidar_rng = np.random.default_rng([int(seed), seq, 1])
    for d in ("image_02", "image_03", "velodyne"):
        (train / d / name).mkdir(parents=True, exist_ok=True)
    _write_calib(train / "calib" / f"{name}.txt", calib)
    rows: list[str] = []
    for fr in range(frames_per_sequence):
        t = fr / FPS
        ego_z = ego_speed * t
        boxes = []
        for oid, obj in enumerate(objects):
            x, z, ry = _object_pose(obj, t)
            zc = z - ego_z
            if zc < -8.0 or zc > 120.0:
                continue
            loc = np.array([x, CAMERA_HEIGHT, zc])
            boxes.append({"id": oid, "cls": obj["cls"], "loc": loc, "hwl": obj["hwl"], "ry": ry,
                          "corners": _box_corners(loc, obj["hwl"], ry), "colour": obj["colour"],
                          "tex": obj["tex"], "tex_off": obj["tex_off"]})
        left, depth, ids, sil = renderer.render(0.0, ego_z, boxes, want_ids=True)
        right, _, _, _ = renderer.render(renderer.b, ego_z, boxes)
        for cam, im in (("image_02", left), ("image_03", right)):
            _save_png(train / cam / name / f"{fr:06d}.png", np.clip(im * 255.0 + 0.5, 0, 255).astype(np.uint8))
        # labels
        visible = np.bincount(ids[ids >= 0], minlength=len(boxes)) if len(boxes) else np.zeros(0, np.int64)
        for k, bx in enumerate(boxes):
            if visible[k] < min_visible_pixels:
                continue
            full = _project_rect(bx["corners"], renderer.f, renderer.cx, renderer.cy, 0.0)
            clipped = (max(full[0], 0.0), max(full[1], 0.0), min(full[2], w - 1.0), min(full[3], h - 1.0))
            x1, y1, x2, y2 = clipped
            if bx["loc"][2] > max_label_depth:
                rows.append(f"{fr} -1 DontCare -1 -1 -10.000000 {x1:.6f} {y1:.6f} {x2:.6f} {y2:.6f} "
                            "-1000.000000 -1000.000000 -1000.000000 -10.000000 -1.000000 -1.000000 -1.000000")
                continue
            trunc = _truncation_level(full, clipped)
            occ = _occlusion_level(1.0 - visible[k] / max(sil[k], 1))
            lx, ly, lz = bx["loc"]
            ry = _wrap_angle(bx["ry"])
            alpha = _wrap_angle(ry - np.arctan2(lx, lz))
            hh, ww, ll = bx["hwl"]
            rows.append(f"{fr} {bx['id']} {bx['cls']} {trunc} {occ} {alpha:.6f} {x1:.6f} {y1:.6f} {x2:.6f} "
                        f"{y2:.6f} {hh:.6f} {ww:.6f} {ll:.6f} {lx:.6f} {ly:.6f} {lz:.6f} {ry:.6f}")
        # LiDAR points sampled from the left depth, moved to the LiDAR frame: X_velo = R^T (X_cam - t)
        ok = np.isfinite(depth) & (depth < _MAX_LIDAR_DEPTH)
        ok &= lidar_rng.random(ok.shape) < lidar_density
        vs, us = np.nonzero(ok)
        z = depth[vs, us]
        cam = np.stack([(us - renderer.cx) / renderer.f * z, (vs - renderer.cy) / renderer.f * z, z], 1)
        velo = (cam - off) @ rot  # rows: R^T (p - t)
        inten = left[vs, us].mean(1)
        pts = np.concatenate([velo, inten[:, None]], 1).astype(np.float32)
        pts.tofile(train / "velodyne" / name / f"{fr:06d}.bin")
    (train / "label_02" / f"{name}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    logger.info("rendered sequence %s: %d frames, %d label rows", name, frames_per_sequence, len(rows))
    return len(rows)


def _render_sequence_args(args: tuple) -> int:
    return _render_sequence(*args)


def render_kitti_tracking(
    out_dir: str | os.PathLike,
    num_sequences: int = 4,
    frames_per_sequence: int = 80,
    image_size: tuple[int, int] = (96, 320),
    seed: int = 0,
    *,
    lidar_density: float = 0.25,
    min_visible_pixels: int = 4,
    max_label_depth: float = 70.0,
    overwrite: bool = False,
    workers: int = 1,
) -> pathlib.Path:
    """Render ``num_sequences`` synthetic stereo sequences in the KITTI tracking layout under ``out_dir/training``.

    Args:
        out_dir: dataset root to create (existing files of the same names are overwritten).
        num_sequences: number of sequences (``0000``, ``0001``, ...).
        frames_per_sequence: frames per sequence (10 Hz).
        image_size: ``(H, W)``, each a positive multiple of 16, at most ``(320, 1248)`` (the StreamDSGN crop).
        seed: everything (scenes, textures, LiDAR sampling) is a function of ``(seed, sequence index)``.
        lidar_density: fraction of the left image's pixels (with finite depth < 80 m) kept as LiDAR points.
        min_visible_pixels: objects with fewer visible pixels in the left image are not labelled.
        max_label_depth: visible objects farther than this (camera z, metres) become ``DontCare`` rows.
        workers: render sequences in this many processes (the output does not depend on it).
        overwrite: needed to write into an existing ``training`` folder whose calib files this function did not write
            (e.g. a real KITTI root). In a folder it wrote (a ``.synthetic_kitti_tracking`` marker or its calib
            signature), files of an earlier, larger render that the new one does not replace (extra sequences or
            frames) are removed, so the reader sees only the new data.
    Returns:
        ``out_dir`` as a :class:`pathlib.Path` (pass it to :class:`commons.data.kitti_tracking.KittiTrackingStream`).
    """
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences must be a positive int, got {num_sequences!r}")
    if not isinstance(frames_per_sequence, int) or frames_per_sequence < 1:
        raise ValueError(f"frames_per_sequence must be a positive int, got {frames_per_sequence!r}")
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(int(v) != v or v <= 0 or v % 16 for v in image_size)
            or image_size[0] > 320 or image_size[1] > 1248):
        raise ValueError(f"image_size must be (H, W), positive multiples of 16 up to (320, 1248), got {image_size!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if not 0.0 < lidar_density <= 1.0:
        raise ValueError(f"lidar_density must be in (0, 1], got {lidar_density}")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ImportError("render_kitti_tracking writes PNGs with pillow: "
                          "pip install 'paperlab-commons[data]'") from None
    h, w = int(image_size[0]), int(image_size[1])
    root = pathlib.Path(out_dir)
    train = root / "training"
    marker = train / ".synthetic_kitti_tracking"
    ours = marker.is_file() or _written_by_us(train)
    if not ours and not overwrite:
        raise ValueError(f"{str(train)!r} holds KITTI calib files not written by render_kitti_tracking (a real "
                         "dataset?); pass overwrite=True or choose another out_dir")
    for sub in ("image_02", "image_03", "label_02", "calib", "velodyne"):
        (train / sub).mkdir(parents=True, exist_ok=True)
    if ours:
        _remove_stale(train, num_sequences, frames_per_sequence)
    marker.write_text(f"seed={seed} num_sequences={num_sequences} frames_per_sequence={frames_per_sequence} "
                      f"image_size={h}x{w}\n")
    args = [(train, seq, int(seed), frames_per_sequence, (h, w), lidar_density, min_visible_pixels, max_label_depth)
            for seq in range(num_sequences)]
    if workers > 1 and num_sequences > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, num_sequences)) as pool:
            list(pool.map(_render_sequence_args, args))
    else:
        for a in args:
            _render_sequence(*a)
    return root

"""The scene of :mod:`commons.data.synthetic_stereo`: procedural textures and the moving cuboid objects (sizes,
speeds, paths, collision-free placement); see that module's docstring, *Scene*."""

from __future__ import annotations

import numpy as np

from .stereo_camera import CLASS_SIZES_HWL, FPS


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

"""The per-pixel ray caster of :mod:`commons.data.synthetic_stereo` (ground, facades, sky and cuboids with a
z-buffer); see that module's docstring, *Rendering*."""

from __future__ import annotations

import numpy as np

from .stereo_camera import CAMERA_HEIGHT, _project_rect
from .stereo_scene import _SHADE, _bilinear_wrap, _smooth_noise


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

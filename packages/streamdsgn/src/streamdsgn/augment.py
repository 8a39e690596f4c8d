"""Stereo-consistent training augmentation, as the release's pipeline (horizontal flip with stereo swap, crop, scaling,
and a stereo copy-paste database of objects), applied to a whole streaming sample (``prev2`` … ``next`` share one
camera, so every frame gets the same transform and the object tracks stay consistent).

Each transform keeps three things consistent, which the tests check: the images (left / right), the calibration (so
that ``disparity = f_u·b / depth`` still maps a left pixel to its right pixel, and ``P2`` projects each 3D box onto
its 2D box) and the labels (3D boxes in the LiDAR-style frame, 2D boxes, the token frame's LiDAR depth map).

* :func:`flip_stereo` — mirror the world about the camera's ``x = 0`` plane: the new left image is the flipped
  **right** image and the new right image the flipped left one (a flipped left image alone is not the left view of
  any mirrored scene); ``P2' = [K' | −p3x, p3y, p3z]``, ``P3' = [K' | −p2x, p2y, p2z]`` with ``c_x' = W − 1 − c_x``
  (so ``f_u·b`` is unchanged); camera boxes ``x → −x``, ``ry → π − ry``. The depth map of the new left view is the
  old left depth forward-warped to the right view (``u − f_u·b / z``, nearest point wins) and flipped.
* :func:`affine_stereo` — scaling by ``s`` and a crop window offset ``(t_x, t_y)`` in one image-space affine map
  ``u' = s·u + t_x``, ``v' = s·v + t_y`` (bilinear resampling, zero outside the source image, the image size kept):
  ``P' = A·P`` for both cameras (``f_u·b`` scales by ``s``, as the disparities do), 2D boxes through ``A``, sparse
  depth points moved to their new pixels; 3D boxes unchanged.
* :class:`CopyPasteDatabase` — stereo copy-paste (GT sampling): objects of other training samples (same camera) are
  pasted with their left **and** right 2D patches at their own pixel positions (their 3D boxes are valid in this
  camera), in every frame of the sample with the object's own track, if in either view their 2D boxes overlap only
  objects farther away (the paste covers them, keeping the occlusion order) and their BEV footprints overlap
  nothing; the pasted patches carry their LiDAR depth. The release
  pastes LiDAR-derived instance regions; here the whole 2D box is pasted (no instance masks).
* :class:`StereoAugment` — the composition used for training (probabilities and ranges as arguments).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["flip_stereo", "affine_stereo", "CopyPasteDatabase", "StereoAugment", "disparity_consistency"]

_TAGS = ("prev3", "prev2", "prev", "token", "next")


def _np_calib(calib: dict) -> dict:
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).astype(np.float64) for k, v in
            calib.items()}


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _copy_sample(sample: dict) -> dict:
    out = {k: v for k, v in sample.items() if k not in ("frames", "calib")}
    out["calib"] = {k: v.clone() for k, v in sample["calib"].items()}
    out["frames"] = {}
    for tag, f in sample["frames"].items():
        out["frames"][tag] = None if f is None else {
            k: (v.clone() if isinstance(v, torch.Tensor) else (list(v) if isinstance(v, list) else v))
            for k, v in f.items()}
    return out


def _fu_baseline(calib: dict) -> float:
    return float(calib["P2"][0, 3] - calib["P3"][0, 3])


# ------------------------------------------------------------------------------------------------------ flip
def _forward_warp_depth(depth: torch.Tensor, fu_baseline: float) -> torch.Tensor:
    """Sparse left depth ``[H, W]`` moved to the right view: pixel ``(v, u)`` with depth ``z`` goes to
    ``(v, round(u − f_u·b / z))``; the nearest point wins; 0 = no point."""
    h, w = depth.shape
    v, u = torch.nonzero(depth > 0, as_tuple=True)
    z = depth[v, u]
    ur = torch.round(u.float() - fu_baseline / z).long()
    ok = (ur >= 0) & (ur < w)
    v, ur, z = v[ok], ur[ok], z[ok]
    out = torch.zeros_like(depth)
    order = torch.argsort(z, descending=True)  # far first, nearest written last
    out[v[order], ur[order]] = z[order]
    return out


def flip_stereo(sample: dict) -> dict:
    """Horizontal flip with stereo swap (see the module docstring). Returns a new sample."""
    from commons.data.kitti_tracking import camera_to_lidar_boxes, lidar_to_camera_boxes

    s = _copy_sample(sample)
    cal = _np_calib(s["calib"])
    fub = _fu_baseline(cal)
    w = None
    for f in s["frames"].values():
        if f is None:
            continue
        h, w = f["left"].shape[-2:]
        left, right = f["left"], f["right"]
        f["left"], f["right"] = torch.flip(right, [-1]), torch.flip(left, [-1])
        if f.get("depth") is not None:
            f["depth"] = torch.flip(_forward_warp_depth(f["depth"], fub), [-1])
        if len(f["boxes"]):
            cam = np.asarray(lidar_to_camera_boxes(f["boxes"].numpy(), cal), dtype=np.float64)
            cam[:, 0] = -cam[:, 0]
            cam[:, 6] = np.pi - cam[:, 6]
            # the new calib mirrors the reference frame; camera→LiDAR uses the unchanged R_rect / Tr
            f["boxes"] = _t(camera_to_lidar_boxes(cam, cal))
        if f.get("dontcare_bbox2d") is not None and len(f["dontcare_bbox2d"]):
            b = f["dontcare_bbox2d"]  # left-view regions, mirrored (approximate: the new left is the old right view)
            f["dontcare_bbox2d"] = torch.stack([w - 1 - b[:, 2], b[:, 1], w - 1 - b[:, 0], b[:, 3]], 1)
    if w is None:
        return s
    p2, p3 = cal["P2"].copy(), cal["P3"].copy()
    new_p2, new_p3 = p3.copy(), p2.copy()
    for p in (new_p2, new_p3):
        p[0, 2] = (w - 1) - p[0, 2]
        p[0, 3] = -p[0, 3]
    s["calib"]["P2"], s["calib"]["P3"] = _t(new_p2), _t(new_p3)
    new_cal = _np_calib(s["calib"])
    from .boxes import project_boxes_to_image

    for f in s["frames"].values():  # 2D boxes: the new 3D boxes through the new P2 (label boxes unclipped)
        if f is None or not len(f["boxes"]):
            continue
        h, ww = f["left"].shape[-2:]
        full = project_boxes_to_image(f["boxes"], new_cal)
        if f.get("bbox2d_label") is not None:
            f["bbox2d_label"] = full.clone()
        if f.get("bbox2d") is not None:
            f["bbox2d"] = project_boxes_to_image(f["boxes"], new_cal, (h, ww))
    s["fu_baseline"] = float(new_p2[0, 3] - new_p3[0, 3])
    return s


# ------------------------------------------------------------------------------------------- crop + scaling
def affine_stereo(sample: dict, scale: float, tx: float, ty: float) -> dict:
    """Scale by ``scale`` and shift by ``(tx, ty)`` pixels (``u' = scale·u + tx``), keeping the image size; see the
    module docstring. Returns a new sample."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    s = _copy_sample(sample)
    a = np.array([[scale, 0.0, tx], [0.0, scale, ty], [0.0, 0.0, 1.0]])
    for key in ("P2", "P3"):
        s["calib"][key] = _t(a @ _np_calib(s["calib"])[key])
    s["fu_baseline"] = float(sample["fu_baseline"]) * scale
    for f in s["frames"].values():
        if f is None:
            continue
        h, w = f["left"].shape[-2:]
        # output pixel (u', v') samples the source at ((u' - tx) / s, (v' - ty) / s); align_corners=True grid
        us = (torch.arange(w, dtype=torch.float32) - tx) / scale
        vs = (torch.arange(h, dtype=torch.float32) - ty) / scale
        grid = torch.stack(torch.meshgrid(2 * vs / (h - 1) - 1, 2 * us / (w - 1) - 1, indexing="ij")[::-1], -1)
        imgs = torch.stack([f["left"], f["right"]])
        out = F.grid_sample(imgs, grid[None].expand(2, -1, -1, -1), mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        f["left"], f["right"] = out[0], out[1]
        if f.get("depth") is not None:
            d = f["depth"]
            v, u = torch.nonzero(d > 0, as_tuple=True)
            z = d[v, u]
            nu = torch.round(u.float() * scale + tx).long()
            nv = torch.round(v.float() * scale + ty).long()
            ok = (nu >= 0) & (nu < w) & (nv >= 0) & (nv < h)
            nd = torch.zeros_like(d)
            order = torch.argsort(z[ok], descending=True)
            nd[nv[ok][order], nu[ok][order]] = z[ok][order]
            f["depth"] = nd
        for key in ("bbox2d", "bbox2d_label", "dontcare_bbox2d"):
            if f.get(key) is not None and len(f[key]):
                b = f[key] * scale + torch.tensor([tx, ty, tx, ty], dtype=torch.float32)
                if key != "bbox2d_label":
                    b[:, 0::2] = b[:, 0::2].clamp(0, w - 1)
                    b[:, 1::2] = b[:, 1::2].clamp(0, h - 1)
                f[key] = b
    return s


# ---------------------------------------------------------------------------------------------- copy-paste
class CopyPasteDatabase:
    """Stereo copy-paste of objects from other samples of a training stream (see the module docstring).

    Args:
        dataset: a :class:`~commons.data.kitti_tracking.KittiTrackingStream` (one camera for all sequences, as the
            synthetic default; real KITTI sequences differ slightly in calibration, where a pasted object is only
            approximately consistent).
        classes: class indices to paste (default: all).
        max_paste: objects pasted per sample at most.
        min_height: minimum 2D box height (px) of a pasted object in the token frame; only unoccluded, untruncated
            objects are pasted.
    """

    def __init__(self, dataset, classes=None, max_paste: int = 4, min_height: float = 8.0):
        self.dataset, self.max_paste, self.min_height = dataset, int(max_paste), float(min_height)
        self.classes = None if classes is None else {int(c) for c in classes}

    def _candidates(self, src: dict) -> list[int]:
        tok = src["frames"]["token"]
        out = []
        for k in range(len(tok["boxes"])):
            b = tok["bbox2d"][k]
            if self.classes is not None and int(tok["labels"][k]) not in self.classes:
                continue
            if (float(b[3] - b[1]) >= self.min_height and float(tok["occluded"][k]) == 0
                    and float(tok["truncated"][k]) == 0):
                out.append(k)
        return out

    def paste(self, sample: dict, rng: np.random.Generator) -> dict:
        """Paste up to ``max_paste`` objects of one randomly drawn other sample. Returns a new sample."""
        from .boxes import bev_iou_axis_aligned, project_boxes_to_image

        s = _copy_sample(sample)
        src = self.dataset[int(rng.integers(len(self.dataset)))]
        if _fu_baseline(_np_calib(src["calib"])) <= 0 or not torch.allclose(src["calib"]["P2"], s["calib"]["P2"],
                                                                            atol=1e-3):
            return s  # another camera: a pasted object would not be consistent
        cand = self._candidates(src)
        rng.shuffle(cand)
        cal = _np_calib(s["calib"])
        next_id = 100000 + int(rng.integers(100000))
        pasted = 0
        for k in cand:
            if pasted >= self.max_paste:
                break
            tid = int(src["frames"]["token"]["track_ids"][k])
            plan = {}
            ok = True
            for tag, f in s["frames"].items():
                if f is None:
                    continue
                sf = src["frames"].get(tag)
                if sf is None:
                    ok = False
                    break
                j = torch.nonzero(sf["track_ids"] == tid, as_tuple=True)[0]
                if len(j) == 0:
                    ok = False
                    break
                j = int(j[0])
                box = sf["boxes"][j:j + 1]
                h, w = f["left"].shape[-2:]
                lb = project_boxes_to_image(box, cal, (h, w))[0]
                # the right view's 2D box: the same box seen from the right camera
                rcal = dict(cal)
                rcal["P2"] = cal["P3"]
                rb = project_boxes_to_image(box, rcal, (h, w))[0]
                if float(lb[2] - lb[0]) < 1 or float(lb[3] - lb[1]) < 1 or float(rb[2] - rb[0]) < 1:
                    ok = False
                    break
                # the pasted object must be in front of every existing object its 2D boxes overlap (it is pasted
                # over them, so the occlusion order stays right) and overlap nothing in BEV
                if len(f["boxes"]):
                    nearer = f["boxes"][:, 0] < box[0, 0]
                    ex_l = project_boxes_to_image(f["boxes"][nearer], cal, (h, w))
                    ex_r = project_boxes_to_image(f["boxes"][nearer], rcal, (h, w))
                    if _overlaps(lb, ex_l) or _overlaps(rb, ex_r) or \
                            bool((bev_iou_axis_aligned(box, f["boxes"]) > 0).any()):
                        ok = False
                        break
                plan[tag] = (sf, j, lb, rb)
            if not ok or not plan:
                continue
            for tag, (sf, j, lb, rb) in plan.items():
                f = s["frames"][tag]
                for view, b in (("left", lb), ("right", rb)):
                    x0, y0 = int(math.floor(b[0])), int(math.floor(b[1]))
                    x1, y1 = int(math.ceil(b[2])) + 1, int(math.ceil(b[3])) + 1
                    f[view][:, y0:y1, x0:x1] = sf[view][:, y0:y1, x0:x1]
                if f.get("depth") is not None:
                    x0, y0 = int(math.floor(lb[0])), int(math.floor(lb[1]))
                    x1, y1 = int(math.ceil(lb[2])) + 1, int(math.ceil(lb[3])) + 1
                    sd = sf.get("depth")
                    f["depth"][y0:y1, x0:x1] = sd[y0:y1, x0:x1] if sd is not None else 0.0
                f["boxes"] = torch.cat([f["boxes"], sf["boxes"][j:j + 1]])
                f["labels"] = torch.cat([f["labels"], sf["labels"][j:j + 1]])
                f["track_ids"] = torch.cat([f["track_ids"], torch.tensor([next_id])])
                for key in ("bbox2d", "bbox2d_label"):
                    if f.get(key) is not None:
                        f[key] = torch.cat([f[key], sf[key][j:j + 1]])
                for key in ("occluded", "truncated"):
                    if f.get(key) is not None:
                        f[key] = torch.cat([f[key], sf[key][j:j + 1].to(f[key].dtype)])
                if f.get("names") is not None:
                    f["names"] = list(f["names"]) + [sf["names"][j]]
            next_id += 1
            pasted += 1
        s["pasted"] = pasted
        return s


def _overlaps(b: torch.Tensor, others: torch.Tensor) -> bool:
    if len(others) == 0:
        return False
    ix = (torch.minimum(b[2], others[:, 2]) - torch.maximum(b[0], others[:, 0])).clamp_min(0)
    iy = (torch.minimum(b[3], others[:, 3]) - torch.maximum(b[1], others[:, 1])).clamp_min(0)
    return bool(((ix * iy) > 0).any())


# ------------------------------------------------------------------------------------------------- compose
class StereoAugment:
    """The training augmentation: copy-paste (``p_paste``), horizontal flip with stereo swap (``p_flip``), then
    scaling in ``scale_range`` with a random crop window (``max_shift`` pixels), each drawn from the sample's ``rng``
    (:class:`streamdsgn.data.SupervisedSamples` passes a generator seeded by seed, epoch and index)."""

    def __init__(self, database: CopyPasteDatabase | None = None, p_paste: float = 0.5, p_flip: float = 0.5,
                 scale_range: tuple = (0.95, 1.05), max_shift: float = 8.0, p_affine: float = 0.5):
        for name, p in (("p_paste", p_paste), ("p_flip", p_flip), ("p_affine", p_affine)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.database, self.p_paste, self.p_flip = database, p_paste, p_flip
        self.scale_range, self.max_shift, self.p_affine = tuple(scale_range), float(max_shift), p_affine

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if self.database is not None and rng.random() < self.p_paste:
            sample = self.database.paste(sample, rng)
        if rng.random() < self.p_flip:
            sample = flip_stereo(sample)
        if rng.random() < self.p_affine:
            s = float(rng.uniform(*self.scale_range))
            h, w = sample["frames"]["token"]["left"].shape[-2:]
            # keep the image centre near the centre: the crop window moves by at most max_shift pixels
            tx = (1 - s) * (w - 1) / 2 + float(rng.uniform(-self.max_shift, self.max_shift))
            ty = (1 - s) * (h - 1) / 2 + float(rng.uniform(-self.max_shift / 2, self.max_shift / 2))
            sample = affine_stereo(sample, s, tx, ty)
        return sample


def disparity_consistency(frame: dict, calib: dict) -> float:
    """Mean absolute difference between the left image at the pixels with LiDAR depth and the right image at
    ``u − f_u·b / z`` (bilinear): small when images, calibration and depth agree. Samples touching zero padding (a
    crop window beyond the source image) are skipped."""
    d = frame["depth"]
    v, u = torch.nonzero(d > 0, as_tuple=True)
    fub = _fu_baseline(_np_calib(calib))
    ur = u.float() - fub / d[v, u]
    h, w = d.shape
    ok = (ur >= 1) & (ur <= w - 2) & (u > 0) & (u < w - 1) & (v > 0) & (v < h - 1)
    v, u, ur = v[ok], u[ok], ur[ok]
    x0 = torch.floor(ur).long()
    fx = ur - x0
    r0, r1, lf = frame["right"][:, v, x0], frame["right"][:, v, x0 + 1], frame["left"][:, v, u]
    keep = (r0.abs().sum(0) > 0) & (r1.abs().sum(0) > 0) & (lf.abs().sum(0) > 0)
    v, u, x0, fx = v[keep], u[keep], x0[keep], fx[keep]
    right = frame["right"][:, v, x0] * (1 - fx) + frame["right"][:, v, x0 + 1] * fx
    return float((frame["left"][:, v, u] - right).abs().mean())

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

from .stereo_camera import (
    _MAX_LIDAR_DEPTH,
    CAMERA_HEIGHT,
    CLASS_SIZES_HWL,
    FPS,
    _box_corners,
    _project_rect,
    _write_calib,
    depth_to_disparity,
    disparity_to_depth,
    fu_baseline_from_calib,
    kitti_like_calib,
    warp_right_to_left,
)
from .stereo_render import _Renderer
from .stereo_scene import _make_objects, _object_pose

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

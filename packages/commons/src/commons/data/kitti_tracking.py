"""Reader for the KITTI tracking layout and the StreamDSGN streaming dataset built on it.

Layout (``<root>/training/`` or the ``training`` folder itself)::

    image_02/<seq>/<frame:06d>.png   left images       image_03/<seq>/<frame:06d>.png   right images
    label_02/<seq>.txt               labels            calib/<seq>.txt                  calibration
    velodyne/<seq>/<frame:06d>.bin   float32 (x, y, z, reflectance) LiDAR points (only needed for depth maps)

Label lines (``label_02/<seq>.txt``): ``frame track_id type truncated occluded alpha x1 y1 x2 y2 h w l x y z
rotation_y [score]`` in rectified camera coordinates (``x`` right, ``y`` down, ``z`` forward; ``(x, y, z)`` the
bottom centre). ``DontCare`` rows (track id -1) are kept with ``track_id=-1``. Calib files hold ``P0..P3``,
``R_rect`` and ``Tr_velo_cam`` (key names with or without a trailing ``:``; ``R0_rect`` / ``Tr_velo_to_cam`` are
accepted too).

Clips (StreamDSGN ``tools/gen_split_kitti_tracking.py``, ``len_frames 40``): each sequence is cut into consecutive
40-frame clips, the last clip absorbing the remainder; a sequence with fewer than 80 frames is split in half. Even
clip indices form the train split, odd ones the val split (interleaved, no sequence-level split); scene ids are
``"<seq>_<clip>"``. Deviation from the official script: when a sequence length is an exact multiple of 40, the
official code silently drops the last 40 frames (``n = len // 40 - 1`` full clips and no remainder clip); here they
form the last clip.

Boxes for models and metrics use the LiDAR-style frame of :mod:`commons.metrics.detection` (``x`` forward, ``y``
left, ``z`` up; ``(x, y, z_centre, dx=l, dy=w, dz=h, yaw)``): :func:`camera_to_lidar_boxes` follows OpenPCDet's
``boxes3d_kitti_camera_to_lidar`` (the centre through the inverse calib, raised by ``h / 2``,
``yaw = -(pi / 2 + rotation_y)``) and :func:`lidar_to_camera_boxes` inverts it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "TrackLabel",
    "read_labels",
    "read_calib",
    "read_velodyne",
    "split_clips",
    "split_frame_ids",
    "camera_to_lidar_points",
    "lidar_to_camera_points",
    "camera_to_lidar_boxes",
    "lidar_to_camera_boxes",
    "lidar_depth_map",
    "find_training_dir",
    "CLASS_MAP",
    "FRAME_TAG_OFFSETS",
    "KittiTrackingStream",
]

logger = logging.getLogger(__name__)

#: StreamDSGN's class mapping: Van -> Car, Person_sitting -> Pedestrian; other types are dropped.
CLASS_MAP = {"Car": "Car", "Van": "Car", "Pedestrian": "Pedestrian", "Person_sitting": "Pedestrian",
             "Cyclist": "Cyclist"}
#: Frame tags of a sample and their offsets from the token frame (StreamDSGN ``frame_tag``; ``prev3`` for TV variants).
FRAME_TAG_OFFSETS = {"prev3": -3, "prev2": -2, "prev": -1, "token": 0, "next": 1}
FPS = 10.0


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


def read_velodyne(path: str | os.PathLike) -> np.ndarray:
    """LiDAR points ``float32 [N, 4]`` (x, y, z, reflectance) from a KITTI ``.bin`` file."""
    data = np.fromfile(path, dtype=np.float32)
    if data.size % 4:
        raise ValueError(f"{path}: size {data.size} float32 values is not a multiple of 4 (x, y, z, reflectance)")
    return data.reshape(-1, 4)


def split_frame_ids(frame_ids, clip_len: int = 40) -> list[list[int]]:
    """Cut a sorted list of frame ids into clips (see the module docstring): consecutive ``clip_len`` clips with the
    last one absorbing the remainder, or two halves when there are fewer than ``2 * clip_len`` frames."""
    if clip_len <= 0:
        raise ValueError(f"clip_len must be positive, got {clip_len}")
    ids = [int(f) for f in frame_ids]
    n = len(ids)
    if n == 0:
        return []
    if n < 2 * clip_len:
        return [c for c in (ids[: n // 2], ids[n // 2:]) if c]
    k = n // clip_len
    return [ids[i * clip_len:(i + 1) * clip_len] for i in range(k - 1)] + [ids[(k - 1) * clip_len:]]


def split_clips(num_frames: int, clip_len: int = 40) -> dict[str, list[range]]:
    """Clips of ``range(num_frames)`` (:func:`split_frame_ids`): even clip indices -> train, odd -> val."""
    if clip_len <= 0:
        raise ValueError(f"clip_len must be positive, got {clip_len}")
    clips = [range(c[0], c[-1] + 1) for c in split_frame_ids(range(num_frames), clip_len)]
    return {"train": clips[0::2], "val": clips[1::2]}


# ------------------------------------------------------------------------------------------ frames and boxes
def _calib_rt(calib: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(R_rect [3,3], Tr_velo_cam [3,4])`` from a calib dict (numpy or torch values, KITTI key variants)."""
    def get(*keys):
        for k in keys:
            if k in calib:
                v = calib[k]
                return np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float64)
        return None

    r = get("R_rect", "R0_rect", "R_rect_00")
    tr = get("Tr_velo_cam", "Tr_velo_to_cam")
    if tr is None:
        raise ValueError("calib needs 'Tr_velo_cam' (or 'Tr_velo_to_cam') to convert between camera and LiDAR frames")
    r = np.eye(3) if r is None else r.reshape(3, 3)
    return r, tr.reshape(3, 4)


def lidar_to_camera_points(points: np.ndarray, calib: dict) -> np.ndarray:
    """LiDAR points ``[N, >=3]`` -> rectified camera coordinates ``[N, 3]``: ``R_rect (R_vc x + t_vc)``."""
    r, tr = _calib_rt(calib)
    p = np.asarray(points, dtype=np.float64)[:, :3]
    return (p @ tr[:, :3].T + tr[:, 3]) @ r.T


def camera_to_lidar_points(points: np.ndarray, calib: dict) -> np.ndarray:
    """Rectified camera points ``[N, 3]`` -> LiDAR frame ``[N, 3]`` (the inverse of :func:`lidar_to_camera_points`)."""
    r, tr = _calib_rt(calib)
    p = np.asarray(points, dtype=np.float64)[:, :3]
    unrect = p @ np.linalg.inv(r).T
    return (unrect - tr[:, 3]) @ np.linalg.inv(tr[:, :3]).T


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _as_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy().astype(np.float64), x
    return np.asarray(x, dtype=np.float64), None


def _like(out: np.ndarray, ref):
    if ref is None:
        return out
    return torch.as_tensor(out, dtype=ref.dtype if ref.is_floating_point() else torch.float32, device=ref.device)


def camera_to_lidar_boxes(boxes_cam, calib: dict):
    """KITTI camera boxes ``[N, 7]`` ``(x, y, z, h, w, l, rotation_y)`` (bottom centre) -> LiDAR-style boxes ``[N, 7]``
    ``(x, y, z_centre, dx=l, dy=w, dz=h, yaw)`` with ``yaw = -(pi/2 + rotation_y)`` wrapped to ``[-pi, pi)``.
    numpy in -> numpy out, torch in -> torch out."""
    b, ref = _as_numpy(boxes_cam)
    b = b.reshape(-1, 7)
    xyz = camera_to_lidar_points(b[:, :3], calib)
    h, w, l, ry = b[:, 3], b[:, 4], b[:, 5], b[:, 6]
    xyz[:, 2] += h / 2
    out = np.concatenate([xyz, np.stack([l, w, h, _wrap(-(np.pi / 2 + ry))], 1)], 1)
    return _like(out, ref)


def lidar_to_camera_boxes(boxes_lidar, calib: dict):
    """Inverse of :func:`camera_to_lidar_boxes`: ``(x, y, z_centre, dx, dy, dz, yaw)`` -> ``(x, y, z, h, w, l, ry)``."""
    b, ref = _as_numpy(boxes_lidar)
    b = b.reshape(-1, 7)
    bottom = b[:, :3].copy()
    bottom[:, 2] -= b[:, 5] / 2
    xyz = lidar_to_camera_points(bottom, calib)
    out = np.concatenate([xyz, np.stack([b[:, 5], b[:, 4], b[:, 3], _wrap(-b[:, 6] - np.pi / 2)], 1)], 1)
    return _like(out, ref)


def lidar_depth_map(points: np.ndarray, calib: dict, image_size: tuple[int, int], min_depth: float = 0.1) -> np.ndarray:
    """Sparse depth map ``float32 [H, W]`` of LiDAR points projected with ``P2 R_rect Tr_velo_cam`` (pixel centres at
    integer coordinates, nearest point wins, 0 = no point). Depth is the camera-2 ``z`` (the homogeneous ``w``)."""
    h, w = int(image_size[0]), int(image_size[1])
    p2 = np.asarray(calib["P2"].detach().cpu().numpy() if hasattr(calib["P2"], "detach") else calib["P2"],
                    dtype=np.float64)
    rect = lidar_to_camera_points(points, calib)
    uvw = rect @ p2[:, :3].T + p2[:, 3]
    z = uvw[:, 2]
    ok = z > min_depth
    u = np.round(uvw[ok, 0] / z[ok]).astype(np.int64)
    v = np.round(uvw[ok, 1] / z[ok]).astype(np.int64)
    z = z[ok]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z = u[inside], v[inside], z[inside]
    depth = np.zeros((h, w), np.float32)
    order = np.argsort(-z, kind="stable")  # far first, so the nearest point is written last
    depth[v[order], u[order]] = z[order]
    return depth


# ------------------------------------------------------------------------------------------------ the dataset
_REQUIRED = ("image_02", "image_03", "label_02", "calib")


def find_training_dir(root: str | os.PathLike, with_velodyne: bool = False) -> pathlib.Path:
    """The folder holding ``image_02``, ``image_03``, ``label_02``, ``calib`` (and ``velodyne``): ``root/training`` or
    ``root`` itself. Raises ``FileNotFoundError`` naming the missing folder(s)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"KITTI tracking root {str(root)!r} does not exist or is not a directory")
    cand = root / "training" if (root / "training").is_dir() else root
    need = _REQUIRED + (("velodyne",) if with_velodyne else ())
    missing = [d for d in need if not (cand / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{str(cand)!r} is not a KITTI tracking folder: missing {', '.join(missing)} (expected "
            f"<root>/training/{{{','.join(need)}}}; commons.data.synthetic_stereo.render_kitti_tracking writes one"
            + ("; without LiDAR use with_depth=False)" if missing == ["velodyne"] else ")"))
    return cand


class KittiTrackingStream(Dataset):
    """Streaming samples of a KITTI tracking folder: one token frame with its tagged neighbours in the same clip.

    Args:
        root: dataset root (containing ``training/``) or the ``training`` folder.
        split: ``"train"`` (even clips), ``"val"`` (odd clips) or ``"all"``.
        classes: kept class names; ``labels`` index into this tuple after :data:`CLASS_MAP` (Van -> Car,
            Person_sitting -> Pedestrian); other types (and DontCare) are dropped from ``boxes``.
        clip_len: frames per clip (40 in StreamDSGN).
        frame_tags: tags of :data:`FRAME_TAG_OFFSETS` to load; a tag outside the clip gives ``None``.
        image_size: ``None`` (full images) or ``(H, W)``: a bottom crop, centred horizontally (zero padding where the
            image is smaller), with ``P2``/``P3`` and the 2D boxes adjusted (StreamDSGN crops KITTI to 320x1248).
        with_depth: add ``depth`` ``[H, W]``, the LiDAR points projected into ``image_02`` (0 = no point; all zeros
            when a frame has no ``.bin`` file, as for KITTI sequence 0001 frames 177-180).
        depth_tags: the frame tags that get ``depth`` when ``with_depth`` (default: only ``token``, the frame whose
            depth StreamDSGN supervises; projecting LiDAR for the neighbours would be wasted work).
        sequences: optional subset of sequence names (``"0003"`` or ``3``).
        cache_frames: keep decoded frames in memory (each frame appears in up to four samples as different tags;
            about 0.9 MB per frame at 96x320 with depth). Returned tensors are copies, safe to modify.

    A sample is ``{"scene", "seq", "frame", "timestamp" (frame / 10 Hz), "frames": {tag: None | {"left", "right",
    "boxes" [N, 7] LiDAR-style, "labels", "track_ids", "bbox2d" [N, 4] (label box in crop coordinates, clipped to the
    crop), "bbox2d_label" [N, 4] (the label file's box in crop coordinates, not clipped: the devkit's difficulty
    filter reads its height), "occluded", "truncated", "names" (original
    KITTI types of the kept boxes), "dontcare_bbox2d" [K, 4], "depth"}}, "calib": {"P2", "P3", "R_rect",
    "Tr_velo_cam"} (float32 tensors), "fu_baseline", "crop_offset" (x0, y0: add it to crop pixel coordinates to get
    the original image's), "image_shape" (H, W of the original image: detections' 2D boxes are clipped to it, as
    OpenPCDet clips them to ``info['image']['image_shape']``)}``. :attr:`scenes` lists the clips of the split and
    :meth:`clip_frames` gives a clip's sample indices in time order.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", classes=("Car", "Pedestrian", "Cyclist"),
                 clip_len: int = 40, frame_tags=("prev2", "prev", "token", "next"),
                 image_size: tuple[int, int] | None = None, with_depth: bool = True, sequences=None,
                 cache_frames: bool = False, depth_tags=("token",)):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        classes = tuple(classes)
        if not classes or any(c not in ("Car", "Pedestrian", "Cyclist") for c in classes):
            raise ValueError(f"classes must be a non-empty subset of ('Car', 'Pedestrian', 'Cyclist'), got {classes!r}")
        frame_tags = tuple(frame_tags)
        bad = [t for t in frame_tags if t not in FRAME_TAG_OFFSETS]
        if bad or "token" not in frame_tags:
            raise ValueError(f"frame_tags must include 'token' and only use {tuple(FRAME_TAG_OFFSETS)}, "
                             f"got {frame_tags!r}")
        depth_tags = tuple(depth_tags)
        if any(t not in FRAME_TAG_OFFSETS for t in depth_tags):
            raise ValueError(f"depth_tags must only use {tuple(FRAME_TAG_OFFSETS)}, got {depth_tags!r}")
        self.depth_tags = depth_tags
        if image_size is not None and (len(image_size) != 2 or any(int(v) <= 0 for v in image_size)):
            raise ValueError(f"image_size must be None or (H, W) positive ints, got {image_size!r}")
        if not isinstance(clip_len, int) or clip_len <= 0:
            raise ValueError(f"clip_len must be a positive int, got {clip_len!r}")
        self.dir = find_training_dir(root, with_velodyne=with_depth)
        self.split, self.classes, self.clip_len, self.frame_tags = split, classes, clip_len, frame_tags
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.with_depth = with_depth
        self.cache_frames = bool(cache_frames)
        self._cache: dict[tuple, dict] = {}
        seqs = sorted(p.name for p in (self.dir / "image_02").iterdir() if p.is_dir())
        if sequences is not None:
            want = {f"{int(s):04d}" if str(s).isdigit() else str(s) for s in sequences}
            seqs = [s for s in seqs if s in want]
        if not seqs:
            raise FileNotFoundError(f"no sequence folders under {str(self.dir / 'image_02')!r}")
        self._labels: dict[str, dict[int, list[TrackLabel]]] = {}
        self._calib: dict[str, dict[str, np.ndarray]] = {}
        self._frames: dict[str, set[int]] = {}
        self.samples: list[tuple[str, int, int]] = []  # (seq, clip index, frame id)
        self._clip_members: dict[str, list[int]] = {}
        self.scenes: list[str] = []
        for seq in seqs:
            lab = self.dir / "label_02" / f"{seq}.txt"
            cal = self.dir / "calib" / f"{seq}.txt"
            if not cal.is_file():
                raise FileNotFoundError(f"missing calibration file {str(cal)!r} for sequence {seq}")
            if not lab.is_file():
                raise FileNotFoundError(f"missing label file {str(lab)!r} for sequence {seq}")
            frames = sorted(int(p.stem) for p in (self.dir / "image_02" / seq).glob("*.png"))
            if not frames:
                raise FileNotFoundError(f"no PNG images in {str(self.dir / 'image_02' / seq)!r}")
            self._labels[seq] = read_labels(lab)
            self._calib[seq] = read_calib(cal)
            for c, clip in enumerate(split_frame_ids(frames, clip_len)):
                if split == "train" and c % 2 == 1 or split == "val" and c % 2 == 0:
                    continue
                scene = f"{seq}_{c}"
                self.scenes.append(scene)
                self._clip_members[scene] = list(range(len(self.samples), len(self.samples) + len(clip)))
                self._frames[scene] = set(clip)
                self.samples += [(seq, c, f) for f in clip]
        logger.info("KittiTrackingStream %s: %d sequences, %d clips, %d samples", split, len(seqs), len(self.scenes),
                    len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def clip_frames(self, scene: str) -> list[int]:
        """Sample indices of clip ``scene`` (``"<seq>_<clip>"``) in time order."""
        if scene not in self._clip_members:
            raise KeyError(f"unknown scene {scene!r}; this split has {len(self.scenes)} clips, e.g. {self.scenes[:4]}")
        return list(self._clip_members[scene])

    # -- loading helpers
    def _crop_offsets(self, h: int, w: int) -> tuple[int, int]:
        if self.image_size is None:
            return 0, 0
        ch, cw = self.image_size
        return (w - cw) // 2, h - ch  # x0 (centred), y0 (bottom crop); negative -> zero padding

    def _load_image(self, cam: str, seq: str, frame: int):
        from .folders import read_image

        img = read_image(self.dir / cam / seq / f"{frame:06d}.png")
        if self.image_size is None:
            return img, (0, 0)
        _, h, w = img.shape
        x0, y0 = self._crop_offsets(h, w)
        ch, cw = self.image_size
        out = torch.zeros(3, ch, cw)
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(y0 + ch, h), min(x0 + cw, w)
        out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[:, sy0:sy1, sx0:sx1]
        return out, (x0, y0)

    def _calib_for(self, seq: str, offset: tuple[int, int]) -> dict[str, np.ndarray]:
        raw = self._calib[seq]
        shift = np.array([[1.0, 0, -offset[0]], [0, 1.0, -offset[1]], [0, 0, 1.0]])
        r, tr = _calib_rt(raw) if ("Tr_velo_cam" in raw or "Tr_velo_to_cam" in raw) else (np.eye(3), None)
        out = {"P2": shift @ raw["P2"], "P3": shift @ raw["P3"], "R_rect": r}
        out["Tr_velo_cam"] = tr if tr is not None else np.concatenate([np.eye(3), np.zeros((3, 1))], 1)
        return out

    def _frame(self, seq: str, frame: int, calib: dict, offset: tuple[int, int], depth: bool = True) -> dict:
        left, _ = self._load_image("image_02", seq, frame)
        right, _ = self._load_image("image_03", seq, frame)
        keep, dontcare = [], []
        for lab in self._labels[seq].get(frame, []):
            if lab.cls == "DontCare":
                dontcare.append(lab.bbox)
            elif CLASS_MAP.get(lab.cls) in self.classes:
                keep.append(lab)
        cam = np.array([[*lab.location, *lab.dims_hwl, lab.rotation_y] for lab in keep], np.float64).reshape(-1, 7)
        boxes = camera_to_lidar_boxes(cam, calib) if len(cam) else np.zeros((0, 7))
        dx, dy = offset
        bbox = np.array([lab.bbox for lab in keep], np.float64).reshape(-1, 4) - np.array([dx, dy, dx, dy])
        bbox_label = bbox.copy()
        dc = np.array(dontcare, np.float64).reshape(-1, 4) - np.array([dx, dy, dx, dy])
        hh, ww = left.shape[1:]
        for arr in (bbox, dc):
            arr[:, [0, 2]] = arr[:, [0, 2]].clip(0, ww - 1)
            arr[:, [1, 3]] = arr[:, [1, 3]].clip(0, hh - 1)
        out = {
            "left": left, "right": right,
            "boxes": torch.as_tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor([self.classes.index(CLASS_MAP[lab.cls]) for lab in keep], dtype=torch.long),
            "track_ids": torch.tensor([lab.track_id for lab in keep], dtype=torch.long),
            "bbox2d": torch.as_tensor(bbox, dtype=torch.float32),
            "bbox2d_label": torch.as_tensor(bbox_label, dtype=torch.float32),
            "occluded": torch.tensor([lab.occluded for lab in keep], dtype=torch.long),
            "truncated": _truncation_tensor([lab.truncated for lab in keep]),
            "names": [lab.cls for lab in keep],
            "dontcare_bbox2d": torch.as_tensor(dc, dtype=torch.float32),
        }
        if self.with_depth and depth:
            path = self.dir / "velodyne" / seq / f"{frame:06d}.bin"
            if path.is_file():
                out["depth"] = torch.from_numpy(lidar_depth_map(read_velodyne(path), calib, (hh, ww)))
            else:
                out["depth"] = torch.zeros(hh, ww)
        return out

    def _cached_frame(self, seq: str, frame: int, calib: dict, offset: tuple[int, int], depth: bool = True) -> dict:
        if not self.cache_frames:
            return self._frame(seq, frame, calib, offset, depth)
        key = (seq, frame, offset, depth)
        if key not in self._cache:
            self._cache[key] = self._frame(seq, frame, calib, offset, depth)
        return {k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in self._cache[key].items()}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        seq, clip, frame = self.samples[index]
        scene = f"{seq}_{clip}"
        members = self._frames[scene]
        # the crop offset depends on the image size of the sequence: read it from the token image header
        from PIL import Image

        with Image.open(self.dir / "image_02" / seq / f"{frame:06d}.png") as im:
            w_img, h_img = im.size
        offset = self._crop_offsets(h_img, w_img)
        calib = self._calib_for(seq, offset)
        frames = {}
        for tag in self.frame_tags:
            f = frame + FRAME_TAG_OFFSETS[tag]
            frames[tag] = (self._cached_frame(seq, f, calib, offset, tag in self.depth_tags) if f in members
                           else None)
        return {
            "scene": scene, "seq": int(seq) if seq.isdigit() else seq, "frame": frame, "timestamp": frame / FPS,
            "frames": frames,
            "calib": {k: torch.as_tensor(v, dtype=torch.float32) for k, v in calib.items()},
            "fu_baseline": _fu_baseline(self._calib[seq]),
            "crop_offset": (int(offset[0]), int(offset[1])),  # (x0, y0) of the crop in the original image
            "image_shape": (int(h_img), int(w_img)),  # the original image's (H, W)
        }


def _truncation_tensor(values: list[float]) -> torch.Tensor:
    """KITTI tracking truncation is an integer 0/1/2 (LongTensor); the object benchmark's float stays float."""
    if all(float(v).is_integer() for v in values):
        return torch.tensor([int(v) for v in values], dtype=torch.long)
    return torch.tensor(values, dtype=torch.float32)


def _fu_baseline(calib: dict) -> float:
    p2, p3 = np.asarray(calib["P2"]), np.asarray(calib["P3"])
    return float(p2[0, 3] - p3[0, 3])

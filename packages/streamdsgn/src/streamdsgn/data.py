"""Batching of :class:`commons.data.kitti_tracking.KittiTrackingStream` samples and ground-truth helpers.

A sample (see the commons reader) is one token frame with its tagged neighbours ``prev2``, ``prev``, ``token``, ``next``
(``None`` outside the 40-frame clip). :func:`collate` stacks a list of samples into the model's inputs; frames missing
for some items of a batch are zero images with a ``valid`` mask.
"""

from __future__ import annotations

import torch

__all__ = ["collate", "filter_boxes_in_range", "gt_frame", "TAGS", "SupervisedSamples", "make_loader"]

TAGS = ("prev2", "prev", "token", "next")
CALIB_KEYS = ("P2", "P3", "R_rect", "Tr_velo_cam")


def _check_sample(s: dict) -> None:
    if not isinstance(s, dict) or "frames" not in s or "calib" not in s or "fu_baseline" not in s:
        raise ValueError("a sample must be a dict with 'frames', 'calib' and 'fu_baseline' (KittiTrackingStream)")
    tok = s["frames"].get("token")
    if tok is None:
        raise ValueError(f"sample {s.get('scene')}/{s.get('frame')} has no token frame")


def collate(samples: list[dict]) -> dict:
    """Stack samples: ``{"scene", "frame", "timestamp", "calib" {k: [B, ...]}, "fu_baseline" [B], "frames" {tag:
    {"valid" [B] bool, "left"/"right" [B, 3, H, W], "depth" [B, H, W] or None, "boxes"/"labels"/"track_ids": lists}}}``.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    for s in samples:
        _check_sample(s)
    ref = samples[0]["frames"]["token"]
    shape = tuple(ref["left"].shape)
    frames = {}
    tags = [t for t in TAGS if any(t in s["frames"] for s in samples)]
    for tag in tags:
        items = [s["frames"].get(tag) for s in samples]
        valid = torch.tensor([f is not None for f in items])
        if not valid.any():
            frames[tag] = None
            continue
        zero = torch.zeros(shape)
        for f in items:
            if f is not None and tuple(f["left"].shape) != shape:
                raise ValueError(f"all images of a batch must have shape {shape}, got {tuple(f['left'].shape)}")
        depth = None
        if all(f is None or f.get("depth") is not None for f in items):
            dz = torch.zeros(shape[1:])
            depth = torch.stack([f["depth"] if f is not None else dz for f in items])
        frames[tag] = {
            "valid": valid,
            "left": torch.stack([f["left"] if f is not None else zero for f in items]),
            "right": torch.stack([f["right"] if f is not None else zero for f in items]),
            "depth": depth,
            "boxes": [f["boxes"].float().reshape(-1, 7) if f is not None else torch.zeros(0, 7) for f in items],
            "labels": [f["labels"].long().reshape(-1) if f is not None else torch.zeros(0, dtype=torch.long)
                       for f in items],
            "track_ids": [f["track_ids"].long().reshape(-1) if f is not None else torch.zeros(0, dtype=torch.long)
                          for f in items],
        }
    calib = {k: torch.stack([torch.as_tensor(s["calib"][k], dtype=torch.float32) for s in samples])
             for k in CALIB_KEYS}
    return {"scene": [s.get("scene") for s in samples], "frame": [s.get("frame") for s in samples],
            "timestamp": [s.get("timestamp") for s in samples], "calib": calib,
            "fu_baseline": torch.tensor([float(s["fu_baseline"]) for s in samples]), "frames": frames}


def filter_boxes_in_range(boxes: torch.Tensor, point_cloud_range: tuple) -> torch.Tensor:
    """Mask of boxes whose BEV centre lies inside ``point_cloud_range`` (OpenPCDet
    ``mask_boxes_outside_range``, centre version)."""
    pcr = point_cloud_range
    return (boxes[:, 0] >= pcr[0]) & (boxes[:, 0] < pcr[3]) & (boxes[:, 1] >= pcr[1]) & (boxes[:, 1] < pcr[4])


def gt_frame(frame: dict | None, point_cloud_range: tuple | None = None) -> dict:
    """A ground-truth frame for :func:`commons.metrics.detection.kitti_eval` (numpy arrays): boxes, labels, 2D box
    height, occlusion, truncation, restricted to ``point_cloud_range`` when given (the detector cannot see outside).
    The 2D height is the label file's box (``bbox2d_label``, not clipped to a crop), as the devkit reads the label
    boxes; ``bbox2d`` is the fallback for frames without it."""
    import numpy as np

    if frame is None:
        return {"boxes": np.zeros((0, 7), np.float32), "labels": np.zeros(0, np.int64),
                "bbox_height": np.zeros(0, np.float32), "occluded": np.zeros(0, np.int64),
                "truncated": np.zeros(0, np.float32)}
    boxes = frame["boxes"].float().reshape(-1, 7)
    keep = torch.ones(len(boxes), dtype=torch.bool)
    if point_cloud_range is not None:
        keep = filter_boxes_in_range(boxes, point_cloud_range)
    n = len(boxes)
    bbox = frame.get("bbox2d_label", frame.get("bbox2d", torch.zeros(n, 4))).float().reshape(-1, 4)
    out = {"boxes": boxes[keep].numpy(), "labels": frame["labels"].long()[keep].numpy(),
            "bbox_height": (bbox[:, 3] - bbox[:, 1])[keep].numpy(),
            "occluded": frame.get("occluded", torch.zeros(n, dtype=torch.long)).long()[keep].numpy(),
            "truncated": frame.get("truncated", torch.zeros(n)).float()[keep].numpy()}
    if frame.get("names") is not None:  # lets kitti_eval ignore Van for Car and Person_sitting for Pedestrian
        out["names"] = [name for name, k in zip(frame["names"], keep.tolist()) if k]
    return out


class SupervisedSamples(torch.utils.data.Dataset):
    """Training view of a :class:`~commons.data.kitti_tracking.KittiTrackingStream`: item ``j`` is sample ``j`` or,
    when it lacks the supervision frame (``"next"`` for StreamDSGN: the last frame of a clip), the nearest earlier
    sample that has it (the released code resamples; replacing keeps every process's step count equal).

    Args:
        dataset: the stream (``ds[i]`` → sample dict).
        supervise: ``"next"`` (streaming) or ``"token"`` (baseline).
        transform: optional callable applied to each returned sample (augmentation, :mod:`streamdsgn.augment`);
            it receives ``(sample, rng)`` with a :class:`numpy.random.Generator` seeded by ``(seed, epoch, index)``.
        seed: seed of the per-item random generators.
    """

    def __init__(self, dataset, supervise: str = "next", transform=None, seed: int = 0):
        if supervise not in ("next", "token"):
            raise ValueError(f"supervise must be 'next' or 'token', got {supervise!r}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty")
        self.dataset, self.supervise, self.transform, self.seed = dataset, supervise, transform, int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, j: int) -> dict:
        import numpy as np

        for k in range(int(j), max(-1, int(j) - 4), -1):
            s = self.dataset[k]
            if s["frames"].get(self.supervise) is not None:
                if self.transform is not None:
                    s = self.transform(s, np.random.default_rng((self.seed, self.epoch, int(j))))
                return s
        raise ValueError(f"sample {j} and its three predecessors have no {self.supervise!r} frame (clips of one "
                         "frame?)")


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int = 1, num_workers: int = 0, seed: int = 0,
                num_samples: int | None = None, pin_memory: bool = False, drop_last: bool = True,
                prefetch_factor: int = 2):
    """A shuffled :class:`torch.utils.data.DataLoader` that decodes and collates samples in ``num_workers`` worker
    processes (:func:`collate`), so the accelerator is not starved by PNG decoding and LiDAR projection.
    ``num_samples`` draws that many items with replacement (an endless stream for time-budgeted training);
    otherwise one seeded permutation per iteration."""
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
    gen = torch.Generator().manual_seed(int(seed))
    if num_samples is not None:
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=int(num_samples),
                                                 generator=gen)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=gen)
    kw = {"persistent_workers": True, "prefetch_factor": int(prefetch_factor)} if num_workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                       collate_fn=collate, pin_memory=pin_memory, drop_last=drop_last, **kw)

"""``python -m streamdsgn.smoke``: a tiny end-to-end check (< 30 s on a CPU): render a short synthetic sequence, build a
slim tiny model, train two samples, detect a clip with history, evaluate offline/streaming AP, save/load round trip."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.data.synthetic_stereo import render_kitti_tracking

    from . import StreamDSGN, TrainConfig

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = render_kitti_tracking(Path(tmp) / "data", num_sequences=1, frames_per_sequence=12,
                                     image_size=(96, 320), seed=0)
        ds = KittiTrackingStream(root, split="all", clip_len=6)
        det = StreamDSGN("tiny", device="cpu", seed=0, base_width=8, up_dims=(8, 4), slice_channels=4,
                         volume_channels=4, num_planes=12, van_stem=12, van_dim=16, bev_out=16, head_channels=16)
        hist = det.fit(ds, TrainConfig(epochs=1, samples_per_epoch=2, log_every=1), progress=False)
        if not all(np.isfinite(hist["loss"])):
            raise RuntimeError(f"non-finite training loss: {hist['loss']}")
        scene = list(ds.scenes)[0]
        idx = list(ds.clip_frames(scene))
        dets = det.detect((ds, idx))
        if len(dets) != len(idx) or any(d["boxes"].shape[1:] != (7,) for d in dets):
            raise RuntimeError("detect returned malformed per-frame boxes")
        res = det.evaluate(ds, latency=0.05, scenes=[scene])
        if set(res) < {"offline", "streaming", "forecast"}:
            raise RuntimeError(f"evaluate returned {sorted(res)}")
        det.save(Path(tmp) / "ckpt")
        again = StreamDSGN.load(Path(tmp) / "ckpt", device="cpu")
        a = again.detect_sample(ds[idx[0]], score_threshold=0.0)
        det.reset()
        b = det.detect_sample(ds[idx[0]], score_threshold=0.0)
        if not np.allclose(a["scores"], b["scores"], atol=1e-5):
            raise RuntimeError("save/load round trip changed the output")
    print(f"streamdsgn smoke OK: loss {hist['loss'][-1]:.3f}, {len(dets)} frames detected, "
          f"streaming mean 3D AP {res['summary']['streaming']['mean']:.3f}")


if __name__ == "__main__":
    main()

"""Run by test_streamdsgn_distributed.py under torch.distributed.run (2 CPU processes): a few training steps of a slim
model through accelerate; writes each process's parameter checksums."""

import json
import os
import sys

import torch

from commons.data.kitti_tracking import KittiTrackingStream
from commons.device import TrainingBackend
from streamdsgn import StreamDSGN, TrainConfig

root, out, run_dir = sys.argv[1], sys.argv[2], sys.argv[3]
backend = TrainingBackend(cpu=True, use_accelerate=True)
ds = KittiTrackingStream(root, split="all", clip_len=6)
det = StreamDSGN("tiny", device="cpu", seed=0, base_width=8, up_dims=(8, 4), slice_channels=4, volume_channels=4,
                 num_planes=12, van_stem=12, van_dim=16, bev_out=16, head_channels=16)
# 5 samples on 2 processes: the shorter share is padded so that both make 3 steps; every process opens run_dir
hist = det.fit(ds, TrainConfig(epochs=1, samples_per_epoch=5, log_every=1, seed=0), run_dir=run_dir, progress=False,
               backend=backend)
flat = torch.cat([p.detach().flatten() for p in det.model.parameters()])
rows = backend.gather(torch.stack([flat.sum(), flat.abs().sum(), flat.square().sum()]).unsqueeze(0))
if backend.is_main_process:
    with open(out, "w") as f:
        json.dump({"rows": rows.tolist(), "world": backend.num_processes, "steps": len(hist["loss"]),
                   "final": os.path.isdir(os.path.join(run_dir, "final"))}, f)
backend.close()  # barrier, then tear the gloo group down
# Skip interpreter teardown: under heavy CPU load gloo's exit-time destructors have aborted a finished worker
# (SIGABRT, 'terminate called without an active exception') after its results were written.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)

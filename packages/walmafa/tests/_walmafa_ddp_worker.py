"""Run by test_walmafa_distributed.py under torch.distributed.run (2 CPU processes): a tiny WalMaFa trained through
accelerate, once straight through and once interrupted and resumed; writes each process's parameter checksums."""

import json
import os
import sys
from pathlib import Path

import torch

from commons.data.lol import SyntheticLowLightDataset
from commons.device import TrainingBackend
from walmafa import Enhancer, TrainConfig

root, out = Path(sys.argv[1]), sys.argv[2]
backend = TrainingBackend(cpu=True, use_accelerate=True)
ds = SyntheticLowLightDataset("train", size=32, variants=1, seed=0)
tiny = {"dim": 8, "num_blocks": (1, 1, 1), "d_state": 4}
cfg = TrainConfig(steps=5, batch_size=1, patch_size=32, warmup_steps=1, log_every=1, checkpoint_every=2, seed=0)


def checksums(enh: Enhancer) -> list:
    flat = torch.cat([p.detach().flatten() for p in enh.model.parameters()])
    return backend.gather(torch.stack([flat.sum(), flat.abs().sum(), flat.square().sum()]).unsqueeze(0)).tolist()


full = Enhancer("walmafa", device="cpu", seed=0, **tiny)
hist = full.fit(ds, cfg, run_dir=root / "full", progress=False, backend=backend)
part = Enhancer("walmafa", device="cpu", seed=0, **tiny)
part.fit(ds, cfg, run_dir=root / "part", progress=False, backend=backend, stop_after=2)
final_after_part = (root / "part" / "final").exists()
resumed = Enhancer("walmafa", device="cpu", seed=7, **tiny)  # a different init: everything must come from state.pt
resumed.fit(ds, cfg, run_dir=root / "part", resume=True, progress=False, backend=backend)
rows_full, rows_resumed = checksums(full), checksums(resumed)
if backend.is_main_process:
    with open(out, "w") as f:
        json.dump({"world": backend.num_processes, "hist_steps": hist["step"], "full": rows_full,
                   "resumed": rows_resumed, "final": (root / "full" / "final").exists(),
                   "final_after_part": final_after_part}, f)
backend.close()
# skip interpreter teardown (gloo's exit-time destructors have aborted finished workers under load)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)

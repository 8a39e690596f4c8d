"""Run by test_kdrl_distributed.py under torch.distributed.run (2 CPU processes); writes each process's end state."""

import json
import os
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from commons.device import TrainingBackend
from kdrl import MTKDRL, DistillConfig, MultiTeacherDistiller, create_model

backend = TrainingBackend(cpu=True)
g = torch.Generator().manual_seed(0)
y = torch.randint(0, 3, (192,), generator=g)
x = torch.randn(192, 6, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 6).float()
loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
torch.manual_seed(0)
teachers = [create_model("digits_mlp", in_features=6, num_classes=3, hidden=[16]).eval() for _ in range(2)]
strategy = MTKDRL(hidden=16)
d = MultiTeacherDistiller(create_model("digits_mlp", in_features=6, num_classes=3, hidden=[8]), teachers, strategy,
                          DistillConfig(epochs=2, milestones=[]), backend=backend)
d.fit(loader, progress=False)
agent = torch.cat([p.detach().flatten() for p in strategy.agent.parameters()])
student = torch.cat([p.detach().flatten() for p in d.student.parameters()])
rows = backend.gather(torch.stack([agent.sum(), agent.abs().sum(), student.sum()]).unsqueeze(0))
if backend.is_main_process:
    with open(sys.argv[1], "w") as f:
        json.dump({"rows": rows.tolist(), "world": backend.num_processes, "updates": strategy.updates}, f)
backend.close()  # barrier, then tear the gloo group down
# Skip interpreter teardown: under heavy CPU load gloo's exit-time destructors have aborted a finished worker
# (SIGABRT, 'terminate called without an active exception') after its results were written.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)

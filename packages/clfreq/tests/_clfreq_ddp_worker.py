"""Run by test_clfreq_distributed.py under torch.distributed.run (2 CPU processes); writes each process's end state."""

import json
import os
import sys
from pathlib import Path

import torch

from clfreq import create_method, split_digits, train_continual
from commons.device import TrainingBackend

out = Path(sys.argv[1])
backend = TrainingBackend(cpu=True)
bench = split_digits(image_size=8)
bench.train = [(x[:128], y[:128]) for x, y in bench.train[:2]]
bench.test = bench.test[:2]
report = {"world": backend.num_processes}
for name, plugin in (("der++", "clfd"), ("cls-er", None), ("er", "fdinet")):
    m = create_method(name, plugin=plugin, nf=4, buffer_size=10, lr=0.05)
    r = train_continual(m, bench, epochs=2, seed=0, backend=backend, augment={"padding": 1, "flip": True},
                        out_dir=out.parent / f"run-{name}-{plugin}")
    nets = [m.net] + ([m.stable, m.plastic] if name == "cls-er" else [])
    state = torch.cat([v.detach().double().flatten() for n in nets for v in n.state_dict().values()])
    bufsig = torch.tensor([float(m.buffer.num_seen), float(m.buffer.capacity), float(len(m.buffer)),
                           float(m.buffer.data["examples"].double().sum()),
                           float(m.buffer.data["labels"].double().sum())], dtype=torch.float64)
    acc = torch.tensor([r["class_il"], r["task_il"]], dtype=torch.float64)
    states = backend.gather(state[None])
    bufs = backend.gather(bufsig[None])
    accs = backend.gather(acc[None])
    extra = {"ema_updates": m.ema_updates} if name == "cls-er" else {}
    if backend.is_main_process:
        report[f"{name}-{plugin}"] = {
            "max_state_diff": float((states[0] - states[1]).abs().max()),
            "state_norm": float(states[0].abs().sum()), "buffers": bufs.tolist(), "acc": accs.tolist(),
            "buffer_capacity": r["buffer_capacity"], "world_size": r["world_size"], **extra}
if backend.is_main_process:
    out.write_text(json.dumps(report))
backend.close()  # barrier, then tear the gloo group down
# Skip interpreter teardown: under heavy CPU load gloo's exit-time destructors have aborted a finished worker
# (SIGABRT, 'terminate called without an active exception') after its results were written.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)

"""Two CPU processes under torch.distributed.run through accelerate: the global batch stream is shared out, the
replicas stay equal, the step count and schedule are global, and an interrupted run resumes exactly."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_process_training_shares_steps_and_resumes(tmp_path):
    out = tmp_path / "ddp.json"
    worker = Path(__file__).with_name("_walmafa_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    with socket.socket() as sock:  # a free port, so parallel test workers do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(worker), str(tmp_path / "runs"), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["world"] == 2
    # 5 global steps of batch 1 on 2 processes: 3 optimiser steps (global batches 0-1, 2-3, 4-5)
    assert r["hist_steps"] == [2, 4, 6]
    assert r["final"] and not r["final_after_part"]
    a, b = r["full"]
    assert a == pytest.approx(b, rel=1e-6)  # all-reduced gradients: identical replicas
    for x, y in zip(r["full"], r["resumed"]):
        assert x == pytest.approx(y, rel=1e-5)  # interrupted after 2 global steps + resumed == straight through

"""Two CPU processes under torch.distributed.run: data is sharded and the agent and student stay identical."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_process_run_keeps_agent_and_student_in_sync(tmp_path):
    pytest.importorskip("accelerate")
    out = tmp_path / "ddp.json"
    worker = Path(__file__).with_name("_kdrl_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # a crash prints its Python stack
    with socket.socket() as sock:  # a free port, so parallel test workers do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(worker), str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2
    a, b = result["rows"]
    assert a == pytest.approx(b, rel=1e-6)  # all-reduced agent gradients and DDP student: identical copies
    assert result["updates"] == 2 * 3  # 192 samples / 2 processes / batch 32 = 3 batches per epoch, 2 epochs

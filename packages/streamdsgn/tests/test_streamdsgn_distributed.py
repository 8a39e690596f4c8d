"""Two CPU processes under torch.distributed.run through accelerate: samples are sharded (an uneven epoch padded),
both replicas stay equal, and a run folder works with several processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_process_training_keeps_replicas_identical(tmp_path):
    from commons.data.synthetic_stereo import render_kitti_tracking

    root = render_kitti_tracking(tmp_path / "data", num_sequences=1, frames_per_sequence=12, image_size=(96, 320),
                                 seed=0)
    out = tmp_path / "ddp.json"
    worker = Path(__file__).with_name("_streamdsgn_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # a crash prints its Python stack
    with socket.socket() as sock:  # a free port, so parallel test workers do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(worker), str(root), str(out), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2
    assert result["steps"] == 3  # 5 samples / 2 processes / batch 1, the shorter share padded to 3 steps
    assert result["final"]  # the run folder was opened by both processes, the weights written by the main one
    a, b = result["rows"]
    assert a == pytest.approx(b, rel=1e-6)  # all-reduced gradients: identical replicas after the steps

"""Two CPU processes under torch.distributed.run: sharded data, all-reduced gradients, sharded reservoir."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_processes_end_with_identical_models(tmp_path):
    pytest.importorskip("accelerate")
    out = tmp_path / "ddp.json"
    worker = Path(__file__).with_name("_clfreq_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # a crash prints its Python stack
    for _attempt in range(2):  # a second try only if another process took the free port in between
        with socket.socket() as sock:  # a free port, so parallel test workers do not collide
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(port), str(worker), str(out)],
                              capture_output=True, text=True, timeout=240, env=env)
        if proc.returncode == 0 or "in use" not in proc.stderr.lower():
            break
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2
    for key in ("der++-clfd", "cls-er-None", "er-fdinet"):
        r = result[key]
        assert r["world_size"] == 2
        # parameters, BatchNorm statistics, CLFD counts/probabilities and CLS-ER EMA models: identical copies
        assert r["max_state_diff"] == 0.0, (key, r["max_state_diff"])
        (seen0, cap0, len0, xs0, ys0), (seen1, cap1, len1, xs1, ys1) = r["buffers"]
        # each process keeps its own reservoir shard over its own half of the data: 2 tasks x 2 epochs x 64 samples
        assert seen0 == seen1 == 2 * 2 * 64
        assert cap0 + cap1 == r["buffer_capacity"] and len0 == cap0 and len1 == cap1
        assert (xs0, ys0) != (xs1, ys1)  # different data went to the two shards
        assert r["acc"][0] == r["acc"][1]  # evaluation counts are summed over the two halves of the test set
    assert sum(result["cls-er-None"]["ema_updates"].values()) > 0
    run = tmp_path / "run-er-fdinet"
    assert (run / "state.pt").exists() and (run / "state.rank1.pt").exists()  # one resumable state per process

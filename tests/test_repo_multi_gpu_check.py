"""tools/multi_gpu_check.py (issue 28) in its CPU mode: two gloo processes against one, for one small package job."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commons.results import load_results

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "multi_gpu_check.py"


def _tool():
    spec = importlib.util.spec_from_file_location("multi_gpu_check", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_children_run_with_nvlink_multicast_off_and_see_only_their_cards(monkeypatch):
    tool = _tool()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for device, world in (("cpu", 2), ("cuda", 1), ("cuda", 4)):
        env = tool._child_env(device, world)
        assert env["NCCL_NVLS_ENABLE"] == "0" and env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
        assert env["NVSHMEM_DISABLE_NVLS"] == "1"
        assert env["CUDA_VISIBLE_DEVICES"] == ("" if device == "cpu" else ",".join(map(str, range(world))))
        assert str(REPO / "packages" / "kdrl" / "src") in env["PYTHONPATH"].split(":")


@pytest.mark.parametrize("argv, message", [
    (["--out", "x", "--gpus", "1", "--device", "cpu"], "--gpus must be >= 2"),
    (["--out", "x", "--device", "cpu", "--packages", "walmafa,vqcore"], "--packages must be"),
    (["--out", "x", "--device", "cpu", "--budget-s", "0"], "--budget-s must be positive"),
])
def test_bad_arguments_are_refused_in_one_line(argv, message):
    proc = subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cpu_mode_two_processes_against_one(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path), "--gpus", "2", "--device", "cpu",
                           "--packages", "walmafa", "--budget-s", "240"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = load_results(tmp_path / "multi_gpu" / "multi_gpu.json")
    assert data["settings"]["env"]["NCCL_NVLS_ENABLE"] == "0"
    runs = {r["world"]: r for r in data["rows"] if r["table"] == "runs"}
    checks = {r["check"]: r for r in data["rows"] if r["table"] == "checks"}
    assert set(runs) == {1, 2}
    for r in runs.values():
        assert r["samples_per_s"] > 0 and r["peak_mem_mib"] > 0 and r["global_batch"] == 2
    assert runs[2]["scaling"] == pytest.approx(runs[2]["samples_per_s"] / runs[1]["samples_per_s"])
    # all-reduced gradients keep the replicas equal (gloo returns the same sum on both ranks: bit-equal)
    assert checks["replicas identical"]["value"] == 0.0
    # interrupted after half the steps and resumed from state.pt on the same processes: the same parameters
    assert checks["resumed == uninterrupted"]["value"] <= 1e-6
    assert runs[2]["resume_rel_param_dist"] <= 1e-6
    # BatchNorm over G/N samples per process: different from 1 device, but the same training outcome
    assert 0 < runs[2]["rel_param_dist_vs_1"] < 1
    assert all(c["ok"] == "True" for c in checks.values()), checks

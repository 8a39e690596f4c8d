"""Ahead-of-time compilation of the Triton kernels for Hopper (sm_90) — no GPU needed.

The interpreter tests (``test_vqcore_kernels.py``) check the numerics but never lower a kernel to PTX. This test runs
``tools/vqcore_kernels_compile_check.py --subset test`` (every kernel function at least once, and the default
dispatch of a CogVideoX-2B-size W8A8 and W4A8 ``QLinearInt``: every autotune config the first call compiles) for
``GPUTarget("cuda", 90, 32)`` and asserts that each configuration compiled to a cubin, that the GEMMs use the int8
``wgmma`` tensor-core instruction, that the TMA kernel issues ``cp.async.bulk.tensor`` loads (and stores with
``STORE_DESC``), that the quantizers divide with IEEE ``div.rn.f32`` and that every kernel fits sm_90's shared memory.

It runs in a subprocess: the other kernel tests set ``TRITON_INTERPRET=1`` in this process, and interpreter functions
cannot be compiled (for the same reason this module does not import Triton). It is skipped only when Triton is not
installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "vqcore_kernels_compile_check.py"
KERNELS = {"_quant_per_token_kernel", "_quant_static_kernel", "_unpack_int4_kernel", "_int_gemm_kernel",
           "_int_gemm_tma_kernel", "_wonly_gemm_kernel", "_wonly_splitk_reduce_kernel"}  # fmt: skip
TILE_KEYS = ("BLOCK_M", "BLOCK_N", "SWAP", "num_warps", "num_stages")

# Triton is looked up, not imported: importing it here, before test_vqcore_kernels.py sets TRITON_INTERPRET=1, would
# fix Triton's mode for the whole session and break the interpreter tests
pytestmark = [
    pytest.mark.slow,  # ~20 compiles, ~25 s on one core
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot_sm90")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET" and not k.startswith("VQCORE_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(TOOL), "--subset", "test", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    files = sorted(out.glob("compile_check_*.json"))
    assert files, f"no report written (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc, json.loads(files[-1].read_text())


def test_every_kernel_compiles_for_sm90(report):
    proc, rep = report
    rows = rep["rows"]
    failed = [f"{r['kernel']} {r['config']}: {r.get('error')}" for r in rows if not r["ok"]]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert {r["kernel"] for r in rows} == KERNELS
    assert not rep["summary"]["enumeration_errors"]
    assert rep["meta"]["target"].startswith("GPUTarget(backend='cuda', arch=90")
    for r in rows:
        assert r["shared"] <= 232448, r["config"]
        assert r["regs"] is None or 0 < r["regs"] <= 255, r["config"]


def test_ptx_uses_int8_wgmma_tma_and_ieee_division(report):
    _, rep = report
    for r in rep["rows"]:
        if r["kernel"] in ("_int_gemm_kernel", "_int_gemm_tma_kernel"):
            assert r["mma"] == "wgmma.s8", (r["config"], r["wgmma"], r["mma_sync"])
            assert any(".s32.s8.s8" in i for i in r["wgmma"])
        if r["kernel"] == "_int_gemm_tma_kernel":
            assert r["tma_loads"] > 0, r["config"]
            assert (r["tma_stores"] > 0) == bool(r["constexprs"]["STORE_DESC"]), r["config"]
        if r["kernel"] in ("_quant_per_token_kernel", "_quant_static_kernel"):
            assert r["div_rn"] > 0 and r["div_approx"] == 0, r["config"]
        if r["kernel"] == "_wonly_gemm_kernel":  # M = 64: bf16 wgmma (the weight codes converted in registers)
            assert any(".f32.bf16.bf16" in i for i in r["wgmma"]), (r["config"], r["wgmma"])
    tma = [r for r in rep["rows"] if r["kernel"] == "_int_gemm_tma_kernel"]
    assert any(r["constexprs"]["STORE_DESC"] for r in tma) and any(r["constexprs"]["GROUP_SIZE"] for r in tma)
    wonly = [r["constexprs"]["SPLIT_K"] for r in rep["rows"] if r["kernel"] == "_wonly_gemm_kernel"]
    assert 1 in wonly and max(wonly) > 1  # the single-pass launch and the opt-in split-K one (with its reduction)


@pytest.mark.parametrize("w_bits", [8, 4])
def test_cogvideox_default_dispatch_compiled(report, w_bits):
    """The first call of a CogVideoX-2B qkv-size layer compiles every large-M autotune config (and the fixed
    PTR_TILES entry VQCORE_AUTOTUNE=0 uses is one of them): all of them must be among the compiled rows."""
    _, rep = report
    site = f"QLinearInt.from_linear 1920->1920 W{w_bits}A8 bf16 M=17776"
    rows = [r for r in rep["rows"] if r["kernel"] == "_int_gemm_kernel" and any(site in c for c in r["call_sites"])]
    got = {tuple({**r["constexprs"], **r["options"]}[k] for k in TILE_KEYS) for r in rows}
    want = {tuple(int(c[k]) for k in TILE_KEYS) for c in rep["meta"]["dispatch"]["autotune_large_M"]}
    assert want and got == want
    fixed = rep["meta"]["dispatch"]["PTR_TILES"][str(("large", w_bits == 4, 0))]
    assert tuple(fixed[k] for k in TILE_KEYS) in got
    for r in rows:
        c = r["constexprs"]
        assert c["W4"] == (w_bits == 4) and c["GROUP_SIZE"] == 0 and c["HAS_BIAS"] and c["EVEN_K"]
        assert r["ok"] and r["mma"] == "wgmma.s8"

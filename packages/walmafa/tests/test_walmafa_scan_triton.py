"""The fused Triton selective scan against the reference loop: on CPU through Triton's interpreter, and on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")

_CASES = textwrap.dedent("""
    import json, torch
    from walmafa.mamba import Mamba, selective_scan_sequential, selective_scan_chunked
    from walmafa.scan_triton import selective_scan_triton

    def inputs(b, d, n, L, seed):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(b, d, L, generator=g), torch.rand(b, d, L, generator=g) * 0.6,
                -torch.rand(d, n, generator=g) * 4, torch.randn(b, n, L, generator=g),
                torch.randn(b, n, L, generator=g), torch.randn(d, generator=g))

    out = {}
    # lengths not a multiple of the chunk, channels not a multiple of the block, a state size not a power of 2
    x, dt, A, B, C, D = inputs(2, 5, 3, 37, 0)
    out["plain"] = (selective_scan_triton(x, dt, A, B, C, D, block_d=4, chunk=16)
                    - selective_scan_sequential(x, dt, A, B, C, D)).abs().max().item()
    # strided (transposed) inputs, no D
    xt = torch.randn(2, 37, 5).transpose(1, 2)
    out["strided_noD"] = (selective_scan_triton(xt, dt, A, B, C, None, block_d=2, chunk=32)
                          - selective_scan_sequential(xt, dt, A, B, C)).abs().max().item()
    # bf16 input read in fp32, output in bf16: compare with the reference on the same bf16 values
    xb = x.bfloat16()
    yb = selective_scan_triton(xb, dt, A, B, C, D, block_d=4, chunk=16)
    ref = selective_scan_sequential(xb.float(), dt, A, B, C, D)
    out["bf16_dtype"] = str(yb.dtype)
    out["bf16_rel"] = ((yb.float() - ref).abs() / (ref.abs() + 1e-3)).max().item()
    # the Mamba block: scan="triton" under no_grad equals the chunked scan; with a gradient it falls back
    torch.manual_seed(0)
    m = Mamba(4, d_state=4, scan="triton")
    h = torch.randn(1, 20, 4)
    with torch.no_grad():
        y_t = m(h)
        m.scan = "chunked"
        y_c = m(h)
    out["mamba"] = (y_t - y_c).abs().max().item()
    m.scan = "triton"
    out["grad_fallback"] = m(h).requires_grad
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_triton_scan_matches_the_reference_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _CASES], capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # fp32 with |y| ~ 10: the scan reorders a sum of ~37 terms; 1e-5 absolute is ~30 ulp of the largest terms
    assert out["plain"] < 1e-5 and out["strided_noD"] < 1e-5 and out["mamba"] < 1e-5, out
    assert out["bf16_dtype"] == "torch.bfloat16" and out["bf16_rel"] < 2 ** -7, out  # one bf16 rounding of y
    assert out["grad_fallback"] is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_scan_on_gpu_matches_chunked_scan_at_image_lengths():
    from walmafa.mamba import selective_scan_chunked
    from walmafa.scan_triton import selective_scan_triton

    g = torch.Generator(device="cuda").manual_seed(0)
    for b, d, n, L in ((3, 32, 32, 60800), (3, 64, 32, 15200), (2, 7, 5, 1000)):
        x = torch.randn(b, d, L, device="cuda", generator=g)
        dt = torch.rand(b, d, L, device="cuda", generator=g) * 0.1
        A = -torch.arange(1, n + 1, device="cuda", dtype=torch.float32).repeat(d, 1)
        B = torch.randn(b, n, L, device="cuda", generator=g)
        C = torch.randn(b, n, L, device="cuda", generator=g)
        D = torch.ones(d, device="cuda")
        ref = selective_scan_chunked(x.double(), dt.double(), A.double(), B.double(), C.double(), D.double())
        got = selective_scan_triton(x, dt, A, B, C, D)
        err = (got.double() - ref).abs().max().item()
        assert err < 1e-3 * max(1.0, ref.abs().max().item()), (b, d, n, L, err)

"""Pure-PyTorch Mamba: chunked scan vs sequential reference, parameterisation and initialisation."""

import math

import pytest
import torch
import torch.nn.functional as F

from walmafa import Mamba, selective_scan_chunked, selective_scan_sequential


def _inputs(b, d, n, length, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, length, generator=g, dtype=dtype)
    delta = F.softplus(torch.randn(b, d, length, generator=g, dtype=dtype) - 1)
    A = -torch.exp(torch.randn(d, n, generator=g, dtype=dtype))
    B = torch.randn(b, n, length, generator=g, dtype=dtype) * 0.5
    C = torch.randn(b, n, length, generator=g, dtype=dtype) * 0.5
    D = torch.randn(d, generator=g, dtype=dtype)
    return x, delta, A, B, C, D


@pytest.mark.parametrize("length,chunk", [(1, 4), (7, 4), (37, 8), (64, 16), (100, 32), (129, 64), (300, 7)])
def test_chunked_equals_sequential_fp32(length, chunk):
    args = _inputs(2, 6, 5, length, seed=length)
    ref = selective_scan_sequential(*args)
    out = selective_scan_chunked(*args, chunk_size=chunk)
    assert out.shape == ref.shape == (2, 6, length)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_chunked_equals_sequential_fp64_and_gradients():
    args = [a.requires_grad_() for a in _inputs(1, 3, 4, 45, seed=3, dtype=torch.float64)]
    ref = selective_scan_sequential(*args)
    out = selective_scan_chunked(*args, chunk_size=8)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    g_ref = torch.autograd.grad(ref.sum(), args)
    g_out = torch.autograd.grad(out.sum(), args)
    for a, b in zip(g_ref, g_out):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_long_sequence_with_strong_decay_stays_finite():
    # a cumulative decay of e^-1e4 over the sequence: an unchunked exp(-S)·cumsum form would overflow
    x, delta, A, B, C, D = _inputs(1, 4, 4, 2000, seed=1)
    delta = delta * 0 + 5.0
    out = selective_scan_chunked(x, delta, A * 0 - 1.0, B, C, D, chunk_size=64)
    ref = selective_scan_sequential(x, delta, A * 0 - 1.0, B, C, D)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_scan_argument_errors():
    x, delta, A, B, C, D = _inputs(1, 3, 2, 5, seed=0)
    with pytest.raises(ValueError, match="delta"):
        selective_scan_chunked(x, delta[..., :4], A, B, C, D)
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_chunked(x, delta, A, B, C, D, chunk_size=0)
    with pytest.raises(ValueError, match="B must"):
        selective_scan_sequential(x, delta, A, B[:, :1], C, D)


def test_mamba_parameterisation_and_init():
    torch.manual_seed(0)
    m = Mamba(d_model=20, d_state=8, d_conv=4, expand=2)
    r = math.ceil(20 / 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"in_proj.weight": (80, 20), "conv1d.weight": (40, 1, 4), "conv1d.bias": (40,),
                      "x_proj.weight": (r + 16, 40), "dt_proj.weight": (40, r), "dt_proj.bias": (40,),
                      "A_log": (40, 8), "D": (40,), "out_proj.weight": (20, 40)}
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1, 9.0).repeat(40, 1))
    assert torch.equal(m.D, torch.ones(40))
    dt = F.softplus(m.dt_proj.bias)  # the bias is softplus^-1 of dt ~ logU[1e-3, 1e-1]
    assert dt.min() >= 1e-3 - 1e-6 and dt.max() <= 0.1 + 1e-6
    assert m.dt_proj.weight.abs().max() <= r**-0.5


def test_mamba_is_causal_and_scans_agree():
    torch.manual_seed(0)
    m = Mamba(d_model=8, d_state=4, chunk_size=5)
    ref = Mamba(d_model=8, d_state=4, scan="sequential")
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 23, 8)
    y = m(x)
    torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)
    x2 = x.clone()
    x2[:, 15:] += 1.0
    y2 = m(x2)
    torch.testing.assert_close(y2[:, :15], y[:, :15])  # outputs before t=15 do not see later inputs
    assert (y2[:, 15:] - y[:, 15:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, 7))

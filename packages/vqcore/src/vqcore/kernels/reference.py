"""Pure-PyTorch references of every integer kernel (CPU path of the custom ops, and the oracle of the tests).

Numerics shared by the references and the Triton kernels (``vqcore.kernels.triton_kernels``):

* Per-token dynamic activation quantization (one scale per row of the flattened ``[M, K]`` input), after the optional
  smoothing ``x / s`` (SmoothQuant-style channel balancing, y = Q(x/s)·Q(W·s)ᵀ; a division, as the fake-quant
  ``QLinear`` does, so the codes agree bit for bit).
  - symmetric, ``b`` bits: ``scale = max(amax, eps) / (2^(b-1) − 1)``,
    ``q = clamp(round(x / scale), −2^(b-1), 2^(b-1) − 1)``, zero point 0;
  - asymmetric (ViDiT-Q / Q-VDiT convention, min ≤ 0 ≤ max): ``scale = max((max − min) / (2^b − 1), eps)``,
    ``z = round(−min / scale)``, ``u = clamp(round(x / scale) + z, 0, 2^b − 1)``. Stored shifted into int8 as
    ``q = u − 2^(b−1)`` with zero point ``z − 2^(b−1)`` so that ``x̂ = (q − zp) · scale`` either way.
  ``round`` is round-half-to-even (``torch.round``).
* Static per-tensor activation quantization (:func:`quantize_static_ref`; MPQ-DM / EfficientDM / Q-Diffusion): one
  stored ``(Δ, zp)`` — or the row of a per-denoising-step table chosen by the caller — for every token; the codes and
  ``x̂`` are those of the fake-quant ``UniformQuantizer``, shifted into int8 as above.
* GEMM: ``y = ((q − zp) · scale_x) @ (w · scale_w)ᵀ + bias + (t @ upᵀ)`` where ``w`` are signed integer weight codes
  (int8, or int4 stored packed), ``scale_w`` is ``[N]`` (per output channel) or ``[N, K/group]`` (per group), and
  ``t = side_in @ downᵀ`` is the low-rank side branch (rank ≤ 64) computed outside the GEMM.
"""

from __future__ import annotations

import torch

EPS = 1e-8


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range (stored int8 codes) of ``bits``-bit activations; symmetric or offset-shifted asymmetric."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in [2, 8], got {bits!r}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def quantize_per_token_ref(
    x: torch.Tensor, smooth: torch.Tensor | None, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference per-token quantizer. ``x`` is ``[M, K]``; returns int8 codes ``[M, K]``, fp32 scale ``[M]``, int32
    zero point ``[M]`` (all zeros when ``symmetric``) and the int32 row sums of the codes ``[M]`` (used by the GEMM
    epilogue when the weights have zero points)."""
    qmin, qmax = qrange(bits, symmetric)
    xf = x.float()
    if smooth is not None:
        xf = xf / smooth.float()
    if symmetric:
        amax = xf.abs().amax(dim=-1)
        scale = amax.clamp_min(EPS) / qmax
        q = torch.round(xf / scale[:, None]).clamp(qmin, qmax)
        zp = torch.zeros(x.shape[0], dtype=torch.int32, device=x.device)
    else:
        levels = 2**bits - 1
        xmin = xf.amin(dim=-1).clamp_max(0.0)
        xmax = xf.amax(dim=-1).clamp_min(0.0)
        scale = ((xmax - xmin) / levels).clamp_min(EPS)
        z = torch.round(-xmin / scale)
        u = (torch.round(xf / scale[:, None]) + z[:, None]).clamp(0, levels)
        q = u - 2 ** (bits - 1)
        zp = (z - 2 ** (bits - 1)).to(torch.int32)
    q = q.to(torch.int8)
    return q, scale.float(), zp, q.sum(dim=-1, dtype=torch.int32)


def lowrank_on_dequantized_ref(
    q: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, down: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """``t = x̂·downᵀ`` (fp32 ``[M, R]``) with ``x̂ = (q − zp)·scale`` in fp32, the dequantized activations of the
    per-token quantizer (Q-VDiT's side branch on ``x̂``); rows in chunks so the fp32 ``x̂`` is never M×K at once."""
    d = down.float().t()
    out = [((q[i : i + chunk].float() - zp[i : i + chunk, None].float()) * scale[i : i + chunk, None]) @ d
           for i in range(0, q.shape[0], chunk)]  # fmt: skip
    return torch.cat(out) if out else q.new_zeros((0, down.shape[0]), dtype=torch.float32)


def quantize_static_ref(
    x: torch.Tensor, smooth: torch.Tensor | None, scale: torch.Tensor, zero_point: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference static (per-tensor) quantizer with a stored step ``scale`` (fp32 ``[1]``) and zero point
    ``zero_point`` (int32 ``[1]``, already in the signed int8 convention: ``z − 2^(b−1)`` for an asymmetric quantizer
    with unsigned zero point ``z``, 0 for a symmetric one):
    ``q = clamp(round(x / scale) + zero_point, −2^(b−1), 2^(b−1) − 1)`` — the codes of
    ``vqcore.quant.UniformQuantizer`` (``clamp(round(x/Δ) + z, 0, 2^b − 1)``) shifted by ``−2^(b−1)``, so
    ``x̂ = (q − zero_point) · scale`` is the fake-quantized value. ``x``: ``[M, K]``, divided by ``smooth [K]`` first
    (``(x / s) / Δ``, two IEEE divisions in that order, as the fake-quant layer computes them). Returns the same tuple
    as :func:`quantize_per_token_ref` (scale and zero point broadcast to ``[M]``)."""
    qmin, qmax = qrange(bits, True)
    xf = x.float()
    if smooth is not None:
        xf = xf / smooth.float()
    s = scale.float().reshape(1)
    z = zero_point.reshape(1).to(torch.int32)
    q = (torch.round(xf / s) + z.float()).clamp(qmin, qmax).to(torch.int8)
    m = x.shape[0]
    return q, s.expand(m).contiguous(), z.expand(m).contiguous(), q.sum(dim=-1, dtype=torch.int32)


def expand_weight_scale(w_scale: torch.Tensor, group_size: int, k: int) -> torch.Tensor:
    """``[N]`` or ``[N, G]`` weight scales → ``[N, K]`` (per-element scale)."""
    if group_size == 0:
        return w_scale.float().reshape(-1, 1).expand(-1, k)
    return w_scale.float().repeat_interleave(group_size, dim=1)[:, :k]


def dequantize_weight(
    codes: torch.Tensor, w_scale: torch.Tensor, group_size: int, w_zp_scaled: torch.Tensor | None = None
) -> torch.Tensor:
    """Signed integer codes ``[N, K]`` times their scales (minus ``scale·zero_point`` per output channel when the
    weights are asymmetric) → float32 weight."""
    w = codes.float() * expand_weight_scale(w_scale, group_size, codes.shape[1])
    if w_zp_scaled is not None:
        w = w - w_zp_scaled.float()[:, None]
    return w


def int_linear_ref(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    x_zp: torch.Tensor | None,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    group_size: int,
    w_zp_scaled: torch.Tensor | None,
    bias: torch.Tensor | None,
    lr_t: torch.Tensor | None,
    lr_up: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Reference integer linear (unpacked int8 codes ``w_codes [N, K]``; ``w_zp_scaled = scale_w·zero_point_w``
    per output channel for asymmetric per-channel weights). Computed in float32 on the dequantized
    operands — the integer products are exact in float32 while partial sums stay below 2^24 (K ≤ ~1000 at 8 bit);
    beyond that the result differs from exact int32 accumulation by float32 rounding (~1e-7 relative)."""
    xf = xq.float()
    if x_zp is not None:
        xf = xf - x_zp.float()[:, None]
    xf = xf * x_scale.float()[:, None]
    y = xf @ dequantize_weight(w_codes, w_scale, group_size, w_zp_scaled).t()
    if bias is not None:
        y = y + bias.float()
    if lr_t is not None:
        y = y + lr_t.float() @ lr_up.float().t()
    return y.to(out_dtype)


def weight_only_linear_ref(
    x: torch.Tensor, w_codes: torch.Tensor, w_scale: torch.Tensor, group_size: int, bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    """Reference weight-only linear: float activations ``x [M, K]`` times the dequantized weight (fp32)."""
    y = x.float() @ dequantize_weight(w_codes, w_scale, group_size).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def int_matmul_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int32 product ``a [M, K] @ b [N, K]ᵀ`` of integer tensors (float64 accumulation, exact below 2^53)."""
    return (a.double() @ b.double().t()).round().to(torch.int32)

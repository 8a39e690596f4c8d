"""Triton activation quantizers: per-token (dynamic, optionally with Q-VDiT's fused low-rank side branch) and static
per-tensor, with IEEE round-to-nearest divisions and the magic-number round-to-nearest-even (design notes in
:mod:`vqcore.kernels.triton_kernels`)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_MAGIC = 12582912.0  # 1.5 * 2**23


@triton.jit
def _rne(v):
    return (v + 12582912.0) - 12582912.0


@triton.jit
def _round_quotient(x, scale, RECIP: tl.constexpr):
    """``rne(fl(x / scale))`` per row (``scale [ROWS]``), bit-identical to the IEEE quotient's rounding.

    ``RECIP``: one IEEE reciprocal per row and a multiply per element, ``v = x·fl(1/scale)``. With
    ``|x/scale| ≤ 255`` (the quantizers' range), ``|v − x/scale| ≤ 255·2⁻²³(1 + 2⁻²⁴) ≈ 3.04e-5`` and
    ``|fl(x/scale) − x/scale| ≤ 255·2⁻²⁴ ≈ 1.52e-5``, so ``rne(v)`` and ``rne(fl(x/scale))`` can differ only when
    ``v`` lies within 4.6e-5 < 2⁻¹⁴ of a half-integer (whatever the compiler does with the multiply — rounded, or
    fused into the rounding's add: the exact product is within the same bound). A block with any element within
    2⁻¹³ of a half-integer (~1 element in 4k) takes the IEEE divisions instead: the codes equal the reference's in
    every case (test with constructed near-ties)."""
    if RECIP:
        r = tl.math.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale)
        v = x * r[:, None]
        q = _rne(v)
        near = (0.5 - tl.abs(v - q)) < 0.0001220703125  # 2^-13
        if tl.max(tl.max(near.to(tl.int32), axis=1), axis=0) > 0:
            q = _rne(tl.math.div_rn(x, scale[:, None]))
    else:
        q = _rne(tl.math.div_rn(x, scale[:, None]))
    return q


@triton.jit
def _quant_per_token_kernel(
    x_ptr, s_ptr, q_ptr, scale_ptr, zp_ptr, rs_ptr,
    M, K, stride_xm, stride_qm,
    HAS_SMOOTH: tl.constexpr, SYMMETRIC: tl.constexpr, BITS: tl.constexpr, EPS: tl.constexpr,
    BLOCK_K: tl.constexpr, ROWS: tl.constexpr,
    d_ptr=None, t_ptr=None, RANK: tl.constexpr = 0, RECIP: tl.constexpr = False,
):  # fmt: skip
    """``ROWS`` rows per program (each row quantized with its own range; identical arithmetic for any ``ROWS``).
    ``RANK > 0``: also the low-rank side branch on the dequantized row, ``t[m, r] = Σ_k x̂[m, k]·down[r, k]`` with
    ``x̂ = (q − zp)·scale`` in fp32 (``down`` fp32 ``[RANK, K]``, ``t`` fp32 ``[M, RANK]``): Q-VDiT's rank-1 term in
    the quantizer's pass, without an M×K dequantized tensor. ``RECIP``: reciprocal multiplies with an exact
    fallback (:func:`_round_quotient`; same codes)."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    offs = tl.arange(0, BLOCK_K)
    rmask = rows < M
    mask = rmask[:, None] & (offs < K)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_SMOOTH:
        x = tl.math.div_rn(x, tl.load(s_ptr + offs, mask=offs < K, other=1.0).to(tl.float32)[None, :])
    QMIN: tl.constexpr = -(2 ** (BITS - 1))
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    if SYMMETRIC:
        amax = tl.max(tl.abs(x), axis=1)
        scale = tl.math.div_rn(tl.maximum(amax, EPS), QMAX)
        q = _round_quotient(x, scale, RECIP)
        q = tl.minimum(tl.maximum(q, QMIN), QMAX)
        zp = tl.zeros_like(scale)
    else:
        LEVELS: tl.constexpr = 2**BITS - 1
        xmin = tl.minimum(tl.min(tl.where(mask, x, 0.0), axis=1), 0.0)
        xmax = tl.maximum(tl.max(tl.where(mask, x, 0.0), axis=1), 0.0)
        scale = tl.maximum(tl.math.div_rn(xmax - xmin, LEVELS), EPS)
        z = _rne(tl.math.div_rn(-xmin, scale))
        u = tl.minimum(tl.maximum(_round_quotient(x, scale, RECIP) + z[:, None], 0.0), LEVELS)
        q = u + QMIN
        zp = z + QMIN
    tl.store(q_ptr + rows[:, None] * stride_qm + offs[None, :], q.to(tl.int8), mask=mask)
    tl.store(scale_ptr + rows, scale, mask=rmask)
    tl.store(zp_ptr + rows, zp.to(tl.int32), mask=rmask)
    tl.store(rs_ptr + rows, tl.sum(tl.where(mask, q, 0.0), axis=1).to(tl.int32), mask=rmask)
    if RANK > 0:
        xhat = (q - zp[:, None]) * scale[:, None]
        for r in tl.static_range(RANK):
            dr = tl.load(d_ptr + r * K + offs, mask=offs < K, other=0.0)
            tl.store(t_ptr + rows * RANK + r, tl.sum(xhat * dr[None, :], axis=1), mask=rmask)


@triton.jit
def _load_smoothed(x_ptr, s_ptr, rows, rmask, k0, K, stride_xm, HAS_SMOOTH: tl.constexpr, CHUNK_K: tl.constexpr):
    """Columns ``k0 … k0 + CHUNK_K`` of ``rows`` as fp32, divided by the smoothing vector (IEEE ``div_rn``); masked
    lanes hold 0. Returns the column offsets, the mask and the values."""
    offs = k0 + tl.arange(0, CHUNK_K)
    mask = rmask[:, None] & (offs < K)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_SMOOTH:
        x = tl.math.div_rn(x, tl.load(s_ptr + offs, mask=offs < K, other=1.0).to(tl.float32)[None, :])
    return offs, mask, x


@triton.jit
def _quant_per_token_chunked_kernel(
    x_ptr, s_ptr, q_ptr, scale_ptr, zp_ptr, rs_ptr,
    M, K, stride_xm, stride_qm,
    HAS_SMOOTH: tl.constexpr, SYMMETRIC: tl.constexpr, BITS: tl.constexpr, EPS: tl.constexpr,
    CHUNK_K: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """The per-token quantizer over a row in ``CHUNK_K``-wide chunks, in two passes: pass 1 the row's range, pass 2
    the codes. For ``K`` that is not a power of two, :func:`_quant_per_token_kernel`'s single
    ``next_power_of_2(K)`` tile masks up to half its lanes (44 % at K = 1152 and 4608); here only the last chunk is
    partial. Same arithmetic per element and exact reductions (max/min, integer row sums), so the codes, scales, zero
    points and row sums equal the single-tile kernel's; the row is read twice (the second read mostly from L2).
    Opt-in (``config={"CHUNK_K": ...}``) until it is measured faster on the GPU; no low-rank branch, no ``RECIP``."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    rmask = rows < M
    QMIN: tl.constexpr = -(2 ** (BITS - 1))
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    LEVELS: tl.constexpr = 2**BITS - 1
    hi = tl.zeros((ROWS,), dtype=tl.float32)  # amax (symmetric) or max(x, 0)
    lo = tl.zeros((ROWS,), dtype=tl.float32)  # min(x, 0) (asymmetric)
    for k0 in range(0, K, CHUNK_K):
        offs, mask, x = _load_smoothed(x_ptr, s_ptr, rows, rmask, k0, K, stride_xm, HAS_SMOOTH, CHUNK_K)
        if SYMMETRIC:
            hi = tl.maximum(hi, tl.max(tl.abs(x), axis=1))
        else:
            hi = tl.maximum(hi, tl.max(tl.where(mask, x, 0.0), axis=1))
            lo = tl.minimum(lo, tl.min(tl.where(mask, x, 0.0), axis=1))
    if SYMMETRIC:
        scale = tl.math.div_rn(tl.maximum(hi, EPS), QMAX)
        z = tl.zeros_like(scale)
        zp = z
    else:
        scale = tl.maximum(tl.math.div_rn(hi - lo, LEVELS), EPS)
        z = _rne(tl.math.div_rn(-lo, scale))
        zp = z + QMIN
    rs = tl.zeros((ROWS,), dtype=tl.int32)
    for k0 in range(0, K, CHUNK_K):
        offs, mask, x = _load_smoothed(x_ptr, s_ptr, rows, rmask, k0, K, stride_xm, HAS_SMOOTH, CHUNK_K)
        if SYMMETRIC:
            q = tl.minimum(tl.maximum(_rne(tl.math.div_rn(x, scale[:, None])), QMIN), QMAX)
        else:
            q = tl.minimum(tl.maximum(_rne(tl.math.div_rn(x, scale[:, None])) + z[:, None], 0.0), LEVELS) + QMIN
        tl.store(q_ptr + rows[:, None] * stride_qm + offs[None, :], q.to(tl.int8), mask=mask)
        rs += tl.sum(tl.where(mask, q, 0.0).to(tl.int32), axis=1)
    tl.store(scale_ptr + rows, scale, mask=rmask)
    tl.store(zp_ptr + rows, zp.to(tl.int32), mask=rmask)
    tl.store(rs_ptr + rows, rs, mask=rmask)


#: rows per program and warps of the quantizer, by padded row length (``None``: :func:`_quant_launch` default).
QUANT_TILE: dict = {}


def _quant_launch(block_k: int) -> dict:
    if block_k in QUANT_TILE:
        return dict(QUANT_TILE[block_k])
    return {"ROWS": 1, "num_warps": 4 if block_k <= 2048 else (8 if block_k <= 8192 else 16)}


def _quant_outputs(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Row-contiguous ``x [M, K]`` and the quantizers' outputs: int8 codes ``[M, K]``, fp32 scales, int32 zero points
    and int32 code row sums ``[M]``."""
    if x.stride(1) != 1:
        x = x.contiguous()
    m, k = x.shape
    dev = x.device
    return (x, torch.empty((m, k), dtype=torch.int8, device=dev), torch.empty((m,), dtype=torch.float32, device=dev),
            torch.empty((m,), dtype=torch.int32, device=dev), torch.empty((m,), dtype=torch.int32, device=dev))


def quantize_per_token(
    x: torch.Tensor, smooth: torch.Tensor | None, bits: int, symmetric: bool, config: dict | None = None,
    down: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Triton per-token quantizer on a 2-D ``x [M, K]`` (contiguous rows). Same contract as the reference.
    ``config`` (``ROWS``, ``num_warps``) overrides the launch table. With ``down`` (fp32 ``[R, K]``, contiguous) a
    fifth output ``t = x̂·downᵀ`` (fp32 ``[M, R]``) is computed in the same pass."""
    from .reference import EPS

    m, k = x.shape
    block_k = triton.next_power_of_2(k)
    if block_k > 32768:
        raise ValueError(f"per-token quantization kernel supports K <= 32768, got {k}")
    x, q, scale, zp, rs = _quant_outputs(x)
    rank = 0 if down is None else down.shape[0]
    t = torch.empty((m, rank), dtype=torch.float32, device=x.device) if rank else None
    if m == 0:
        return (q, scale, zp, rs) + ((t,) if rank else ())
    launch = _quant_launch(block_k)
    launch.update(config or {})
    rows = launch.pop("ROWS")
    inv = smooth if smooth is not None else scale  # dummy pointer when absent
    chunk_k = launch.pop("CHUNK_K", None)
    if chunk_k:  # opt-in two-pass chunked row loop (same outputs); the low-rank branch stays on the one-tile kernel
        if rank or launch.pop("RECIP", False):
            raise ValueError("CHUNK_K: the chunked quantizer has no low-rank branch and no RECIP option")
        _quant_per_token_chunked_kernel[(triton.cdiv(m, rows),)](
            x, inv, q, scale, zp, rs, m, k, x.stride(0), q.stride(0),
            HAS_SMOOTH=smooth is not None, SYMMETRIC=bool(symmetric), BITS=int(bits), EPS=EPS,
            CHUNK_K=int(chunk_k), ROWS=rows, **launch,
        )  # fmt: skip
        return q, scale, zp, rs
    extra = {"d_ptr": down, "t_ptr": t, "RANK": rank} if rank else {}
    _quant_per_token_kernel[(triton.cdiv(m, rows),)](
        x, inv, q, scale, zp, rs, m, k, x.stride(0), q.stride(0),
        HAS_SMOOTH=smooth is not None, SYMMETRIC=bool(symmetric), BITS=int(bits), EPS=EPS,
        BLOCK_K=block_k, ROWS=rows, **extra, **launch,
    )  # fmt: skip
    return (q, scale, zp, rs) + ((t,) if rank else ())


@triton.jit
def _quant_static_kernel(
    x_ptr, s_ptr, sc_ptr, z_ptr, q_ptr, scale_ptr, zp_ptr, rs_ptr,
    M, K, stride_xm, stride_qm,
    HAS_SMOOTH: tl.constexpr, BITS: tl.constexpr, BLOCK_K: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """Static per-tensor quantization: ``q = clamp(rne((x / s) / Δ) + zp, −2^(b−1), 2^(b−1) − 1)`` with the stored
    ``Δ = sc_ptr[0]`` and signed ``zp = z_ptr[0]`` (read on the device: no host sync, any row of a step table).
    ``ROWS`` rows per program; the K loop walks ``BLOCK_K`` columns at a time (no limit on K), summing the codes."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    rmask = rows < M
    sc = tl.load(sc_ptr)
    zp = tl.load(z_ptr).to(tl.float32)
    QMIN: tl.constexpr = -(2 ** (BITS - 1))
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    rs = tl.zeros((ROWS,), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        mask = rmask[:, None] & (offs < K)[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_xm + offs[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            x = tl.math.div_rn(x, tl.load(s_ptr + offs, mask=offs < K, other=1.0).to(tl.float32)[None, :])
        q = tl.minimum(tl.maximum(_rne(tl.math.div_rn(x, sc)) + zp, QMIN), QMAX)
        tl.store(q_ptr + rows[:, None] * stride_qm + offs[None, :], q.to(tl.int8), mask=mask)
        rs += tl.sum(tl.where(mask, q, 0.0).to(tl.int32), axis=1)
    tl.store(scale_ptr + rows, tl.zeros((ROWS,), dtype=tl.float32) + sc, mask=rmask)
    tl.store(zp_ptr + rows, (tl.zeros((ROWS,), dtype=tl.float32) + zp).to(tl.int32), mask=rmask)
    tl.store(rs_ptr + rows, rs, mask=rmask)


def quantize_static(
    x: torch.Tensor, smooth: torch.Tensor | None, scale: torch.Tensor, zero_point: torch.Tensor, bits: int,
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton static quantizer on ``x [M, K]`` with a stored ``scale`` (fp32, 1 element) and signed ``zero_point``
    (int32, 1 element); same contract as :func:`vqcore.kernels.reference.quantize_static_ref`. ``config``:
    ``ROWS``, ``BLOCK_K``, ``num_warps``."""
    m, k = x.shape
    x, q, sc, zp, rs = _quant_outputs(x)
    if m == 0:
        return q, sc, zp, rs
    launch = {"ROWS": 4 if k <= 1024 else 1, "BLOCK_K": min(triton.next_power_of_2(max(k, 16)), 1024), "num_warps": 4}
    launch.update(config or {})
    rows = launch.pop("ROWS")
    s_in = scale.reshape(1).float().contiguous()
    z_in = zero_point.reshape(1).to(torch.int32).contiguous()
    _quant_static_kernel[(triton.cdiv(m, rows),)](
        x, smooth if smooth is not None else s_in, s_in, z_in, q, sc, zp, rs, m, k, x.stride(0), q.stride(0),
        HAS_SMOOTH=smooth is not None, BITS=int(bits), ROWS=rows, **launch,
    )  # fmt: skip
    return q, sc, zp, rs

"""Triton kernels: per-token (dynamic) and static per-tensor activation quantization, and the int8×int8 /
int4(packed)×int8 GEMM.

Imported lazily (only by the CUDA implementations of the custom ops, the benchmarks and the tests): importing this
module imports ``triton``. With ``TRITON_INTERPRET=1`` set *before* this module is first imported, the kernels run in
Triton's CPU interpreter on CPU tensors (that is how the CPU test-suite checks them); the autotuner is then bypassed and
small fixed tiles are used.

Numerics are those of :mod:`vqcore.kernels.reference` (read its docstring). Design notes:

* GEMM operands: activations ``A`` int8 ``[M, K]`` row-major, weights int8 ``[N, K]`` (K-major — the layout Hopper's
  int8 ``wgmma`` wants for both operands), or int4 packed two per byte with the chunked layout of
  :mod:`vqcore.kernels.packing`, unpacked in registers (``(p << 4) >> 4`` and ``p >> 4``, arithmetic shifts) into two
  contiguous K-slices, each multiplied with its own contiguous activation slice. Hopper has no 4-bit MMA, so W4A8 runs
  on the int8 tensor cores; its gain over W8A8 is only the halved weight traffic/memory.
* The K loop walks chunks of 128 (``CHUNK``); int32 accumulation is exact. Per-channel weight scales are applied once in
  the epilogue; per-group scales (``group_size`` a multiple of 64 for int4, of 128 for int8) are applied per K-slice to
  a float32 accumulator.
* Epilogue: ``y = scale_x[m] · (acc·scale_w[n] − zp_x[m]·wsum[n]) + bias[n] + (t @ upᵀ)[m, n]``, cast to the output
  dtype. ``wsum[n] = Σ_k w[n,k]·scale_w[n,k]`` is precomputed at conversion time (only needed for asymmetric
  activations). The low-rank side branch's up-projection is a second small ``tl.dot`` (rank padded to 16..64) fused
  into the epilogue; its down-projection ``t = x·downᵀ`` is a thin GEMM done outside.
* Divisions in the quantizer are IEEE round-to-nearest (``tl.math.div_rn``, not Triton's default approximate fp32
  division), so the GPU codes equal those of PyTorch bit for bit.
* Besides this pointer-based GEMM (the default below 4096 tokens) there is a persistent TMA GEMM
  (``_int_gemm_tma_kernel``) and a W4 → int8 unpack kernel for an unpack-then-int8-GEMM path; both are the default
  at M ≥ 4096, where an H100 measured them faster (:data:`POLICY`).
* Rounding to nearest-even in the quantizer uses the float32 magic-number trick ``(v + 1.5·2^23) − 1.5·2^23``
  (valid for ``|v| < 2^22``; here ``|v| ≤ 255``), which behaves identically on the GPU and in the interpreter.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
CHUNK = 128
_SM90_SHARED = 232448  # bytes of shared memory one sm_90 block can use (227 KiB)
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


@triton.jit
def _mma(a, w, acc, SWAP: tl.constexpr):
    if SWAP:
        return tl.dot(w, a, acc, out_dtype=tl.int32)
    else:
        return tl.dot(a, w, acc, out_dtype=tl.int32)


@triton.jit
def _bcast_n(v, SWAP: tl.constexpr):
    """Broadcast a per-output-channel vector over the accumulator tile."""
    if SWAP:
        return v[:, None]
    else:
        return v[None, :]


@triton.jit
def _int_gemm_kernel(
    a_ptr, sx_ptr, zx_ptr, rs_ptr, b_ptr, sw_ptr, wsum_ptr, wzp_ptr, bias_ptr, t_ptr, up_ptr, c_ptr,
    M, N, K, R, G,
    stride_am, stride_bn, stride_tm, stride_upn, stride_cm,
    W4: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZP: tl.constexpr, HAS_WZP: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_LR: tl.constexpr, RP: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr, SWAP: tl.constexpr,
):  # fmt: skip
    CH: tl.constexpr = 128
    HALF: tl.constexpr = 64
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = (offs_m % M).to(tl.int64)  # wrapped row/col indices for loads: no masks in the inner loop
    rn = (offs_n % N).to(tl.int64)

    # SWAP computes the transposed tile yᵀ = W·xᵀ ([BLOCK_N, BLOCK_M]): the (unpacked) weights become the left operand,
    # which Hopper's wgmma can read from registers, while the activations stream through shared memory. The autotuner
    # picks the orientation per shape.
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
        facc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        facc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_chunks = tl.cdiv(K, CH)
    KW: tl.constexpr = HALF if W4 else CH  # K-width of one activation slice / one dot
    offs_k = tl.arange(0, KW)
    if SWAP:
        a_ptrs = a_ptr + rm[None, :] * stride_am + offs_k[:, None]  # [KW, BLOCK_M] view of x
        b_ptrs = b_ptr + rn[:, None] * stride_bn + offs_k[None, :]  # [BLOCK_N, KW] weight rows (bytes)
    else:
        a_ptrs = a_ptr + rm[:, None] * stride_am + offs_k[None, :]  # [BLOCK_M, KW]
        b_ptrs = b_ptr + rn[None, :] * stride_bn + offs_k[:, None]  # [KW, BLOCK_N]
    for kc in range(0, n_chunks):
        k0 = kc * CH
        if EVEN_K:
            a0 = tl.load(a_ptrs)
            if W4:
                a1 = tl.load(a_ptrs + HALF)
        else:
            kk = k0 + offs_k
            if SWAP:
                a0 = tl.load(a_ptrs, mask=kk[:, None] < K, other=0)
                if W4:
                    a1 = tl.load(a_ptrs + HALF, mask=(kk + HALF)[:, None] < K, other=0)
            else:
                a0 = tl.load(a_ptrs, mask=kk[None, :] < K, other=0)
                if W4:
                    a1 = tl.load(a_ptrs + HALF, mask=(kk + HALF)[None, :] < K, other=0)
        if W4:
            p = tl.load(b_ptrs)  # packed rows are zero-padded to a multiple of CH: no mask
            w0 = (p << 4) >> 4
            w1 = p >> 4
        elif EVEN_K:
            w0 = tl.load(b_ptrs)
        elif SWAP:
            w0 = tl.load(b_ptrs, mask=(k0 + offs_k)[None, :] < K, other=0)
        else:
            w0 = tl.load(b_ptrs, mask=(k0 + offs_k)[:, None] < K, other=0)
        if GROUP_SIZE > 0:
            d0 = _mma(a0, w0, tl.zeros_like(acc), SWAP)
            s0 = tl.load(sw_ptr + rn * G + k0 // GROUP_SIZE)
            if W4:
                if GROUP_SIZE % CH == 0:  # both halves in one group: one int32 sum, one scale
                    d0 = _mma(a1, w1, d0, SWAP)
                else:
                    d1 = _mma(a1, w1, tl.zeros_like(acc), SWAP)
                    g1 = (k0 + HALF) // GROUP_SIZE
                    s1 = tl.load(sw_ptr + rn * G + g1, mask=(rn * 0 + g1) < G, other=0.0)
                    facc += d1.to(tl.float32) * _bcast_n(s1, SWAP)
            facc += d0.to(tl.float32) * _bcast_n(s0, SWAP)
        else:
            acc = _mma(a0, w0, acc, SWAP)
            if W4:
                acc = _mma(a1, w1, acc, SWAP)
        a_ptrs += CH
        b_ptrs += CH // 2 if W4 else CH

    # ---- epilogue (in [BLOCK_M, BLOCK_N] orientation) ----
    if GROUP_SIZE > 0:
        y = facc
    else:
        y = acc.to(tl.float32)
    if SWAP:
        y = tl.trans(y)
    _epilogue(
        y, offs_m, offs_n, M, N, sx_ptr, zx_ptr, rs_ptr, sw_ptr, wsum_ptr, wzp_ptr, bias_ptr, t_ptr, up_ptr, c_ptr,
        R, stride_tm, stride_upn, stride_cm, GROUP_SIZE == 0, HAS_ZP, HAS_WZP, HAS_BIAS, HAS_LR, RP,
    )  # fmt: skip


@triton.jit
def _epilogue(
    y, offs_m, offs_n, M, N, sx_ptr, zx_ptr, rs_ptr, sw_ptr, wsum_ptr, wzp_ptr, bias_ptr, t_ptr, up_ptr, c_ptr,
    R, stride_tm, stride_upn, stride_cm,
    PER_CHANNEL: tl.constexpr, HAS_ZP: tl.constexpr, HAS_WZP: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_LR: tl.constexpr, RP: tl.constexpr, STORE: tl.constexpr = True,
):  # fmt: skip
    """``y [BLOCK_M, BLOCK_N]`` (fp32 integer sums, already per-group scaled when not PER_CHANNEL) → scales, zero-point
    terms, bias, low-rank term, then (``STORE``) cast and masked pointer store; returns the float tile."""
    rm = (offs_m % M).to(tl.int64)
    rn = (offs_n % N).to(tl.int64)
    if PER_CHANNEL:
        sw = tl.load(sw_ptr + rn)
        y = y * sw[None, :]
    if HAS_ZP:
        zx = tl.load(zx_ptr + rm).to(tl.float32)
        ws = tl.load(wsum_ptr + rn)
        y = y - zx[:, None] * ws[None, :]
    if HAS_WZP:
        rsum = tl.load(rs_ptr + rm).to(tl.float32)
        wz = tl.load(wzp_ptr + rn)
        y = y - rsum[:, None] * wz[None, :]
    sx = tl.load(sx_ptr + rm)
    y = y * sx[:, None]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    if HAS_LR:
        offs_r = tl.arange(0, RP)
        t = tl.load(t_ptr + rm[:, None] * stride_tm + offs_r[None, :], mask=offs_r[None, :] < R, other=0.0)
        u = tl.load(up_ptr + rn[None, :] * stride_upn + offs_r[:, None], mask=offs_r[:, None] < R, other=0.0)
        if t.dtype == tl.float32:  # fp32 model: full-precision dot (the default would be tf32 on the GPU)
            y = y + tl.dot(t, u, input_precision="ieee", out_dtype=tl.float32)
        else:
            y = y + tl.dot(t, u, out_dtype=tl.float32)
    if STORE:
        c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
        c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tl.store(c_ptrs, y.to(c_ptr.dtype.element_ty), mask=c_mask)
    return y


@triton.jit
def _int_gemm_tma_kernel(
    a_desc, b_desc, c_desc, sx_ptr, zx_ptr, rs_ptr, sw_ptr, wsum_ptr, wzp_ptr, bias_ptr, t_ptr, up_ptr, c_ptr,
    M, N, K, R, G, stride_tm, stride_upn, stride_cm, NUM_PROGRAMS,
    HAS_ZP: tl.constexpr, HAS_WZP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LR: tl.constexpr, RP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    FLATTEN: tl.constexpr = False, STORE_DESC: tl.constexpr = False, GROUP_SIZE: tl.constexpr = 0,
    PAIR: tl.constexpr = False, WS: tl.constexpr = False,
):  # fmt: skip
    """Persistent int8×int8 GEMM (per-channel weight scales) with TMA tile loads (host-side tensor descriptors: the
    copy engine computes addresses and zero-fills the M/N/K tails, so the K loop has no masks and no pointer
    arithmetic). ``NUM_PROGRAMS`` programs (≤ the SM count) walk the output tiles in grouped order (``GROUP_M`` row
    tiles per group: an L2-friendly order); each tile runs the software-pipelined K loop, then the shared epilogue.
    ``FLATTEN`` lets Triton's pipeliner flatten the tile and K loops into one (loads of the next tile overlap the
    epilogue of this one); ``STORE_DESC`` writes the output tile with a TMA store (``c_desc``) instead of masked
    pointer stores. ``GROUP_SIZE > 0`` (a multiple of ``BLOCK_K``): per-group weight scales ``sw [N, G]``, each K
    tile's exact int32 product is rescaled into a float32 accumulator; ``PAIR`` issues the two MMAs of two K tiles
    before rescaling either (so the second runs while the first is rescaled). ``WS``: Triton's automatic warp
    specialisation of the tile loop (producer warps issue the TMA loads, consumer warpgroups the MMAs; opt-in, a
    benchmark variant)."""
    start = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_tiles = num_pid_m * num_pid_n
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_pid_in_group = GROUP_M * num_pid_n
    tile_c = start - NUM_PROGRAMS  # a separate counter for the epilogue (keeps prologue and epilogue independent)
    for tile in tl.range(start, num_tiles, NUM_PROGRAMS, flatten=FLATTEN, warp_specialize=WS):
        pid_m, pid_n = _tile_coords(tile, num_pid_in_group, num_pid_m, GROUP_M)
        om = pid_m * BLOCK_M
        on = pid_n * BLOCK_N
        if GROUP_SIZE == 0:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
            for ki in range(0, k_tiles):
                a = a_desc.load([om, ki * BLOCK_K])
                b = b_desc.load([on, ki * BLOCK_K])
                acc = tl.dot(a, tl.trans(b), acc, out_dtype=tl.int32)
            y = acc.to(tl.float32)
        else:
            srow = sw_ptr + ((on + tl.arange(0, BLOCK_N)) % N).to(tl.int64) * G
            facc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            if PAIR:
                for ki in range(0, k_tiles, 2):
                    a0 = a_desc.load([om, ki * BLOCK_K])
                    b0 = b_desc.load([on, ki * BLOCK_K])
                    a1 = a_desc.load([om, (ki + 1) * BLOCK_K])  # past K: zero-filled by the copy engine
                    b1 = b_desc.load([on, (ki + 1) * BLOCK_K])
                    d0 = tl.dot(a0, tl.trans(b0), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32), out_dtype=tl.int32)
                    d1 = tl.dot(a1, tl.trans(b1), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32), out_dtype=tl.int32)
                    s0 = tl.load(srow + (ki * BLOCK_K) // GROUP_SIZE)
                    g1 = ((ki + 1) * BLOCK_K) // GROUP_SIZE
                    s1 = tl.load(srow + g1, mask=g1 < G, other=0.0)
                    facc += d0.to(tl.float32) * s0[None, :] + d1.to(tl.float32) * s1[None, :]
            else:
                for ki in range(0, k_tiles):
                    a = a_desc.load([om, ki * BLOCK_K])
                    b = b_desc.load([on, ki * BLOCK_K])
                    d = tl.dot(a, tl.trans(b), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32), out_dtype=tl.int32)
                    facc += d.to(tl.float32) * tl.load(srow + (ki * BLOCK_K) // GROUP_SIZE)[None, :]
            y = facc
        tile_c += NUM_PROGRAMS
        pid_m, pid_n = _tile_coords(tile_c, num_pid_in_group, num_pid_m, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        y = _epilogue(
            y, offs_m, offs_n, M, N, sx_ptr, zx_ptr, rs_ptr, sw_ptr, wsum_ptr, wzp_ptr, bias_ptr,
            t_ptr, up_ptr, c_ptr, R, stride_tm, stride_upn, stride_cm, GROUP_SIZE == 0, HAS_ZP, HAS_WZP, HAS_BIAS,
            HAS_LR, RP, not STORE_DESC,
        )  # fmt: skip
        if STORE_DESC:
            c_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], y.to(c_ptr.dtype.element_ty))


@triton.jit
def _tile_coords(tile, num_pid_in_group, num_pid_m, GROUP_M: tl.constexpr):
    """Grouped ("super-tile") order of output tiles: GROUP_M row tiles sweep all column tiles before moving on."""
    group_id = tile // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((tile % num_pid_in_group) % group_size_m)
    pid_n = (tile % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _unpack_int4_kernel(p_ptr, w_ptr, N, stride_pn, stride_wn, BLOCK_R: tl.constexpr):
    """Packed int4 ``[N, Kp/2]`` → int8 codes ``[N, Kp]``; program (i, c) unpacks chunk ``c`` of ``BLOCK_R`` rows."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1)
    j = tl.arange(0, 64)
    rmask = (rows < N)[:, None]
    r64 = rows.to(tl.int64)[:, None]
    p = tl.load(p_ptr + r64 * stride_pn + c * 64 + j[None, :], mask=rmask, other=0)
    base = w_ptr + r64 * stride_wn + c * 128 + j[None, :]
    tl.store(base, (p << 4) >> 4, mask=rmask)
    tl.store(base + 64, p >> 4, mask=rmask)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Triton unpack of the chunked int4 layout: int8 ``[N, Kp/2]`` → int8 ``[N, Kp]`` (zero codes in the K padding).
    W4A8 at large M runs as this (one pass over the packed weights, ~N·K·1.5 bytes of traffic) + the int8 GEMM: the
    GEMM is compute-bound there and Hopper has no 4-bit MMA, so unpacking inside the K loop only costs issue slots."""
    n, kh = packed.shape
    out = torch.empty((n, 2 * kh), dtype=torch.int8, device=packed.device)
    if n:
        br = 32
        _unpack_int4_kernel[(triton.cdiv(n, br), kh // 64)](packed, out, n, packed.stride(0), out.stride(0),
                                                            BLOCK_R=br, num_warps=4)  # fmt: skip
    return out


_BIG = [(0, 128, 256, 8, 3), (0, 128, 256, 8, 4), (0, 256, 128, 8, 3), (1, 128, 256, 8, 3), (1, 256, 128, 8, 3),
        (1, 128, 256, 8, 4)]  # fmt: skip
_SMALL = [(0, 128, 128, 4, 4), (0, 64, 64, 4, 4), (0, 64, 128, 4, 4), (1, 128, 128, 4, 4), (1, 64, 128, 4, 4)]
_LARGE_M = 4096


def _hopper_configs() -> list:
    """Autotune space for H100/H200 (sm_90) of the pointer-based kernel (``VQCORE_AUTOTUNE=1``). The K tile is fixed
    to the 128-wide packing chunk; both operand orientations are in the space (SWAP=1: weights as the left wgmma
    operand). Large-M problems (≥ 4096 rows) try only the large tiles, small-M problems only the small ones."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": 8, "SWAP": swap}, num_warps=warps, num_stages=stages)
        for swap, bm, bn, warps, stages in _BIG + _SMALL
    ]


def _prune(configs, named_args, **kwargs):
    big = named_args["M"] >= _LARGE_M
    keep = [c for c in configs if (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] >= 128 * 256) == big]
    return keep or configs


def _fast_bench(kernel_call, quantiles):
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


_KEYS = ["M", "N", "K", "W4", "GROUP_SIZE", "HAS_ZP", "HAS_WZP", "HAS_BIAS", "HAS_LR"]
_TUNED = {}


def _int_gemm_tuned():
    if "k" not in _TUNED:
        _TUNED["k"] = triton.autotune(
            configs=_hopper_configs(), key=_KEYS, prune_configs_by={"early_config_prune": _prune},
            do_bench=_fast_bench,
        )(_int_gemm_kernel)  # fmt: skip
    return _TUNED["k"]


_INTERP_TILE = {"BLOCK_M": 16, "BLOCK_N": 32, "GROUP_M": 2, "SWAP": 0}
_INTERP_TMA = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "PROGRAMS": 3}

#: Dispatch policy of :func:`int_linear` (module-level so the benchmark can compare paths in one process). The defaults
#: are the paths measured fastest on an H100 (2026-12-07, docs/kernels.md): at M ≥ 4096 the persistent TMA kernel
#: (W8A8 GEMM 1.60× bf16 median over the six video-DiT shapes, vs 1.31× for the autotuned pointer kernel) and W4
#: weights unpacked to a transient int8 copy first (W4A8 1.61× vs 0.84× with the unpack inside the K loop; per-group
#: g128 0.75× vs 0.42×); below 4096 tokens (not measured with TMA) the autotuned pointer kernel.
#: ``tma`` (``VQCORE_TMA=0`` turns it off) and ``tma_min_m`` (``VQCORE_TMA_MIN_M``, 4096) — per-channel int8 GEMMs
#: with M ≥ tma_min_m use the persistent TMA kernel on sm_90+ when K % 16 == 0;
#: ``tma_group`` (``VQCORE_TMA_GROUP=0`` turns it off) — per-group int8 GEMMs (groups of a multiple of 128) too;
#: ``w4_unpack_min_m`` (``VQCORE_W4_UNPACK_MIN_M``, 4096) — W4 weights (per channel or groups of a multiple of 128)
#: are unpacked to a transient int8 copy and run through the int8 GEMM when M ≥ this;
#: ``autotune`` (``VQCORE_AUTOTUNE=0`` turns it off) — autotune the pointer kernel over :func:`_hopper_configs`
#: instead of using the fixed table ``PTR_TILES``.
POLICY = {
    "tma": os.environ.get("VQCORE_TMA", "1") == "1",
    "tma_min_m": int(os.environ.get("VQCORE_TMA_MIN_M", "4096")),
    "w4_unpack_min_m": int(os.environ.get("VQCORE_W4_UNPACK_MIN_M", "4096")),
    "autotune": os.environ.get("VQCORE_AUTOTUNE", "1") == "1",
    "tma_group": os.environ.get("VQCORE_TMA_GROUP", "1") == "1",
}
#: Fixed TMA tiles by M class (``large``: M ≥ 4096 — the best tiles of the H100 run: 128×256, 3 stages, flattened
#: tile/K loop and TMA store, 0.472 / 0.451 ms on CogVideoX fc1 / fc2 vs 0.516 / 0.481 ms for the former 4-stage
#: entry; ``group``: 128×128, 4 stages, no PAIR — 0.96–1.13 ms on the g128 shapes where PAIR took 1.94–1.99 ms).
TMA_TILES = {
    "large": {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 3,
              "FLATTEN": True, "STORE_DESC": True},  # fmt: skip
    "small": {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 4},
    "tiny": {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
    "group": {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 4,
              "PAIR": False},  # fmt: skip
}
PTR_TILES = {
    ("large", False, 0): {"BLOCK_M": 128, "BLOCK_N": 256, "SWAP": 0, "num_warps": 8, "num_stages": 4},
    ("large", True, 0): {"BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8, "num_stages": 3},
    ("large", False, 1): {"BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8, "num_stages": 3},
    ("large", True, 1): {"BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8, "num_stages": 3},
    ("small", False, 0): {"BLOCK_M": 64, "BLOCK_N": 128, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("small", True, 0): {"BLOCK_M": 128, "BLOCK_N": 128, "SWAP": 1, "num_warps": 4, "num_stages": 4},
    ("small", False, 1): {"BLOCK_M": 64, "BLOCK_N": 128, "SWAP": 1, "num_warps": 4, "num_stages": 4},
    ("small", True, 1): {"BLOCK_M": 64, "BLOCK_N": 128, "SWAP": 1, "num_warps": 4, "num_stages": 4},
    ("tiny", False, 0): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("tiny", True, 0): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("tiny", False, 1): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("tiny", True, 1): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
}


def _size_class(m: int) -> str:
    return "large" if m >= _LARGE_M else ("small" if m > 128 else "tiny")


_SMS: dict = {}


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


def _tma_shared_bytes(stages: int, bm: int, bn: int, bk: int, out_bytes: int, rp: int, has_lr: bool, tile: dict) -> int:
    """Estimate (from above) of the TMA kernel's shared memory, fitted to what Triton 3.8 allocates for sm_90 (read
    off the ahead-of-time compile check's table): the K pipeline ``stages · (BM + BN) · BK`` int8 bytes (twice that
    with ``PAIR``); with ``STORE_DESC`` and/or ``FLATTEN`` one ``BM × BN`` output tile (the TMA store's staging buffer,
    or the epilogue's layout conversion kept live beside the next tile's loads: one buffer serves both); with both
    and a low-rank branch its ``t``/``up`` tiles too; plus 2 KiB for barriers."""
    store, flat = bool(tile.get("STORE_DESC")), bool(tile.get("FLATTEN"))
    size = stages * (bm + bn) * bk * (2 if tile.get("PAIR") else 1) + 2048
    if store or flat:
        size += bm * bn * out_bytes
    if store and flat and has_lr:
        size += (bm + bn) * rp * 4
    return size


def _tma_fit(stages: int, bm: int, bn: int, bk: int, out_bytes: int, rp: int, has_lr: bool, tile: dict) -> int:
    """Pipeline depth for a :data:`TMA_TILES` entry (whose ``num_stages`` the caller did not set), so the launch fits
    an sm_90 block's 227 KiB of shared memory: the table's stages, lowered to no fewer than 2; if 2 stages still do not
    fit, the scheduling hints ``FLATTEN``, then ``STORE_DESC``, are turned off (``tile`` is updated; the results are
    the same either way). Without this the large tile's 4 stages with ``STORE_DESC`` need 256 KiB and fail at launch
    (``OutOfResources``), which ``tools/vqcore_kernels_compile_check.py`` found; the default flags keep the table."""
    start = stages
    for hint in (None, "FLATTEN", "STORE_DESC"):
        if hint:
            tile[hint] = False
        stages = start
        while stages > 2 and _tma_shared_bytes(stages, bm, bn, bk, out_bytes, rp, has_lr, tile) > _SM90_SHARED:
            stages -= 1
        if _tma_shared_bytes(stages, bm, bn, bk, out_bytes, rp, has_lr, tile) <= _SM90_SHARED:
            break
    return stages


def _tma_ok(xq: torch.Tensor, w: torch.Tensor, k: int) -> bool:
    if k % 16 or w.stride(0) % 16 or xq.stride(0) % 16 or xq.data_ptr() % 16 or w.data_ptr() % 16:
        return False
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401
    except ImportError:
        return False
    return INTERPRET or (xq.is_cuda and torch.cuda.get_device_capability(xq.device)[0] >= 9)


def int_linear(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    x_zp: torch.Tensor | None,
    x_rowsum: torch.Tensor | None,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    group_size: int,
    w4: bool,
    k: int,
    w_sum: torch.Tensor | None,
    w_zp: torch.Tensor | None,
    bias: torch.Tensor | None,
    lr_t: torch.Tensor | None,
    lr_up: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: dict | None = None,
) -> torch.Tensor:
    """Launch the integer GEMM. ``w`` is int8 ``[N, K]`` (``w4=False``) or packed int4 ``[N, padded_k(K)/2]``.

    Paths (see :data:`POLICY`): W4 with M ≥ ``w4_unpack_min_m`` → :func:`unpack_int4` + int8 GEMM; per-channel int8
    GEMMs → the persistent TMA kernel (sm_90+, K % 16 == 0) or the pointer kernel; per-group → the pointer kernel.
    ``config`` overrides the choice: keys ``PATH`` (``"tma"``/``"ptr"``), ``UNPACK`` (bool) and the tile parameters
    of that kernel (``BLOCK_M``, ``BLOCK_N``, ``GROUP_M``, ``SWAP`` / ``BLOCK_K``, ``PROGRAMS``; optional
    ``num_warps``/``num_stages``)."""
    m = xq.shape[0]
    n = w.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=xq.device)
    if m == 0 or n == 0:
        return out
    if xq.stride(1) != 1:
        xq = xq.contiguous()
    if w.stride(1) != 1:
        w = w.contiguous()
    cfg = dict(config or {})
    path = cfg.pop("PATH", None)
    unpack = cfg.pop("UNPACK", None)
    if unpack is None:
        unpack = m >= POLICY["w4_unpack_min_m"] and not INTERPRET
    if w4 and unpack and group_size % CHUNK == 0:
        w, w4 = unpack_int4(w), False  # [N, padded K] int8, zero codes in the padding
    g = w_scale.shape[1] if group_size > 0 else 1
    w_scale = w_scale.contiguous().float()
    has_lr = lr_t is not None
    r = lr_t.shape[1] if has_lr else 0
    rp = max(16, triton.next_power_of_2(r)) if has_lr else 16
    if has_lr:
        lr_t = lr_t.contiguous()
        lr_up = lr_up.contiguous()
    dummy = x_scale
    tail = (
        x_scale, x_zp if x_zp is not None else dummy, x_rowsum if w_zp is not None else dummy, w_scale,
        w_sum if w_sum is not None else dummy, w_zp if w_zp is not None else dummy,
        bias if bias is not None else dummy, lr_t if has_lr else dummy, lr_up if has_lr else dummy, out,
    )  # fmt: skip
    strides_lr = (lr_t.stride(0) if has_lr else 0, lr_up.stride(0) if has_lr else 0)
    flags = {"HAS_ZP": x_zp is not None, "HAS_WZP": w_zp is not None, "HAS_BIAS": bias is not None, "HAS_LR": has_lr,
             "RP": rp}  # fmt: skip
    if path is None:
        use_tma = POLICY["tma"] and m >= POLICY["tma_min_m"] and not INTERPRET
        grouped_ok = group_size == 0 or (POLICY["tma_group"] and group_size % CHUNK == 0)
        path = "tma" if use_tma and not w4 and grouped_ok and _tma_ok(xq, w, k) else "ptr"
    size = _size_class(m)
    if path == "tma":
        from triton.tools.tensor_descriptor import TensorDescriptor

        if w4:
            raise ValueError("the TMA kernel runs int8 weights only (W4: unpack first, UNPACK=True)")
        tile = dict(_INTERP_TMA if INTERPRET else TMA_TILES[size if not group_size else "group"])
        if "num_stages" in cfg:  # an explicit pipeline depth is an explicit tile: the table's hints do not apply
            for hint in ("FLATTEN", "STORE_DESC", "PAIR"):
                tile.pop(hint, None)
        tile.update(cfg)
        if group_size % tile["BLOCK_K"]:
            raise ValueError(f"the TMA kernel needs group_size % BLOCK_K == 0, got {group_size} and {tile['BLOCK_K']}")
        tile["GROUP_SIZE"] = int(group_size)
        launch = {kk: tile.pop(kk) for kk in ("num_warps", "num_stages") if kk in tile}
        bm, bn, bk = tile["BLOCK_M"], tile["BLOCK_N"], tile["BLOCK_K"]
        programs = tile.pop("PROGRAMS", None) or _num_sms(xq.device)
        programs = max(1, min(programs, triton.cdiv(m, bm) * triton.cdiv(n, bn)))
        a_desc = TensorDescriptor(xq, shape=[m, k], strides=[xq.stride(0), 1], block_shape=[bm, bk])
        b_desc = TensorDescriptor(w, shape=[n, k], strides=[w.stride(0), 1], block_shape=[bn, bk])
        if tile.get("STORE_DESC") and (out.stride(0) * out.element_size()) % 16:
            tile["STORE_DESC"] = False  # TMA stores need 16-byte row strides
        if "num_stages" in launch and "num_stages" not in cfg:
            launch["num_stages"] = _tma_fit(launch["num_stages"], bm, bn, bk, out.element_size(), rp, has_lr, tile)
        c_desc = TensorDescriptor(out, shape=[m, n], strides=[out.stride(0), 1], block_shape=[bm, bn]) if tile.get(
            "STORE_DESC") else a_desc  # fmt: skip
        _int_gemm_tma_kernel[(programs,)](
            a_desc, b_desc, c_desc, *tail, m, n, k, r, g, *strides_lr, out.stride(0), programs,
            **flags, **tile, **launch,
        )  # fmt: skip
        return out
    args = (xq, tail[0], tail[1], tail[2], w, *tail[3:], m, n, k, r, g, xq.stride(0), w.stride(0), *strides_lr,
            out.stride(0))  # fmt: skip
    flags.update({"W4": bool(w4), "GROUP_SIZE": int(group_size), "EVEN_K": k % CHUNK == 0})
    if not cfg and POLICY["autotune"] and not INTERPRET:

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

        _int_gemm_tuned()[grid](*args, **flags)
        return out
    tile = {"GROUP_M": 8, **(_INTERP_TILE if INTERPRET else PTR_TILES[(size, bool(w4), int(group_size > 0))]), **cfg}
    launch = {kk: tile.pop(kk) for kk in ("num_warps", "num_stages") if kk in tile}
    grid = (triton.cdiv(m, tile["BLOCK_M"]) * triton.cdiv(n, tile["BLOCK_N"]),)
    _int_gemm_kernel[grid](*args, **flags, **tile, **launch)
    return out


# ---- weight-only GEMM (small M) ---------------------------------------------------------------------------------
@triton.jit
def _wonly_gemm_kernel(
    x_ptr, w_ptr, sw_ptr, bias_ptr, c_ptr,
    M, N, K, G, stride_xm, stride_wn, stride_cm,
    W4: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Weight-only ``y = x·(w·s)ᵀ + b``: 16-bit activations ``x [M, K]`` (not quantized), int8 or packed int4 weight
    codes converted to the activation dtype in registers (exact: |code| ≤ 128) and multiplied on the 16-bit tensor
    cores with fp32 accumulation; per-channel scales in the epilogue, per-group scales per K slice. For small M the
    GEMM is bound by the weight bytes, which int8/int4 halve/quarter relative to bf16."""
    CH: tl.constexpr = 128
    HALF: tl.constexpr = 64
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = (offs_m % M).to(tl.int64)
    rn = (offs_n % N).to(tl.int64)
    KW: tl.constexpr = HALF if W4 else CH
    offs_k = tl.arange(0, KW)
    x_ptrs = x_ptr + rm[:, None] * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + rn[None, :] * stride_wn + offs_k[:, None]  # [KW, BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kc in range(0, tl.cdiv(K, CH)):
        k0 = kc * CH
        if EVEN_K:
            a0 = tl.load(x_ptrs)
            if W4:
                a1 = tl.load(x_ptrs + HALF)
        else:
            a0 = tl.load(x_ptrs, mask=(k0 + offs_k)[None, :] < K, other=0.0)
            if W4:
                a1 = tl.load(x_ptrs + HALF, mask=(k0 + HALF + offs_k)[None, :] < K, other=0.0)
        if W4:
            p = tl.load(w_ptrs)  # packed rows are zero-padded to a multiple of CH
            w0 = ((p << 4) >> 4).to(a0.dtype)
            w1 = (p >> 4).to(a0.dtype)
        elif EVEN_K:
            w0 = tl.load(w_ptrs).to(a0.dtype)
        else:
            w0 = tl.load(w_ptrs, mask=(k0 + offs_k)[:, None] < K, other=0).to(a0.dtype)
        if GROUP_SIZE > 0:
            s0 = tl.load(sw_ptr + rn * G + k0 // GROUP_SIZE)
            d = tl.dot(a0, w0, out_dtype=tl.float32)
            if W4:
                if GROUP_SIZE % CH == 0:
                    d = tl.dot(a1, w1, d, out_dtype=tl.float32)
                else:
                    g1 = (k0 + HALF) // GROUP_SIZE
                    s1 = tl.load(sw_ptr + rn * G + g1, mask=(rn * 0 + g1) < G, other=0.0)
                    acc += tl.dot(a1, w1, out_dtype=tl.float32) * s1[None, :]
            acc += d * s0[None, :]
        else:
            acc = tl.dot(a0, w0, acc, out_dtype=tl.float32)
            if W4:
                acc = tl.dot(a1, w1, acc, out_dtype=tl.float32)
        x_ptrs += CH
        w_ptrs += CH // 2 if W4 else CH
    if GROUP_SIZE == 0:
        acc = acc * tl.load(sw_ptr + rn)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


#: weight-only tiles by M (≤ 16, ≤ 64, larger); BLOCK_N small so that a 1152–1920-wide layer still spreads over many SMs
WONLY_TILES = {
    "16": {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    "64": {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    "256": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 4},
}
_INTERP_WONLY = {"BLOCK_M": 16, "BLOCK_N": 32}


def weight_only_linear(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, group_size: int, w4: bool, k: int,
    bias: torch.Tensor | None, out_dtype: torch.dtype, config: dict | None = None,
) -> torch.Tensor:  # fmt: skip
    """Launch :func:`_wonly_gemm_kernel`: ``x [M, K]`` bf16/fp16, ``w`` int8 ``[N, K]`` or packed
    ``[N, padded_k(K)/2]``, ``w_scale`` fp32 ``[N]`` or ``[N, G]``. (The interpreter does not emulate bf16 dots:
    there bf16 inputs run as their exact fp32 values.)"""
    if x.dtype not in (torch.bfloat16, torch.float16) and not INTERPRET:
        raise ValueError(f"the weight-only kernel takes bf16/fp16 activations, got {x.dtype}")
    if INTERPRET and x.dtype == torch.bfloat16:
        return weight_only_linear(x.float(), w, w_scale, group_size, w4, k, bias, torch.float32, config).to(out_dtype)
    m = x.shape[0]
    n = w.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    if x.stride(1) != 1:
        x = x.contiguous()
    g = w_scale.shape[1] if group_size > 0 else 1
    w_scale = w_scale.contiguous().float()
    key = "16" if m <= 16 else ("64" if m <= 64 else "256")
    tile = {**(_INTERP_WONLY if INTERPRET else WONLY_TILES[key]), **(config or {})}
    launch = {kk: tile.pop(kk) for kk in ("num_warps", "num_stages") if kk in tile}
    grid = (triton.cdiv(n, tile["BLOCK_N"]), triton.cdiv(m, tile["BLOCK_M"]))
    _wonly_gemm_kernel[grid](
        x, w, w_scale, bias if bias is not None else w_scale, out, m, n, k, g, x.stride(0), w.stride(0), out.stride(0),
        W4=bool(w4), GROUP_SIZE=int(group_size), HAS_BIAS=bias is not None, EVEN_K=k % CHUNK == 0, **tile, **launch,
    )  # fmt: skip
    return out

"""Triton weight-only GEMM for small M: 16-bit activations times int8 / packed int4 weight codes on the 16-bit
tensor cores, with an opt-in split-K (:data:`WONLY_SPLIT_K`) and its deterministic reduction."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .packing import padded_k
from .triton_policy import CHUNK, INTERPRET, _num_sms


@triton.jit
def _wonly_gemm_kernel(
    x_ptr, w_ptr, sw_ptr, bias_ptr, c_ptr,
    M, N, K, G, stride_xm, stride_wn, stride_cm,
    W4: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr = 1,
):  # fmt: skip
    """Weight-only ``y = x·(w·s)ᵀ + b``: 16-bit activations ``x [M, K]`` (not quantized), int8 or packed int4 weight
    codes converted to the activation dtype in registers (exact: |code| ≤ 128) and multiplied on the 16-bit tensor
    cores with fp32 accumulation; per-channel scales in the epilogue, per-group scales per K slice. For small M the
    GEMM is bound by the weight bytes, which int8/int4 halve/quarter relative to bf16.

    ``SPLIT_K > 1`` (grid axis 2): program ``pid_k`` takes the contiguous chunk range
    ``[pid_k·P, min((pid_k+1)·P, ceil(K/128)))``, ``P = ceil(ceil(K/128) / SPLIT_K)`` (a range may be empty), so
    packed int4 rows and per-group scales stay aligned to the 128-wide chunk, and stores its fp32 partial tile — with
    the per-group scales applied, without the per-channel scale and the bias — to ``c_ptr``, then a workspace
    ``[SPLIT_K, M, N]`` (row stride ``stride_cm = N``) that :func:`_wonly_splitk_reduce_kernel` sums in a fixed order.
    ``SPLIT_K = 1`` is the single-pass kernel, unchanged."""
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
    if SPLIT_K == 1:
        kc_lo = 0
        kc_hi = tl.cdiv(K, CH)
    else:
        per = tl.cdiv(tl.cdiv(K, CH), SPLIT_K)
        kc_lo = tl.program_id(2) * per
        kc_hi = tl.minimum(kc_lo + per, tl.cdiv(K, CH))
        x_ptrs += kc_lo * CH
        w_ptrs += kc_lo * (CH // 2 if W4 else CH)
    for kc in range(kc_lo, kc_hi):
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
    if SPLIT_K == 1:
        if GROUP_SIZE == 0:
            acc = acc * tl.load(sw_ptr + rn)[None, :]
        if HAS_BIAS:
            acc = acc + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))
    else:  # fp32 partial tile of this K range into the workspace [SPLIT_K, M, N]
        c_ptrs = c_ptr + tl.program_id(2).to(tl.int64) * M * stride_cm
        c_ptrs += offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _wonly_splitk_reduce_kernel(
    ws_ptr, sw_ptr, bias_ptr, c_ptr, M, N, stride_cm,
    SPLIT_K: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Second pass of the split-K weight-only GEMM: ``y[m, n] = ((p₀ + p₁) + …) + p_{S−1}) · s[n] + b[n]`` over the
    fp32 partials ``ws [SPLIT_K, M, N]`` (contiguous), always summed in split order, so the output is the same bits
    run to run (no atomics); the per-channel scale (``PER_CHANNEL``; per-group scales were applied per K slice) and
    the bias are applied once here, as the single-pass epilogue does, then the cast to the output dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M * N
    rm = (offs // N).to(tl.int64)
    rn = offs % N
    ptrs = ws_ptr + offs
    acc = tl.load(ptrs, mask=mask, other=0.0)
    for _ in tl.static_range(1, SPLIT_K):
        ptrs += M * N  # the next split's [M, N] slice (a 64-bit pointer; M·N < 2^31 for any output that fits)
        acc += tl.load(ptrs, mask=mask, other=0.0)
    if PER_CHANNEL:
        acc = acc * tl.load(sw_ptr + rn, mask=mask, other=0.0)
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn, mask=mask, other=0.0).to(tl.float32)
    tl.store(c_ptr + rm * stride_cm + rn, acc.to(c_ptr.dtype.element_ty), mask=mask)


#: weight-only tiles by M (≤ 16, ≤ 64, larger); BLOCK_N small so that a 1152–1920-wide layer still spreads over many SMs
WONLY_TILES = {
    "16": {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    "64": {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    "256": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 4},
}
_INTERP_WONLY = {"BLOCK_M": 16, "BLOCK_N": 32}

#: Split-K of the weight-only GEMM (``VQCORE_WONLY_SPLIT_K``): ``"off"`` (default: one program per output tile, each
#: looping over all of K — the path that was measured), ``"auto"`` (:func:`choose_split_k`) or a positive integer
#: (that many programs per output tile; ``"1"`` is the same as ``"off"``). Opt-in until it is measured faster on a
#: GPU: at M ≤ 64 the grid is only ``ceil(N/32)`` programs (36 for N = 1152) on an H100's 132 SMs, too few loads in
#: flight to reach HBM bandwidth, which is what split-K adds. ``config={"SPLIT_K": ...}`` overrides it per call.
WONLY_SPLIT_K = os.environ.get("VQCORE_WONLY_SPLIT_K", "off")
#: :func:`choose_split_k`'s targets: programs per SM, fewest 128-wide K chunks per split
WONLY_SPLIT_PROGRAMS_PER_SM = 3
WONLY_SPLIT_MIN_CHUNKS = 2
_REDUCE_BLOCK = 512


def _split_setting(value, what: str) -> str | int:
    """``"off"``, ``"auto"`` or an int ≥ 1 from a flag value (str or int); one-line error otherwise."""
    v = value.strip().lower() if isinstance(value, str) else value
    if v in ("off", "auto"):
        return v
    try:
        n = int(v)
    except (TypeError, ValueError):
        n = 0
    if isinstance(v, bool) or n < 1 or (not isinstance(v, str) and n != v):
        raise ValueError(f"{what} must be 'off', 'auto' or a positive integer, got {value!r}")
    return n


def choose_split_k(m: int, n: int, k: int, w4: bool, block_m: int, block_n: int, num_sms: int) -> int:
    """Split-K for ``"auto"``. With ``T = ceil(N/BLOCK_N)·ceil(M/BLOCK_M)`` output tiles and ``C = ceil(K/128)``
    chunks: aim at ``want = ceil(P·num_sms / T)`` splits (``P`` = :data:`WONLY_SPLIT_PROGRAMS_PER_SM`), capped at
    ``cap = min(C // MIN, weight bytes // (4·M·N))`` — every split keeps at least ``MIN`` =
    :data:`WONLY_SPLIT_MIN_CHUNKS` chunks, and the fp32 partials (``s·M·N·4`` bytes, written and read back) stay
    within the weight bytes the split is meant to stream faster. Splits are equal ranges of
    ``max(C // want, ceil(C / cap))`` chunks, so none is empty and there are ``≥ want`` of them unless a cap stops
    it. 1 means no split (too few chunks, or the grid already has ``P`` programs per SM)."""
    tiles = triton.cdiv(n, block_n) * triton.cdiv(m, block_m)
    chunks = triton.cdiv(k, CHUNK)
    want = triton.cdiv(WONLY_SPLIT_PROGRAMS_PER_SM * num_sms, tiles)
    cap = min(chunks // WONLY_SPLIT_MIN_CHUNKS, n * (padded_k(k) // 2 if w4 else k) // max(1, 4 * m * n))
    if min(want, cap) <= 1:
        return 1
    return triton.cdiv(chunks, max(chunks // want, triton.cdiv(chunks, cap)))


def weight_only_linear(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, group_size: int, w4: bool, k: int,
    bias: torch.Tensor | None, out_dtype: torch.dtype, config: dict | None = None,
) -> torch.Tensor:  # fmt: skip
    """Launch :func:`_wonly_gemm_kernel`: ``x [M, K]`` bf16/fp16, ``w`` int8 ``[N, K]`` or packed
    ``[N, padded_k(K)/2]``, ``w_scale`` fp32 ``[N]`` or ``[N, G]``. (The interpreter does not emulate bf16 dots:
    there bf16 inputs run as their exact fp32 values.) ``config`` overrides the tile (``BLOCK_M``, ``BLOCK_N``,
    ``num_warps``, ``num_stages``) and the split (``SPLIT_K``: an int ≥ 1, ``"auto"`` or ``"off"``; default
    :data:`WONLY_SPLIT_K`). With a split > 1 the kernel writes fp32 partials to a ``[s, M, N]`` workspace and
    :func:`_wonly_splitk_reduce_kernel` sums them in split order (deterministic), scales and adds the bias."""
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
    split = _split_setting(tile.pop("SPLIT_K", WONLY_SPLIT_K), "SPLIT_K (config) / WONLY_SPLIT_K")
    if split == "auto":
        split = choose_split_k(m, n, k, w4, tile["BLOCK_M"], tile["BLOCK_N"], _num_sms(x.device))
    split = 1 if split == "off" else split
    grid = (triton.cdiv(n, tile["BLOCK_N"]), triton.cdiv(m, tile["BLOCK_M"]))
    bias_arg = bias if bias is not None else w_scale
    if split == 1:
        _wonly_gemm_kernel[grid](
            x, w, w_scale, bias_arg, out, m, n, k, g, x.stride(0), w.stride(0), out.stride(0),
            W4=bool(w4), GROUP_SIZE=int(group_size), HAS_BIAS=bias is not None, EVEN_K=k % CHUNK == 0, **tile, **launch,
        )  # fmt: skip
        return out
    ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    _wonly_gemm_kernel[(*grid, split)](
        x, w, w_scale, bias_arg, ws, m, n, k, g, x.stride(0), w.stride(0), n,
        W4=bool(w4), GROUP_SIZE=int(group_size), HAS_BIAS=False, EVEN_K=k % CHUNK == 0, SPLIT_K=split, **tile,
        **launch,
    )  # fmt: skip
    _wonly_splitk_reduce_kernel[(triton.cdiv(m * n, _REDUCE_BLOCK),)](
        ws, w_scale, bias_arg, out, m, n, out.stride(0),
        SPLIT_K=split, PER_CHANNEL=group_size == 0, HAS_BIAS=bias is not None, BLOCK=_REDUCE_BLOCK, num_warps=4,
    )  # fmt: skip
    return out

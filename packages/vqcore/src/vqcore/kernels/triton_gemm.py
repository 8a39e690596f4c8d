"""Triton integer GEMM kernels: the pointer-based int8×int8 / int4(packed)×int8 kernel (``_int_gemm_kernel``) and the
persistent TMA kernel (``_int_gemm_tma_kernel``), with their shared epilogue. Launched by
:func:`vqcore.kernels.triton_int_linear.int_linear` (design notes in :mod:`vqcore.kernels.triton_kernels`)."""

from __future__ import annotations

import triton
import triton.language as tl


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

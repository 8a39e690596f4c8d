"""A fused selective-scan forward kernel in Triton (GPU inference), with the reference scans as its oracle.

The pure-PyTorch scans (:mod:`walmafa.mamba`) issue hundreds of small kernels per call and materialise
``[batch, length, d_inner, d_state]`` tensors; on a GPU they are launch- and memory-bound (84 % of the released
model's time at 608×400). This kernel computes the same recurrence (Gu & Dao 2023, Alg. 2; ZOH for A, Euler for B)::

    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,        y_t = <C_t, h_t> + D x_t

in one launch, keeping the state in registers and never writing the ``[.., d_state]`` intermediates to memory:

* one program per (batch element, block of ``BLOCK_D`` channels) walks the sequence in chunks of ``CHUNK`` steps,
  holding its ``BLOCK_D × d_state`` (channel, state) pairs as the rows of a 2-D tile;
* inside a chunk, along the tile's last axis, the pairs ``(exp(Δ_t A), Δ_t B_t x_t)`` are combined with
  ``tl.associative_scan`` under the operator ``(a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)`` (composition of affine
  maps; every factor is ≤ 1, so nothing overflows), then the carried state enters as ``h_t = b_t + a_t h_in``;
* the read-out ``<C_t, h_t>`` is a reduction over the state axis; the chunk's last state is carried on. Padded steps
  past the end have Δ = 0 (decay 1, input 0) and leave the state unchanged.

Forward only (no autograd): :class:`walmafa.mamba.Mamba` uses it with ``scan="triton"`` when no gradient is needed
and falls back to the chunked scan otherwise. Computed in float32 whatever the input dtype (bf16/fp16 inputs are
read and converted in registers); the output has ``x``'s dtype. Tested against :func:`selective_scan_sequential`
on CPU through Triton's interpreter (``TRITON_INTERPRET=1``) and, on a GPU, by ``tests -m gpu`` and
``tools/bench/walmafa.py --gpu-profile``.
"""

from __future__ import annotations

import os

import torch

__all__ = ["selective_scan_triton", "triton_available"]


def triton_available(device: torch.device | str | None = None) -> bool:
    """True if Triton imports and the kernel can run on ``device`` (CUDA, or any device under TRITON_INTERPRET)."""
    if triton is None:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()


try:  # Triton is optional: without it (or without a GPU) the PyTorch scans are used
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

if triton is not None:

    @triton.jit
    def _combine(a1, b1, a2, b2):
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _scan_fwd(x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, y_ptr, length, d_inner, d_state,
                  sxb, sxd, sxl, stb, std, stl, sbb, sbn, sbl, scb, scn, scl, syb, syd, syl,
                  HAS_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
        # rows r = (channel, state) pairs of this block, flattened so the scan runs along the last axis of a 2-D tile
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        rows = tl.arange(0, BLOCK_D * BLOCK_N)
        d_row = pid_d * BLOCK_D + rows // BLOCK_N
        n_row = rows % BLOCK_N
        m_row = (d_row < d_inner) & (n_row < d_state)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < d_inner
        offs_t = tl.arange(0, CHUNK)
        a = tl.load(a_ptr + d_row * d_state + n_row, mask=m_row, other=0.0).to(tl.float32)  # [R]
        dvec = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_D:
            dvec = tl.load(d_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        h = tl.zeros([BLOCK_D * BLOCK_N], dtype=tl.float32)
        last = (offs_t == CHUNK - 1)[None, :]
        for start in range(0, length, CHUNK):
            t = start + offs_t
            mask_t = t < length
            m_rt = m_row[:, None] & mask_t[None, :]
            x_r = tl.load(x_ptr + pid_b * sxb + d_row[:, None] * sxd + t[None, :] * sxl, mask=m_rt,
                          other=0.0).to(tl.float32)  # [R, CH] (each channel's row repeated per state)
            dt_r = tl.load(dt_ptr + pid_b * stb + d_row[:, None] * std + t[None, :] * stl, mask=m_rt,
                           other=0.0).to(tl.float32)
            b_r = tl.load(b_ptr + pid_b * sbb + n_row[:, None] * sbn + t[None, :] * sbl, mask=m_rt,
                          other=0.0).to(tl.float32)
            c_r = tl.load(c_ptr + pid_b * scb + n_row[:, None] * scn + t[None, :] * scl, mask=m_rt,
                          other=0.0).to(tl.float32)
            decay = tl.exp(dt_r * a[:, None])
            acc_a, acc_b = tl.associative_scan((decay, dt_r * x_r * b_r), 1, _combine)
            hs = acc_b + acc_a * h[:, None]  # [R, CH]: the state of every (channel, state) row at every step
            y = tl.sum(tl.reshape(hs * c_r, (BLOCK_D, BLOCK_N, CHUNK)), axis=1)  # [BD, CH]
            m_dt = mask_d[:, None] & mask_t[None, :]
            if HAS_D:
                x = tl.load(x_ptr + pid_b * sxb + offs_d[:, None] * sxd + t[None, :] * sxl, mask=m_dt,
                            other=0.0).to(tl.float32)
                y = y + dvec[:, None] * x
            tl.store(y_ptr + pid_b * syb + offs_d[:, None] * syd + t[None, :] * syl,
                     y.to(y_ptr.dtype.element_ty), mask=m_dt)
            h = tl.sum(tl.where(last, hs, 0.0), axis=1)

    _CONFIGS = [triton.Config({"BLOCK_D": bd, "CHUNK": ch}, num_warps=w)
                for bd, ch, w in ((1, 32, 2), (1, 64, 4), (2, 32, 4), (2, 64, 4), (4, 32, 4), (4, 64, 8),
                                  (1, 128, 4), (8, 16, 4))]
    _scan_fwd_tuned = triton.autotune(_CONFIGS, key=["length", "d_inner", "d_state"])(_scan_fwd)


def selective_scan_triton(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                          D: torch.Tensor | None = None, block_d: int | None = None,
                          chunk: int | None = None) -> torch.Tensor:
    """Fused selective scan, forward only: same arguments and result as
    :func:`walmafa.mamba.selective_scan_sequential` (x, delta ``[b, d, L]``; A ``[d, n]``; B, C ``[b, n, L]``;
    D ``[d]``). ``block_d``/``chunk`` fix the launch configuration; by default it is autotuned on CUDA (and
    ``(4, 32)`` under the interpreter)."""
    from .mamba import _check_scan_args

    _check_scan_args(x, delta, A, B, C, D)
    if not triton_available(x.device):
        raise RuntimeError("selective_scan_triton needs Triton and a CUDA device (or TRITON_INTERPRET=1)")
    b, d, length = x.shape
    n = A.shape[1]
    y = torch.empty_like(x)
    if length == 0:
        return y
    A = A.float().contiguous()
    Dv = D.float().contiguous() if D is not None else A  # a dummy pointer when there is no D
    block_n = triton.next_power_of_2(n)
    args = (x, delta, A, B, C, Dv, y, length, d, n, *x.stride(), *delta.stride(), *B.stride(), *C.stride(),
            *y.stride())
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if block_d is None and chunk is None and not interpret:
        _scan_fwd_tuned[lambda meta: (b, triton.cdiv(d, meta["BLOCK_D"]))](
            *args, HAS_D=D is not None, BLOCK_N=block_n)
    else:
        bd, ch = block_d or 4, chunk or 32
        _scan_fwd[(b, triton.cdiv(d, bd))](*args, HAS_D=D is not None, BLOCK_D=bd, BLOCK_N=block_n,
                                                  CHUNK=ch)
    return y

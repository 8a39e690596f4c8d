"""``torch.library`` custom ops of the integer kernels.

Each op has three implementations: the default (CPU, and any device without a kernel) is the pure-PyTorch reference of
:mod:`vqcore.kernels.reference`; the CUDA one launches the Triton kernel (imported lazily, so ``import vqcore`` works
without Triton or a GPU); the fake (meta) one gives shapes/dtypes so the ops trace under ``torch.compile``.

* ``vqcore::quantize_per_token(x[M,K], smooth[K]?, bits, symmetric) -> (q int8[M,K], scale f32[M], zp i32[M],
  rowsum i32[M])``
* ``vqcore::quantize_static(x[M,K], smooth[K]?, scale f32[1], zp i32[1], bits) -> (q int8[M,K], scale f32[M],
  zp i32[M], rowsum i32[M])`` — static per-tensor quantization with a stored ``(Δ, zp)`` (one row of a per-step table)
* ``vqcore::int_linear(xq, x_scale, x_zp?, x_rowsum?, w, w_scale, group_size, w4, k, w_sum?, w_zp?, bias?, lr_t?,
  lr_up?, out_dtype) -> y[M, N]``
* ``vqcore::int8_attention(qc[BH,Sq,D], qs[BH,Sq], kc[BH,Sk,D], ks[BH,Sk], v[B,H,Sk,D], out_dtype) -> o[B,H,Sq,D]`` —
  the SageAttention-style kernel on quantized Q/K (:mod:`vqcore.kernels.attention`)

No autograd formulas are registered: these are inference kernels (the fake-quant modules of ``vqcore.quant`` are the
trainable path).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference as ref
from .packing import unpack_int4


@torch.library.custom_op("vqcore::quantize_per_token", mutates_args=())
def quantize_per_token_op(
    x: Tensor, smooth: Tensor | None, bits: int, symmetric: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return ref.quantize_per_token_ref(x, smooth, bits, symmetric)


@quantize_per_token_op.register_fake
def _quantize_per_token_fake(x, smooth, bits, symmetric):
    m, k = x.shape
    return (
        x.new_empty((m, k), dtype=torch.int8),
        x.new_empty((m,), dtype=torch.float32),
        x.new_empty((m,), dtype=torch.int32),
        x.new_empty((m,), dtype=torch.int32),
    )


@quantize_per_token_op.register_kernel("cuda")
def _quantize_per_token_cuda(x, smooth, bits, symmetric):
    from . import triton_kernels

    return triton_kernels.quantize_per_token(x, smooth, bits, symmetric)


@torch.library.custom_op("vqcore::quantize_static", mutates_args=())
def quantize_static_op(
    x: Tensor, smooth: Tensor | None, scale: Tensor, zero_point: Tensor, bits: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return ref.quantize_static_ref(x, smooth, scale, zero_point, bits)


@quantize_static_op.register_fake
def _quantize_static_fake(x, smooth, scale, zero_point, bits):
    return _quantize_per_token_fake(x, smooth, bits, True)


@quantize_static_op.register_kernel("cuda")
def _quantize_static_cuda(x, smooth, scale, zero_point, bits):
    from . import triton_kernels

    return triton_kernels.quantize_static(x, smooth, scale, zero_point, bits)


@torch.library.custom_op("vqcore::int_linear", mutates_args=())
def int_linear_op(
    xq: Tensor,
    x_scale: Tensor,
    x_zp: Tensor | None,
    x_rowsum: Tensor | None,
    w: Tensor,
    w_scale: Tensor,
    group_size: int,
    w4: bool,
    k: int,
    w_sum: Tensor | None,
    w_zp: Tensor | None,
    bias: Tensor | None,
    lr_t: Tensor | None,
    lr_up: Tensor | None,
    out_dtype: torch.dtype,
) -> Tensor:
    codes = unpack_int4(w, k) if w4 else w
    return ref.int_linear_ref(xq, x_scale, x_zp, codes, w_scale, group_size, w_zp, bias, lr_t, lr_up, out_dtype)


@int_linear_op.register_fake
def _int_linear_fake(xq, x_scale, x_zp, x_rowsum, w, w_scale, group_size, w4, k, w_sum, w_zp, bias, lr_t, lr_up,
                     out_dtype):  # fmt: skip
    return xq.new_empty((xq.shape[0], w.shape[0]), dtype=out_dtype)


@int_linear_op.register_kernel("cuda")
def _int_linear_cuda(xq, x_scale, x_zp, x_rowsum, w, w_scale, group_size, w4, k, w_sum, w_zp, bias, lr_t, lr_up,
                     out_dtype):  # fmt: skip
    from . import triton_kernels

    return triton_kernels.int_linear(
        xq, x_scale, x_zp, x_rowsum, w, w_scale, group_size, w4, k, w_sum, w_zp, bias, lr_t, lr_up, out_dtype
    )


@torch.library.custom_op("vqcore::int8_attention", mutates_args=())
def int8_attention_op(qc: Tensor, qs: Tensor, kc: Tensor, ks: Tensor, v: Tensor, out_dtype: torch.dtype) -> Tensor:
    from .attention import int8_attention_ref

    return int8_attention_ref(qc, qs, kc, ks, v, out_dtype)


@int8_attention_op.register_fake
def _int8_attention_fake(qc, qs, kc, ks, v, out_dtype):
    b, h, _, d = v.shape
    return v.new_empty((b, h, qc.shape[1], d), dtype=out_dtype)


@int8_attention_op.register_kernel("cuda")
def _int8_attention_cuda(qc, qs, kc, ks, v, out_dtype):
    from . import triton_attention

    return triton_attention.int8_attention(qc, qs, kc, ks, v if v.stride(-1) == 1 else v.contiguous(), out_dtype)

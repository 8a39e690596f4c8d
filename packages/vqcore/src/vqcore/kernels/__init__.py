"""Integer inference kernels of vqcore (DESIGN.md layer 2).

Public functions (all work on CPU through the pure-PyTorch references and on CUDA through Triton kernels; the kernels
are ``torch.library`` custom ops ``vqcore::quantize_per_token``, ``vqcore::quantize_static`` and
``vqcore::int_linear``, see :mod:`.ops`):

* :func:`quantize_per_token` — dynamic per-token activation quantization to ``bits ≤ 8`` (int8 storage), symmetric or
  asymmetric, fused with the optional smoothing scale (``x / s``);
* :func:`quantize_per_token_lowrank` — the same plus a low-rank side branch on the dequantized activations
  (Q-VDiT's rank-1 term ``x̂·αᵀ``) in the quantizer's pass (no M×K dequantized tensor);
* :func:`quantize_static` — static per-tensor activation quantization with a stored ``(Δ, zp)`` (one row of a
  per-denoising-step table, MPQ-DM/EfficientDM's TALSQ), same outputs as :func:`quantize_per_token` (the scale and
  zero point broadcast per token), so the GEMM is unchanged;
* :func:`conv_patches` — im2col of int8 NHWC codes (any dtype; zero-point padding), the convolution as one GEMM;
* :func:`int_linear` — int8×int8 (W8A8) or packed-int4×int8 (W4A8) GEMM with int32 accumulation and a fused epilogue
  (per-token × per-channel/per-group scales, zero-point corrections, bias, low-rank side branch, cast);
* :func:`int8_attention` — SageAttention-style attention (smoothed K, per-block int8 Q·Kᵀ, 16-bit P·V;
  :mod:`.attention`, Triton kernel in :mod:`.triton_attention`), :class:`Int8SDPA` / :func:`use_int8_attention`
  (what ``convert(attention="int8")`` installs);
* :func:`weight_only_linear` — 16-bit activations × int8/int4 weights dequantized in registers (the small-M path,
  opt-in through :data:`WEIGHT_ONLY_MAX_M`, see :func:`weight_only_enabled`);
* :func:`pack_int4` / :func:`unpack_int4` — the int4 weight layout (:mod:`.packing`);
* :mod:`.reference` — the reference of every kernel; :mod:`.triton_kernels` (imports Triton) — the kernels, one
  job per module (``triton_quant``, ``triton_gemm``, ``triton_unpack``, ``triton_policy``, ``triton_int_linear``,
  ``triton_weight_only``), all re-exported there.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import torch

from . import ops, reference
from .attention import Int8SDPA, int8_attention, use_int8_attention
from .conv import conv_patches
from .packing import INT4_CHUNK, pack_int4, padded_k, unpack_int4

__all__ = [
    "INT4_CHUNK",
    "Int8SDPA",
    "QuantizedActivation",
    "conv_patches",
    "int8_attention",
    "int_linear",
    "ops",
    "pack_int4",
    "padded_k",
    "quantize_per_token",
    "quantize_per_token_lowrank",
    "quantize_static",
    "reference",
    "triton_available",
    "unpack_int4",
    "use_int8_attention",
    "weight_only_enabled",
    "weight_only_linear",
]


#: How :func:`quantize_per_token` runs under ``torch.compile``: ``"op"`` (default) — the opaque custom op (the Triton
#: kernel, IEEE divisions, codes bit-identical to the reference); ``"torch"`` — the reference's plain torch ops, which
#: Inductor fuses with the producer of ``x`` (LayerNorm / modulation / GELU: no separate HBM round trip of the
#: activations; the benchmark measures the speed and how many codes Inductor's division changes).
COMPILE_QUANT = "op"


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return is_compiling is not None and is_compiling()


def _direct(t: torch.Tensor) -> bool:
    """Eager CUDA calls go straight to the Triton launcher (skipping the custom-op dispatch, ~tens of µs of host time
    per call); under ``torch.compile`` and on other devices the registered custom ops are used."""
    if not t.is_cuda:
        return False
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return not (is_compiling is not None and is_compiling())


def triton_available() -> bool:
    """True when Triton is importable and a CUDA device is present (the Triton kernels can run)."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


class QuantizedActivation(NamedTuple):
    """Per-token quantized activations: int8 ``codes [M, K]``, fp32 ``scale [M]``, int32 ``zero_point [M]`` (zeros if
    symmetric) and int32 ``rowsum [M]`` (Σ_k codes)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    rowsum: torch.Tensor


def _rows(x: torch.Tensor, smooth: torch.Tensor | None) -> torch.Tensor:
    """``x [..., K]`` as a row-contiguous ``[M, K]`` matrix, after checking ``smooth`` is a ``[K]`` tensor beside it."""
    k = x.shape[-1]
    if smooth is not None and (smooth.shape != (k,) or smooth.device != x.device):
        raise ValueError(f"smooth must be a [{k}] tensor on {x.device}, got {tuple(smooth.shape)}")
    x2 = x.reshape(-1, k)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def quantize_per_token(
    x: torch.Tensor, bits: int = 8, symmetric: bool = True, smooth: torch.Tensor | None = None
) -> QuantizedActivation:
    """Quantize each row of ``x`` (``[..., K]``, flattened to ``[M, K]``) to ``bits`` bits with its own scale, after
    dividing by the smoothing scale ``smooth [K]`` when given."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating tensor [..., K], got {type(x).__name__} {getattr(x, 'dtype', '')}")
    reference.qrange(bits, symmetric)  # validates bits
    x2 = _rows(x, smooth)
    inv = smooth.float().contiguous() if smooth is not None else None
    if _direct(x2):
        from . import triton_kernels

        return QuantizedActivation(*triton_kernels.quantize_per_token(x2, inv, int(bits), bool(symmetric)))
    if COMPILE_QUANT == "torch" and _compiling():
        return QuantizedActivation(*reference.quantize_per_token_ref(x2, inv, int(bits), bool(symmetric)))
    return QuantizedActivation(*ops.quantize_per_token_op(x2, inv, int(bits), bool(symmetric)))


def quantize_per_token_lowrank(
    x: torch.Tensor, bits: int, symmetric: bool, smooth: torch.Tensor | None, down: torch.Tensor
) -> tuple[QuantizedActivation, torch.Tensor]:
    """:func:`quantize_per_token` plus the low-rank side branch on the dequantized activations,
    ``t = x̂·downᵀ`` (fp32 ``[M, R]``, ``x̂ = (q − zp)·scale``): on CUDA in the quantizer's own pass (ranks ≤ 4; the
    row is in registers), elsewhere (and for larger ranks) from the codes in row chunks — never an fp32 M×K ``x̂``."""
    if down.dim() != 2 or down.shape[1] != x.shape[-1]:
        raise ValueError(f"down must be [R, {x.shape[-1]}], got {tuple(down.shape)}")
    x2 = _rows(x, smooth)
    inv = smooth.float().contiguous() if smooth is not None else None
    if _direct(x2) and down.shape[0] <= 4:
        from . import triton_kernels

        q, s, z, rs, t = triton_kernels.quantize_per_token(x2, inv, int(bits), bool(symmetric),
                                                           down=down.float().contiguous())  # fmt: skip
        return QuantizedActivation(q, s, z, rs), t
    act = quantize_per_token(x2, bits, symmetric, smooth)
    return act, reference.lowrank_on_dequantized_ref(act.codes, act.scale, act.zero_point, down)


def quantize_static(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8, smooth: torch.Tensor | None = None
) -> QuantizedActivation:
    """Quantize ``x`` (``[..., K]``, flattened to ``[M, K]``) with one stored step ``scale`` (a 1-element fp32 tensor)
    and signed zero point ``zero_point`` (1-element int32, ``z − 2^(b−1)`` for an asymmetric quantizer, 0 for a
    symmetric one), after dividing by ``smooth [K]``. Tensors stay on the device (a row of a step table is passed as
    ``table[t:t+1]``, no host synchronisation)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating tensor [..., K], got {type(x).__name__} {getattr(x, 'dtype', '')}")
    reference.qrange(bits, True)  # validates bits
    if scale.numel() != 1 or zero_point.numel() != 1:
        raise ValueError(f"scale and zero_point must have one element each, got {tuple(scale.shape)} and "
                         f"{tuple(zero_point.shape)}")  # fmt: skip
    x2 = _rows(x, smooth)
    sc = scale.reshape(1).float()
    zp = zero_point.reshape(1).to(torch.int32)
    inv = smooth.float().contiguous() if smooth is not None else None
    if _direct(x2):
        from . import triton_kernels

        return QuantizedActivation(*triton_kernels.quantize_static(x2, inv, sc, zp, int(bits)))
    return QuantizedActivation(*ops.quantize_static_op(x2, inv, sc, zp, int(bits)))


#: Converted layers called with at most this many tokens on CUDA run :func:`weight_only_linear` (16-bit activations,
#: not quantized: closer to the float model than the A8 layer they replace) instead of quantizer + integer GEMM.
#: 0 (default, ``VQCORE_WEIGHT_ONLY_MAX_M``) turns it off until it is measured faster than bf16 on the GPU.
WEIGHT_ONLY_MAX_M = int(os.environ.get("VQCORE_WEIGHT_ONLY_MAX_M", "0"))


def weight_only_enabled(m: int, device: torch.device) -> bool:
    """True when an ``m``-token call of a converted layer goes to :func:`weight_only_linear` (CUDA only,
    ``m ≤ WEIGHT_ONLY_MAX_M``); a plain global read, so ``torch.compile`` traces it without a graph break."""
    return device.type == "cuda" and 0 < m <= WEIGHT_ONLY_MAX_M


def weight_only_linear(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, *, in_features: int, w4: bool,
    group_size: int = 0, bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:  # fmt: skip
    """``y = x·ŵᵀ + b`` with unquantized activations ``x [M, K]`` and the integer weights of :func:`int_linear`
    (dequantized in registers): the small-M path, bound by weight bytes (CUDA: Triton, bf16/fp16 ``x``; elsewhere the
    reference)."""
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"x must be [M, {in_features}], got {tuple(x.shape)}")
    if _direct(x) and x.dtype in (torch.bfloat16, torch.float16):
        from . import triton_kernels

        return triton_kernels.weight_only_linear(x, weight, weight_scale, int(group_size), bool(w4), in_features,
                                                 bias, out_dtype)  # fmt: skip
    codes = unpack_int4(weight, in_features) if w4 else weight
    return reference.weight_only_linear_ref(x, codes, weight_scale, group_size, bias, out_dtype)


def int_linear(
    act: QuantizedActivation,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    *,
    in_features: int,
    w4: bool,
    group_size: int = 0,
    weight_sum: torch.Tensor | None = None,
    weight_zp_scaled: torch.Tensor | None = None,
    asymmetric_act: bool = False,
    bias: torch.Tensor | None = None,
    lowrank_t: torch.Tensor | None = None,
    lowrank_up: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """``y[M, N]`` of a quantized linear layer from quantized activations ``act``.

    ``weight``: int8 codes ``[N, K]`` (``w4=False``) or packed int4 ``[N, padded_k(K)/2]`` (``w4=True``);
    ``weight_scale``: fp32 ``[N]`` (per channel, ``group_size=0``) or ``[N, ceil(K/group_size)]``;
    ``weight_zp_scaled``: ``scale·zero_point`` per channel for asymmetric weights (per-channel only);
    ``weight_sum``: ``Σ_k ŵ[n, k]`` of the dequantized weight (needed when ``asymmetric_act`` or ``weight_zp_scaled``);
    ``lowrank_t [M, r]`` and ``lowrank_up [N, r]``: side branch ``t @ upᵀ`` added in the epilogue (``r ≤ 64``).
    """
    m, k = act.codes.shape
    if k != in_features:
        raise ValueError(f"activations have K={k} but in_features={in_features}")
    n = weight.shape[0]
    want = padded_k(k) // 2 if w4 else k
    if weight.dtype != torch.int8 or weight.dim() != 2 or weight.shape[1] != want:
        raise ValueError(f"weight must be int8 [N, {want}] for w4={w4}, got {weight.dtype} {tuple(weight.shape)}")
    if group_size:
        step = 64 if w4 else INT4_CHUNK
        if group_size % step:
            raise ValueError(f"group_size must be a multiple of {step} for w4={w4}, got {group_size}")
        g = -(-k // group_size)
        if tuple(weight_scale.shape) != (n, g):
            raise ValueError(f"weight_scale must be [{n}, {g}] for group_size={group_size}")
        if weight_zp_scaled is not None:
            raise ValueError("weight zero points are supported with per-channel scales only (group_size=0)")
    elif weight_scale.numel() != n:
        raise ValueError(f"weight_scale must have {n} elements (per output channel), got {tuple(weight_scale.shape)}")
    if (asymmetric_act or weight_zp_scaled is not None) and weight_sum is None:
        raise ValueError("weight_sum is required with asymmetric activations or weight zero points")
    if (lowrank_t is None) != (lowrank_up is None):
        raise ValueError("lowrank_t and lowrank_up must be given together")
    if lowrank_t is not None:
        r = lowrank_t.shape[-1]
        if r > 64 or lowrank_t.shape != (m, r) or lowrank_up.shape != (n, r):
            raise ValueError(f"low-rank branch needs t [{m}, r] and up [{n}, r] with r <= 64, got "
                             f"{tuple(lowrank_t.shape)} and {tuple(lowrank_up.shape)}")  # fmt: skip
    fn = ops.int_linear_op
    if _direct(act.codes):
        from . import triton_kernels

        fn = triton_kernels.int_linear
    return fn(
        act.codes,
        act.scale,
        act.zero_point if asymmetric_act else None,
        act.rowsum if weight_zp_scaled is not None else None,
        weight,
        weight_scale.reshape(n, -1).float().contiguous() if group_size else weight_scale.reshape(n).float(),
        int(group_size),
        bool(w4),
        int(k),
        weight_sum,
        weight_zp_scaled,
        bias,
        lowrank_t,
        lowrank_up,
        out_dtype,
    )

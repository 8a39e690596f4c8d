"""Real-integer export: ``convert(qmodel)`` swaps calibrated fake-quant linears and 2-D convolutions for
:class:`QLinearInt` / :class:`QConv2dInt` modules that hold packed integer weights and run the integer kernels of
:mod:`vqcore.kernels` (Triton on CUDA, the pure-PyTorch reference on CPU).

What converts (and what is refused, with the reason):

* weights: 2–8 bit, per-output-channel or per-group (group a multiple of 64 at ≤ 4 bit, of 128 at 5–8 bit) scales.
  ≤ 4-bit codes are stored packed two per byte (3-bit and 2-bit codes use the 4-bit container: no extra compute speed,
  the same memory as 4 bit); 5–8-bit codes are stored as int8. Asymmetric weights keep their zero point when scales
  are per channel (an epilogue term ``−rowsum(q_x)·scale_w·zp_w``); asymmetric per-group weights are refused.
* **mixed-width weights** (MPQ-DM's OMQ, a weight quantizer with ``channel_bits [N]``: channels at n−1, n, n+1 bits;
  per channel). Each channel keeps its own codes, Δ and zp; the layer uses the narrowest container (int4 or int8) that
  holds all but the widest group. Channels exactly one bit wider than the container (5-bit channels at W4, 9-bit
  channels at W8) are stored as **two rows of the same GEMM** (``mixed_layout="split"``, the default): with signed code
  ``c = 2h + l`` (``h`` in the container's range, ``l ∈ {0, 1}``) row ``j`` keeps ``l`` with the channel's zero point
  and scale ``Δ`` and an extra row keeps ``h`` with scale ``2Δ``; the GEMM runs ``N + k`` output rows and the ``k``
  extra columns are added onto their channels (``y[:, j] += y[:, N + i]``, exact integer sums, one float add). At W4
  this stores ``(N + k)·K/2`` bytes (k = 10 % of N: 1.1× a plain W4 layer, 0.55× int8) in one int4 GEMM.
  ``mixed_layout="padded"`` instead stores every channel in the container of the widest width (one GEMM, no extra
  rows: int8 for a 3/4/5-bit layer — 2× a plain W4 layer — which the H100 measurements of plain layers suggest is the
  faster kernel at large M); 9-bit channels have no int8 container and are always split.
* activations: dynamic ``per_token`` or ``per_token_shared`` quantization, 2–8 bit, symmetric or asymmetric
  (asymmetric costs one epilogue term ``−zp_x·Σ_k ŵ``; the fast kernels of the literature use symmetric int8
  activations, both run on the int8 tensor cores here); or **static per-tensor** quantization (Q-Diffusion, EfficientDM,
  MPQ-DM): the stored ``(Δ, zp)`` of the calibrated ``UniformQuantizer`` — or, with a per-denoising-step table
  (``QuantSpec(timesteps=T)``), all ``T`` rows (``T`` scalars each) and the row index that
  :class:`~vqcore.methods.timerange.StepTableSelector` sets from the call's timestep, exactly as it does for the
  fake-quant quantizers (``convert`` re-binds the model's selector to the new layers). The GEMM is the same: the
  static scale is broadcast into the per-token scale vector, the zero point into the per-token zero points.
  Static per-channel/per-group activation ranges, uncalibrated static quantizers and weight-only layers are refused
  (:class:`Unsupported`), or kept fake-quant with ``strict=False``.
* 2-D convolutions (``QConv2d``, ``groups=1``, static per-tensor activations): the input is quantized channels-last,
  the codes are unfolded into patches (:func:`vqcore.kernels.conv_patches`, the border filled with the zero point, i.e.
  the code of 0.0) and the same integer GEMM runs ``[B·Ho·Wo, C·kh·kw] × [O, C·kh·kw]ᵀ``. 3-D and grouped convolutions
  and convolutions with a side branch are refused.
* timestep-dependent *weights* are refused (:class:`Unsupported`, or kept fake-quant with ``strict=False``): layers
  switched by vidit-q ``timeranges`` (``methods.timerange.TimeRangeSwitch``: one smoothing vector and weight range per
  timestep range) and weight quantizers with per-timestep step tables. An integer layer holds one set of weight codes;
  converting would silently keep the range selected last.
* optional smoothing scale ``s`` (y = Q(x/s)·Q(W·s)ᵀ): the division ``x / s`` is fused into the activation quantizer;
  the fake-quant weight codes already include ``·s`` (and MPQ-DM's LoRA delta, which lives inside the quantizer).
* optional low-rank side branch ``up(down(·))`` (rank ≤ 64) on ``x̂`` or ``x / s``: ``t = ·downᵀ`` is a thin GEMM,
  ``t·upᵀ`` is fused into the GEMM epilogue. A side branch with ``row_gain() -> [P]`` (Q-VDiT's per-frame token mask on
  temporal layers, inputs ``[B·S, T, C]``) scales row ``i`` of ``t`` by ``gain[i mod P]`` before the epilogue.

Saved converted models (:func:`save_converted` / :func:`load_converted`) hold the packed codes (int8 tensors in
safetensors) plus a JSON description of every integer layer and, when the model has one, the step selector's
schedule, so a fresh float model of the same architecture is turned back into the integer model without
recalibration.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from . import kernels
from .kernels import reference as kref
from .kernels.conv import conv_output_size, conv_patches
from .kernels.packing import pack_int4, padded_k, unpack_int4

logger = logging.getLogger(__name__)

__all__ = [
    "IntLinearSpec",
    "QConv2dInt",
    "QLinearInt",
    "Unsupported",
    "convert",
    "int_weight_bytes",
    "linear_weight_bytes",
    "load_converted",
    "mixed_width_container",
    "save_converted",
]

MIXED_LAYOUTS = ("split", "padded")


@dataclass
class IntLinearSpec:
    """Static description of a :class:`QLinearInt` / :class:`QConv2dInt` (what :func:`load_converted` needs).

    ``w_bits`` is the weight *container* width (≤ 4: packed int4, else int8); ``split_rows`` extra GEMM rows hold the
    high digits of channels one bit wider than the container (mixed-width layers). ``a_static``: static per-tensor
    activation quantization with stored ``(Δ, zp)``; ``timesteps`` rows of them (0: one row) — the field name is the
    one :class:`~vqcore.methods.timerange.StepTableSelector` looks for. ``kernel_size`` non-empty: a 2-D convolution
    (``in_features = in_channels·kh·kw``)."""

    in_features: int
    out_features: int
    w_bits: int
    a_bits: int = 8
    a_symmetric: bool = True
    group_size: int = 0
    weight_zero_point: bool = False
    bias: bool = True
    smooth: bool = False
    rank: int = 0
    side_on_quantized: bool = False
    a_shared: bool = False
    dtype: str = "float32"
    side_row_period: int = 0
    a_static: bool = False
    timesteps: int = 0
    split_rows: int = 0
    kernel_size: tuple = ()
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    in_channels: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.w_bits <= 8:
            raise ValueError(f"w_bits must be in [2, 8], got {self.w_bits}")
        if not 2 <= self.a_bits <= 8:
            raise ValueError(f"a_bits must be in [2, 8], got {self.a_bits}")
        if self.group_size:
            step = 64 if self.w_bits <= 4 else 128
            if self.group_size < 0 or self.group_size % step:
                raise ValueError(f"group_size must be 0 (per channel) or a multiple of {step} at w_bits={self.w_bits}, "
                                 f"got {self.group_size}")  # fmt: skip
            if self.weight_zero_point:
                raise ValueError("asymmetric (zero-point) weights are supported with per-channel scales only")
        if not 0 <= self.rank <= 64:
            raise ValueError(f"side-branch rank must be in [0, 64], got {self.rank}")
        if not isinstance(self.timesteps, int) or self.timesteps < 0:
            raise ValueError(f"timesteps must be a non-negative int, got {self.timesteps!r}")
        if self.timesteps and not self.a_static:
            raise ValueError("timesteps (a per-step activation table) needs a_static=True")
        if self.a_static and self.a_shared:
            raise ValueError("a_static and a_shared exclude each other (static vs dynamic activation ranges)")
        if not 0 <= self.split_rows <= self.out_features:
            raise ValueError(f"split_rows must be in [0, out_features={self.out_features}], got {self.split_rows}")
        if self.split_rows and self.group_size:
            raise ValueError("split rows (mixed-width channels) need per-channel weight scales (group_size=0)")
        self.kernel_size = tuple(int(v) for v in self.kernel_size)
        self.stride, self.padding, self.dilation = (tuple(int(v) for v in t) for t in (self.stride, self.padding,
                                                                                          self.dilation))  # fmt: skip
        if self.kernel_size:
            kh, kw = self.kernel_size if len(self.kernel_size) == 2 else (0, 0)
            if min(self.kernel_size) < 1 or self.in_channels * kh * kw != self.in_features:
                raise ValueError(f"a conv spec needs kernel_size (kh, kw) with in_channels·kh·kw == in_features, "
                                 f"got {self.kernel_size}, in_channels={self.in_channels}, "
                                 f"in={self.in_features}")  # fmt: skip
            if any(len(t) != 2 for t in (self.stride, self.padding, self.dilation)):
                raise ValueError("stride, padding and dilation must be pairs")
            if not self.a_static or self.rank:
                raise ValueError("integer convolutions need static activations and no side branch")

    @property
    def packed(self) -> bool:
        return self.w_bits <= 4

    @property
    def rows(self) -> int:
        """Output rows of the GEMM (``out_features`` + the split high-digit rows)."""
        return self.out_features + self.split_rows

    @property
    def is_conv(self) -> bool:
        return bool(self.kernel_size)


def mixed_width_container(channel_bits: torch.Tensor, layout: str = "split") -> tuple[int, torch.Tensor]:
    """Container width and split mask of a mixed-width layer (see module docstring): returns ``(W, split [N] bool)``;
    ``W ≤ 4`` means packed int4. Raises ``ValueError`` for widths the kernels cannot hold (> 9 bits, or < 1)."""
    if layout not in MIXED_LAYOUTS:
        raise ValueError(f"mixed_layout must be one of {MIXED_LAYOUTS}, got {layout!r}")
    cb = torch.as_tensor(channel_bits).long().reshape(-1)
    if cb.numel() == 0:
        raise ValueError("channel_bits is empty")
    lo, hi = int(cb.min()), int(cb.max())
    if lo < 1 or hi > 9:
        raise ValueError(f"channel widths must be in [1, 9] bits for the integer kernels, got [{lo}, {hi}]")
    none = torch.zeros_like(cb, dtype=torch.bool)
    if hi == 9:  # no 9-bit container: always two int8 rows
        return 8, cb == 9
    if hi <= 4:
        return max(hi, 2), none
    if hi == 5 and layout == "split" and int((cb == 5).sum()) < cb.numel():
        return 4, cb == 5
    return hi, none


def _weight_rows(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    w_bits: int,
    group_size: int,
    channel_bits: torch.Tensor | None,
    layout: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, int]:
    """Signed container codes of the GEMM rows ``[N + k, K]`` (int8 values), their scales, signed zero points (``None``
    when symmetric), the split channel indices (``None`` without split rows) and the container width."""
    n, k = codes.shape
    cb = torch.full((n,), int(w_bits), dtype=torch.long, device=codes.device)
    if channel_bits is not None:
        cb = torch.as_tensor(channel_bits).long().reshape(-1).to(codes.device)
        if cb.numel() != n:
            raise ValueError(f"channel_bits must have {n} entries, got {cb.numel()}")
        width, split = mixed_width_container(cb, layout)
    else:
        width, split = int(w_bits), torch.zeros(n, dtype=torch.bool, device=codes.device)
    zp = None
    if zero_point is not None:
        zp = zero_point.detach().float().reshape(n, -1)
        if not bool((zp == 0).all()) and group_size:
            raise ValueError("asymmetric per-group weights (non-zero zero points) are not supported by the "
                             "integer kernels; quantize weights symmetrically or per channel")  # fmt: skip
    half_c = (2 ** (cb - 1)).float()[:, None]
    # asymmetric (unsigned codes in [0, 2^b − 1]) if a zero point is non-zero, or codes exceed the signed range
    asym = zp is not None and (bool((zp != 0).any()) or bool((codes > half_c - 1).any()))
    lo, hi = (torch.zeros_like(half_c), 2 * half_c - 1) if asym else (-half_c, half_c - 1)
    if codes.numel() and (bool((codes < lo).any()) or bool((codes > hi).any())):
        raise ValueError(f"codes outside the range of their channel width ({'asymmetric' if asym else 'symmetric'}, "
                         f"widths {sorted(set(cb.tolist()))})")  # fmt: skip
    scale = scale.detach().float().reshape(n, -1)
    zps = None
    if asym:  # unsigned → signed container; the zero point moves with the codes ((c − z) is unchanged)
        shift = torch.where(split, 2.0**width, 2.0 ** (width - 1)).to(codes.device)
        signed = codes - shift[:, None]
        zps = zp.reshape(n) - shift
    else:
        signed = codes.clone()
    idx = torch.nonzero(split).flatten()
    if not idx.numel():
        return signed, scale, zps, None, width
    high = torch.floor(signed[idx] / 2)
    signed[idx] = signed[idx] - 2 * high  # low digit l ∈ {0, 1}, keeps the channel's zero point and Δ
    rows = torch.cat([signed, high])
    scales = torch.cat([scale, 2 * scale[idx]])
    if zps is not None:
        zps = torch.cat([zps, torch.zeros(idx.numel(), device=zps.device)])
    return rows, scales, zps, idx, width


class QLinearInt(nn.Module):
    """Integer linear layer: activation quantization (dynamic per token, or static per tensor with an optional
    per-step table) + int8/int4 weight GEMM with a fused epilogue.

    Buffers: ``qweight`` (int8 codes ``[R, K]``, or int4 packed ``[R, padded_k(K)/2]``; ``R = out_features +
    split_rows``), ``weight_scale`` (fp32 ``[R]`` or ``[R, groups]``), ``weight_sum`` (``Σ_k ŵ``, fp32 ``[R]``),
    optional ``weight_zp_scaled`` (``scale·zero_point``), ``bias [R]`` (zero on split rows), ``smooth_scale`` (``s``:
    the input is ``x / s``), ``lr_down [r, K]`` / ``lr_up [R, r]``, ``split_index [split_rows]`` (the channel each
    split row adds onto), ``act_scale`` / ``act_zero_point`` (``[max(T, 1)]``: static Δ and signed zero point per
    table row). Output dtype = input dtype. ``spec.a_shared`` reproduces ``per_token_shared`` activation quantization
    (one range per token position shared across the batch, ViDiT-Q/Q-VDiT) for inputs ``[B, ..., K]``.
    :meth:`set_timestep` selects the table row (called by the model's ``StepTableSelector``).
    """

    def __init__(self, spec: IntLinearSpec, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.in_features, self.out_features = spec.in_features, spec.out_features
        rows, k = spec.rows, spec.in_features
        dtype = getattr(torch, spec.dtype)
        wshape = (rows, padded_k(k) // 2) if spec.packed else (rows, k)
        self.register_buffer("qweight", torch.zeros(wshape, dtype=torch.int8, device=device))
        sshape = (rows, -(-k // spec.group_size)) if spec.group_size else (rows,)
        self.register_buffer("weight_scale", torch.ones(sshape, dtype=torch.float32, device=device))
        self.register_buffer("weight_sum", torch.zeros(rows, dtype=torch.float32, device=device))
        wzp = torch.zeros(rows, dtype=torch.float32, device=device) if spec.weight_zero_point else None
        self.register_buffer("weight_zp_scaled", wzp)
        self.register_buffer("bias", torch.zeros(rows, dtype=dtype, device=device) if spec.bias else None)
        self.register_buffer("smooth_scale", torch.ones(spec.in_channels or k, dtype=torch.float32, device=device)
                             if spec.smooth else None)  # fmt: skip
        r = spec.rank
        self.register_buffer("lr_down", torch.zeros(r, k, dtype=dtype, device=device) if r else None)
        self.register_buffer("lr_up", torch.zeros(rows, r, dtype=dtype, device=device) if r else None)
        p = spec.side_row_period
        self.register_buffer("lr_row_gain", torch.ones(p, dtype=torch.float32, device=device) if p else None)
        self.register_buffer("split_index", torch.zeros(spec.split_rows, dtype=torch.long, device=device)
                             if spec.split_rows else None)  # fmt: skip
        t = max(spec.timesteps, 1)
        self.register_buffer("act_scale", torch.ones(t, dtype=torch.float32, device=device) if spec.a_static else None)
        self.register_buffer("act_zero_point", torch.zeros(t, dtype=torch.int32, device=device)
                             if spec.a_static else None)  # fmt: skip
        self._t = 0

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None = None,
        *,
        w_bits: int,
        a_bits: int = 8,
        a_symmetric: bool = True,
        group_size: int = 0,
        bias: torch.Tensor | None = None,
        smooth_scale: torch.Tensor | None = None,
        down: torch.Tensor | None = None,
        up: torch.Tensor | None = None,
        side_on_quantized: bool = False,
        a_shared: bool = False,
        dtype: torch.dtype = torch.float32,
        row_gain: torch.Tensor | None = None,
        channel_bits: torch.Tensor | None = None,
        mixed_layout: str = "split",
        act_scale: torch.Tensor | None = None,
        act_zero_point: torch.Tensor | None = None,
        act_timesteps: int = 0,
        conv: dict | None = None,
    ) -> QLinearInt:
        """Build from integer weight codes ``[N, K]`` and their scale/zero point.

        ``codes`` are either signed (symmetric quantizer: values in [−2^(b−1), 2^(b−1)−1], ``zero_point`` None or all
        zero) or unsigned (asymmetric: values in [0, 2^b − 1] with ``zero_point``); the dequantized weight is
        ``(codes − zero_point)·scale``. ``scale``/``zero_point``: ``[N]`` (or ``[N, 1]``) per channel, or ``[N, G]``
        per group of ``group_size`` input columns (zero points must then be all zero). ``channel_bits [N]``: the
        width of each channel (mixed-width layers; ``w_bits`` is then ignored), stored as ``mixed_layout`` says.

        Static activations: ``act_scale`` / ``act_zero_point`` (the ``UniformQuantizer``'s Δ and *unsigned* zero
        point, ``[max(act_timesteps, 1)]`` rows). ``conv``: ``{kernel_size, stride, padding, dilation, in_channels}``
        → a :class:`QConv2dInt` (``codes`` are the conv weight flattened to ``[O, C·kh·kw]``)."""
        if codes.dim() != 2:
            raise ValueError(f"codes must be [N, K], got {tuple(codes.shape)}")
        n, k = codes.shape
        codes = torch.round(codes.float())
        scale = scale.detach().float().reshape(n, -1)
        if group_size == 0 and scale.shape[1] != 1:
            raise ValueError(f"per-channel scale must have {n} elements, got {tuple(scale.shape)}")
        if group_size and scale.shape[1] != -(-k // group_size):
            raise ValueError(f"per-group scale must be [{n}, {-(-k // group_size)}], got {tuple(scale.shape)}")
        if channel_bits is not None and group_size:
            raise ValueError("mixed-width (channel_bits) weights need per-channel scales (group_size=0)")
        rows, row_scale, zps, split_idx, width = _weight_rows(codes, scale, zero_point, w_bits, group_size,
                                                              channel_bits, mixed_layout)  # fmt: skip
        nsplit = 0 if split_idx is None else split_idx.numel()
        static = act_scale is not None
        if static:
            t = max(int(act_timesteps), 1)
            a_sc = act_scale.detach().float().reshape(-1)
            a_zp = (act_zero_point if act_zero_point is not None else torch.zeros_like(a_sc)).detach().float()
            a_zp = a_zp.reshape(-1)
            if a_sc.numel() != t or a_zp.numel() != t:
                raise ValueError(f"static activation scale/zero point must have {t} rows, got {a_sc.numel()} and "
                                 f"{a_zp.numel()}")  # fmt: skip
            if not bool((a_sc > 0).all()) or not bool(torch.isfinite(a_sc).all()):
                raise ValueError("static activation scales must be positive and finite")
            if not bool((a_zp == torch.round(a_zp)).all()):
                raise ValueError("static activation zero points must be integers (a learned fractional zero point "
                                 "has no integer form)")  # fmt: skip
            lo, hi = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if a_symmetric else (0, 2**a_bits - 1)
            if a_symmetric and bool((a_zp != 0).any()):
                raise ValueError("a symmetric static activation quantizer must have zero points 0")
            if bool((a_zp < min(lo, 0)).any()) or bool((a_zp > hi).any()):
                raise ValueError(f"static activation zero points outside [0, {hi}] for {a_bits}-bit activations")
        elif act_timesteps:
            raise ValueError("act_timesteps needs act_scale (a static activation table)")
        conv = dict(conv or {})
        spec = IntLinearSpec(
            in_features=k, out_features=n, w_bits=width, a_bits=a_bits, a_symmetric=a_symmetric,
            group_size=group_size, weight_zero_point=zps is not None, bias=bias is not None,
            smooth=smooth_scale is not None, rank=0 if down is None else down.shape[0],
            side_on_quantized=side_on_quantized, a_shared=a_shared, dtype=str(dtype).replace("torch.", ""),
            side_row_period=0 if row_gain is None or down is None else row_gain.numel(),
            a_static=static, timesteps=int(act_timesteps) if static else 0, split_rows=nsplit,
            kernel_size=tuple(conv.get("kernel_size", ())), stride=tuple(conv.get("stride", (1, 1))),
            padding=tuple(conv.get("padding", (0, 0))), dilation=tuple(conv.get("dilation", (1, 1))),
            in_channels=int(conv.get("in_channels", 0)),
        )  # fmt: skip
        klass = QConv2dInt if spec.is_conv else cls
        mod = klass(spec, device=codes.device)
        sig = rows.to(torch.int8)
        mod.qweight.copy_(pack_int4(sig) if spec.packed else sig)
        mod.weight_scale.copy_(row_scale.reshape(mod.weight_scale.shape))
        wz = None if zps is None else zps * row_scale.reshape(-1)
        if wz is not None:
            mod.weight_zp_scaled.copy_(wz)
        mod.weight_sum.copy_(
            kref.dequantize_weight(sig, row_scale.reshape(mod.weight_scale.shape), group_size, wz).sum(1)
        )
        if split_idx is not None:
            mod.split_index.copy_(split_idx)
        if bias is not None:
            mod.bias.zero_()
            mod.bias[:n].copy_(bias.detach())
        if smooth_scale is not None:
            mod.smooth_scale.copy_(smooth_scale.detach().float().reshape(-1))
        if down is not None:
            if up is None or down.shape[1] != k or up.shape != (n, down.shape[0]):
                raise ValueError(f"side branch needs down [r, {k}] and up [{n}, r]")
            mod.lr_down.copy_(down.detach())
            mod.lr_up.zero_()
            mod.lr_up[:n].copy_(up.detach())
            if row_gain is not None:
                mod.lr_row_gain.copy_(row_gain.detach().float().reshape(-1))
        if static:
            mod.act_scale.copy_(a_sc)
            shift = 0 if a_symmetric else 2 ** (a_bits - 1)
            mod.act_zero_point.copy_((a_zp - shift).to(torch.int32))
        return mod

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, w_bits: int = 4, a_bits: int = 8, group_size: int = 0, a_symmetric: bool = True
    ) -> QLinearInt:
        """Round-to-nearest symmetric min-max quantization of a float ``nn.Linear`` (for benchmarks and smoke tests;
        calibrated models go through :func:`convert`)."""
        w = linear.weight.detach().float()
        n, k = w.shape
        qmax = 2 ** (w_bits - 1) - 1
        if group_size:
            g = -(-k // group_size)
            wp = torch.zeros(n, g * group_size, device=w.device)
            wp[:, :k] = w
            scale = wp.view(n, g, group_size).abs().amax(-1).clamp_min(1e-8) / qmax
            codes = torch.round(w / scale.repeat_interleave(group_size, 1)[:, :k]).clamp(-qmax - 1, qmax)
        else:
            scale = w.abs().amax(1).clamp_min(1e-8) / qmax
            codes = torch.round(w / scale[:, None]).clamp(-qmax - 1, qmax)
        return cls.from_codes(
            codes, scale, None, w_bits=w_bits, a_bits=a_bits, a_symmetric=a_symmetric, group_size=group_size,
            bias=linear.bias, dtype=linear.weight.dtype,
        )  # fmt: skip

    # ---- inference ----------------------------------------------------------------------------------------------
    def set_timestep(self, index: int) -> None:
        """Select the static activation row used next (per-step tables); ignored without a table."""
        if self.spec.timesteps and not 0 <= index < self.spec.timesteps:
            raise ValueError(f"timestep index must be in [0, {self.spec.timesteps}), got {index}")
        self._t = int(index)

    def weight_codes(self) -> torch.Tensor:
        """Signed int8 codes of the GEMM rows ``[out_features + split_rows, K]`` (unpacked)."""
        return unpack_int4(self.qweight, self.in_features) if self.spec.packed else self.qweight

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight ``[out_features, K]`` the layer computes with (split rows added onto their channels)."""
        w = kref.dequantize_weight(self.weight_codes(), self.weight_scale, self.spec.group_size, self.weight_zp_scaled)
        return self._combine(w.t()).t() if self.spec.split_rows else w

    def _combine(self, y: torch.Tensor) -> torch.Tensor:
        """``[M, N + k]`` GEMM output → ``[M, N]``: the split rows' columns added onto their channels."""
        n = self.out_features
        return y[:, :n].index_add(1, self.split_index, y[:, n:])

    def _row(self) -> int:
        return self._t if self.spec.timesteps else 0

    def _static_act(self, x2: torch.Tensor) -> kernels.QuantizedActivation:
        r = self._row()
        return kernels.quantize_static(x2, self.act_scale[r : r + 1], self.act_zero_point[r : r + 1], self.spec.a_bits,
                                       self.smooth_scale)  # fmt: skip

    def _gemm(self, act: kernels.QuantizedActivation, t: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
        spec = self.spec
        y = kernels.int_linear(
            act, self.qweight, self.weight_scale, in_features=self.in_features, w4=spec.packed,
            group_size=spec.group_size, weight_sum=self.weight_sum, weight_zp_scaled=self.weight_zp_scaled,
            asymmetric_act=not spec.a_symmetric, bias=self.bias, lowrank_t=t, lowrank_up=self.lr_up,
            out_dtype=torch.float32 if spec.split_rows else out_dtype,
        )  # fmt: skip
        return self._combine(y).to(out_dtype) if spec.split_rows else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected input [..., {self.in_features}], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        spec = self.spec
        if (not spec.rank and not spec.weight_zero_point and not spec.split_rows
                and kernels.weight_only_enabled(x2.shape[0], x2.device)):  # fmt: skip
            xs = x2 / self.smooth_scale.to(x2.dtype) if self.smooth_scale is not None else x2  # small M, opt-in
            y = kernels.weight_only_linear(xs, self.qweight, self.weight_scale, in_features=self.in_features,
                                           w4=spec.packed, group_size=spec.group_size, bias=self.bias,
                                           out_dtype=_out_dtype(x))  # fmt: skip
            return y.reshape(*lead, self.out_features)
        t = None
        if spec.a_static:
            act = self._static_act(x2)
        elif spec.a_shared and x.dim() >= 3 and x.shape[0] > 1:
            act = self._quantize_shared(x)
        elif spec.rank and spec.side_on_quantized:  # side branch on x̂, in the quantizer's pass (fp32 t)
            act, t = kernels.quantize_per_token_lowrank(x2, spec.a_bits, spec.a_symmetric, self.smooth_scale,
                                                        self.lr_down)  # fmt: skip
            t = t.to(self.lr_down.dtype)
        else:
            act = kernels.quantize_per_token(x2, spec.a_bits, spec.a_symmetric, self.smooth_scale)
        if spec.rank and t is None:
            if spec.side_on_quantized:  # side branch reads the dequantized (smoothed) activations x̂
                t = kernels.reference.lowrank_on_dequantized_ref(act.codes, act.scale, act.zero_point, self.lr_down)
                t = t.to(self.lr_down.dtype)
            else:  # ... or the smoothed float input x / s
                xs = x2 / self.smooth_scale if self.smooth_scale is not None else x2
                t = xs.to(self.lr_down.dtype) @ self.lr_down.t()
        if spec.rank and spec.side_row_period:  # per-row gain of the low-rank term, periodic in the row index
            p = spec.side_row_period
            if t.shape[0] % p:
                raise ValueError(f"side-branch row gain has period {p}; got {t.shape[0]} rows")
            t = (t.view(-1, p, spec.rank) * self.lr_row_gain.to(t.dtype).view(1, p, 1)).view(-1, spec.rank)
        y = self._gemm(act, t, _out_dtype(x))
        return y.reshape(*lead, self.out_features)

    def _quantize_shared(self, x: torch.Tensor) -> kernels.QuantizedActivation:
        """``per_token_shared``: rows of ``[N, B·K]`` (position-major) through the same kernel, back to ``[B·N, K]``."""
        spec, k, b = self.spec, self.in_features, x.shape[0]
        n = x[0].numel() // k
        xt = x.reshape(b, n, k).transpose(0, 1).reshape(n, b * k)
        smooth = self.smooth_scale.repeat(b) if self.smooth_scale is not None else None
        a = kernels.quantize_per_token(xt, spec.a_bits, spec.a_symmetric, smooth)
        codes = a.codes.view(n, b, k).transpose(0, 1).reshape(b * n, k)
        return kernels.QuantizedActivation(
            codes, a.scale.repeat(b), a.zero_point.repeat(b), codes.sum(dim=-1, dtype=torch.int32)
        )

    def extra_repr(self) -> str:
        s = self.spec
        gran = f"group={s.group_size}" if s.group_size else "per-channel"
        if s.a_static:
            act = f"static per-tensor{f' ({s.timesteps}-step table)' if s.timesteps else ''}"
        else:
            act = f"per-token{'-shared' if s.a_shared else ''}"
        return (f"in={s.in_features}, out={s.out_features}, W{s.w_bits}{'(packed int4)' if s.packed else ''} {gran}"
                f"{' asym' if s.weight_zero_point else ''}{f' +{s.split_rows} split rows' if s.split_rows else ''}, "
                f"A{s.a_bits} {act} {'sym' if s.a_symmetric else 'asym'}"
                f"{', smooth' if s.smooth else ''}{f', side rank {s.rank}' if s.rank else ''}")  # fmt: skip


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32


class QConv2dInt(QLinearInt):
    """Integer 2-D convolution (``groups=1``): static per-tensor activation quantization (channels-last, smoothing per
    input channel), im2col of the int8 codes with zero-point padding (:func:`vqcore.kernels.conv_patches`), then the
    integer GEMM of :class:`QLinearInt` over ``K = C·kh·kw`` (weights ``[O, C·kh·kw]``, the conv weight flattened).
    Input ``[B, C, H, W]``, output ``[B, O, Ho, Wo]`` (contiguous NCHW) in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if x.dim() != 4 or x.shape[1] != spec.in_channels:
            raise ValueError(f"expected input [B, {spec.in_channels}, H, W], got {tuple(x.shape)}")
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation
        ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
        if ho < 1 or wo < 1:
            raise ValueError(f"input {h}x{w} is too small for kernel {kh}x{kw} with padding {ph}x{pw}")
        act = self._static_act(x.permute(0, 2, 3, 1).reshape(-1, c))
        r = self._row()
        codes = act.codes.view(b, h, w, c)
        if ph or pw:  # border = the code of 0.0 (the zero point), built on the device (no host sync)
            zp8 = self.act_zero_point[r : r + 1].to(torch.int8)
            padded = zp8.view(1, 1, 1, 1).expand(b, h + 2 * ph, w + 2 * pw, c).clone()
            padded[:, ph : ph + h, pw : pw + w] = codes
            codes = padded
        patches = conv_patches(codes, (kh, kw), (sh, sw), (0, 0), (dh, dw))
        mp = patches.shape[0]
        xs = self.act_scale[r : r + 1].expand(mp).contiguous()
        xz = self.act_zero_point[r : r + 1].expand(mp).contiguous()
        rowsum = patches.sum(dim=-1, dtype=torch.int32) if spec.weight_zero_point else xz
        y = self._gemm(kernels.QuantizedActivation(patches, xs, xz, rowsum), None, _out_dtype(x))
        return y.view(b, ho, wo, self.out_features).permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels}, {s.out_features}, kernel={s.kernel_size}, stride={s.stride}, padding={s.padding}"
                f"{f', dilation={s.dilation}' if s.dilation != (1, 1) else ''}; " + super().extra_repr())


def _layer_class(spec: IntLinearSpec) -> type[QLinearInt]:
    return QConv2dInt if spec.is_conv else QLinearInt


# ---- conversion of fake-quant models ---------------------------------------------------------------------------------
class Unsupported(ValueError):
    """A quantized layer the integer kernels cannot run (the message names the layer and the reason)."""


def _attr(obj, names, default=None):
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _is_fake_quant_layer(mod: nn.Module) -> bool:
    w = getattr(mod, "weight", None)
    return hasattr(mod, "weight_quantizer") and hasattr(mod, "integer_weight") and isinstance(w, torch.Tensor)


def _is_fake_quant_linear(mod: nn.Module) -> bool:
    """A fake-quant linear in the sense of ``vqcore.quant.QLinear`` (convolutions, with 4-D/5-D weights, are not)."""
    return _is_fake_quant_layer(mod) and mod.weight.dim() == 2


def _is_fake_quant_conv(mod: nn.Module) -> bool:
    """A fake-quant convolution (``vqcore.quant.QConv2d``/``QConv3d``: 4-D/5-D weight, ``stride``/``padding``)."""
    return _is_fake_quant_layer(mod) and mod.weight.dim() in (4, 5) and hasattr(mod, "stride")


def _weight_is_quantized(mod: nn.Module) -> bool:
    wq = getattr(mod, "weight_quantizer", None)
    return wq is not None and bool(getattr(mod, "quant_weight", True)) and bool(_attr(wq, ["enabled"], True))


def _linear_weight(sub) -> torch.Tensor:
    w = sub.weight if isinstance(sub, nn.Module) else sub
    if isinstance(sub, nn.Linear) and sub.bias is not None:
        raise Unsupported("side-branch linears must have no bias")
    return w.detach()


def _time_dependent_layers(qmodel: nn.Module) -> dict[str, str]:
    """Layers whose *weight* quantization changes with the diffusion timestep, with the reason: the integer layers
    hold one set of weight codes, so converting them would silently freeze the row selected last. (Per-step
    *activation* tables convert: the integer layer keeps every row.)"""
    found: dict[str, str] = {}
    for sw_name, sw in qmodel.named_modules():
        names = getattr(sw, "layer_shapes", None)
        ranges = getattr(sw, "ranges", None)
        if type(sw).__name__ == "TimeRangeSwitch" and isinstance(names, dict):
            where = sw_name or "the model"
            rl = [list(r) for r in ranges or ()]
            for lname in names:
                found[lname] = (
                    f"quantized with {len(rl)} vidit-q time ranges {rl} (smoothing vector and weight "
                    f"range switched per timestep by {where}); the integer layer holds one set — "
                    "converting would silently keep the range selected last"
                )
    for name, mod in qmodel.named_modules():
        if name in found:
            continue
        q = getattr(mod, "weight_quantizer", None)
        t = int(getattr(getattr(q, "spec", None), "timesteps", 0) or 0)
        if t:
            found[name] = (
                f"weight_quantizer has a per-timestep step table ({t} rows, QuantSpec(timesteps={t}), selected "
                "by StepTableSelector); the integer layer holds one set of weight codes — converting would "
                "silently keep the row selected last"
            )
    return found


def _static_activation(name: str, aq, a_bits: int) -> dict:
    """``act_scale`` / ``act_zero_point`` / ``act_timesteps`` of a calibrated static per-tensor quantizer."""
    a_gran = str(_attr(aq, ["granularity"], "per_tensor"))
    if a_gran != "per_tensor":
        raise Unsupported(f"{name}: static {a_gran} activation quantization (a range per channel/group) is not "
                          "supported; the integer path runs static per_tensor or dynamic per_token activations")
    scale, zp = getattr(aq, "scale", None), getattr(aq, "zero_point", None)
    if not isinstance(scale, torch.Tensor) or scale.numel() == 0 or not bool(_attr(aq, ["initialized"], True)):
        raise Unsupported(f"{name}: static activation quantizer is not calibrated (no stored scale); run the "
                          "calibration (or one forward pass) before converting")  # fmt: skip
    if getattr(aq, "alpha", None) is not None:
        raise Unsupported(f"{name}: learned (AdaRound) rounding of activations has no integer form")
    t = int(getattr(getattr(aq, "spec", None), "timesteps", 0) or 0)
    rows = max(t, 1)
    if zp is None or zp.numel() == 0:
        zp = torch.zeros_like(scale)
    if scale.numel() != rows or zp.numel() != rows:
        raise Unsupported(f"{name}: static activation scale has shape {tuple(scale.shape)}, expected one value "
                          f"per tensor{f' per table row ({t} rows)' if t else ''}")  # fmt: skip
    scale, zp = scale.detach().float(), zp.detach().float()
    return {"act_scale": scale.reshape(rows), "act_zero_point": zp.reshape(rows), "act_timesteps": t,
            "row": int(getattr(aq, "_t", 0) or 0) if t else 0}  # fmt: skip


def _conv_geometry(name: str, mod: nn.Module) -> dict:
    w = mod.weight
    if w.dim() != 4:
        raise Unsupported(f"{name}: {w.dim() - 2}-D convolutions are not supported by the integer path (Conv2d only, "
                          "via im2col) — keep it fake-quant (convert(..., strict=False)) or skip it")  # fmt: skip
    if int(getattr(mod, "groups", 1)) != 1:
        raise Unsupported(f"{name}: grouped convolutions (groups={mod.groups}) are not supported by the integer path")
    if getattr(mod, "side_branch", None) is not None:
        raise Unsupported(f"{name}: a side branch on a convolution is not supported by the integer path")
    kernel = tuple(int(v) for v in w.shape[2:])

    def pair(v):
        return (int(v), int(v)) if isinstance(v, int) else tuple(int(u) for u in v)

    stride, dilation = pair(mod.stride), pair(mod.dilation)
    padding = mod.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same" and all(d * (k - 1) % 2 == 0 for d, k in zip(dilation, kernel)):
            padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
        else:
            raise Unsupported(f"{name}: padding={padding!r} (asymmetric) is not supported by the integer path")
    return {"kernel_size": kernel, "stride": stride, "padding": pair(padding), "dilation": dilation,
            "in_channels": int(w.shape[1])}  # fmt: skip


def _convert_one(name: str, mod: nn.Module, mixed_layout: str = "split") -> QLinearInt:
    wq = mod.weight_quantizer
    aq = getattr(mod, "input_quantizer", None)
    is_conv = mod.weight.dim() != 2
    conv = _conv_geometry(name, mod) if is_conv else None
    w_bits = int(wq.bits)
    channel_bits = getattr(wq, "channel_bits", None)
    if channel_bits is not None:
        channel_bits = channel_bits.detach().long().reshape(-1)
        w_bits = int(channel_bits.max())
    if w_bits > (9 if channel_bits is not None else 8):
        raise Unsupported(f"{name}: weight bits {w_bits} > 8 cannot use the integer kernels")
    w_gran = str(_attr(wq, ["granularity"], "per_channel"))
    if w_gran not in ("per_channel", "per_group", "per_tensor"):
        raise Unsupported(
            f"{name}: weight granularity {w_gran!r} is not supported (per_channel, per_group, per_tensor)"
        )
    group_size = int(_attr(wq, ["group_size"], 0) or 0) if w_gran == "per_group" else 0
    if group_size and group_size % (64 if w_bits <= 4 else 128):
        raise Unsupported(f"{name}: group_size {group_size} must be a multiple of {64 if w_bits <= 4 else 128} at "
                          f"{w_bits}-bit weights")  # fmt: skip
    if aq is None or not getattr(mod, "quant_input", True) or not _attr(aq, ["enabled"], True):
        raise Unsupported(f"{name}: activations are not quantized (weight-only quantization); the integer kernels need "
                          "quantized inputs — keep it fake-quant/float (convert(..., strict=False))")  # fmt: skip
    a_bits = int(aq.bits)
    if a_bits > 8:
        raise Unsupported(f"{name}: activation bits {a_bits} > 8 are not supported (int8 storage)")
    a_gran = str(_attr(aq, ["granularity"], "per_token"))
    static = {}
    if bool(_attr(aq, ["dynamic"], True)):
        if a_gran not in ("per_token", "per_token_shared"):
            raise Unsupported(f"{name}: dynamic activation granularity {a_gran!r} is not supported (per_token, "
                              "per_token_shared)")  # fmt: skip
        if is_conv:
            raise Unsupported(f"{name}: a convolution with dynamic {a_gran} activations is not supported (integer "
                              "convolutions use static per-tensor activations)")  # fmt: skip
    else:
        static = _static_activation(name, aq, a_bits)
    side = getattr(mod, "side_branch", None)
    down = up = row_gain = None
    on_q = False
    if side is not None:
        if not (hasattr(side, "down") and hasattr(side, "up")):
            raise Unsupported(f"{name}: side branch {type(side).__name__} is not a plain low-rank up(down(·))")
        try:
            down, up = _linear_weight(side.down), _linear_weight(side.up)
        except Unsupported as e:
            raise Unsupported(f"{name}: {e}") from None
        if down.shape[0] > 64:
            raise Unsupported(f"{name}: side-branch rank {down.shape[0]} > 64")
        on_q = bool(_attr(side, ["on_quantized_input", "on_quantized"], True))  # QLinear's default: x̂
        if callable(getattr(side, "row_gain", None)):
            row_gain = side.row_gain().detach().float()
    codes, scale, zp = mod.integer_weight()
    n = codes.shape[0]
    codes = codes.reshape(n, -1)
    scale = scale.detach().float()
    if w_gran == "per_tensor":
        scale = scale.reshape(-1)[:1].expand(n).contiguous()
        if zp is not None:
            zp = zp.detach().float().reshape(-1)[:1].expand(n).contiguous()
    smooth = getattr(mod, "smooth_scale", None)
    dtype = mod.weight.dtype if mod.weight.dtype.is_floating_point else torch.float32
    row = static.pop("row", 0)
    try:
        new = QLinearInt.from_codes(
            codes, scale, zp, w_bits=w_bits, a_bits=a_bits, a_symmetric=bool(_attr(aq, ["symmetric"], True)),
            group_size=group_size, bias=getattr(mod, "bias", None), smooth_scale=smooth,
            down=None if down is None else down.to(dtype), up=None if up is None else up.to(dtype),
            side_on_quantized=on_q, a_shared=a_gran == "per_token_shared" and not static, dtype=dtype,
            row_gain=row_gain, channel_bits=channel_bits, mixed_layout=mixed_layout, conv=conv, **static,
        )  # fmt: skip
    except ValueError as e:
        raise Unsupported(f"{name}: {e}") from None
    new._t = row
    return new.to(mod.weight.device)


def _step_selectors(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == "StepTableSelector"]


ATTENTION_MODES = (None, "int8")


def convert(
    qmodel: nn.Module, *, skip: tuple[str, ...] = (), strict: bool = True, mixed_layout: str = "split",
    attention: str | None = None,
) -> nn.Module:  # fmt: skip
    """Replace every fake-quant linear and 2-D convolution of ``qmodel`` (``vqcore.quant.QLinear``/``QConv2d`` or any
    module with the same contract: ``weight_quantizer``, ``input_quantizer``, ``integer_weight()``) by a
    :class:`QLinearInt` / :class:`QConv2dInt`, in place, and return the model. Layers named in ``skip`` and layers
    whose weights are not quantized stay as they are. Mixed-width (OMQ) layers are stored as ``mixed_layout`` says
    (``"split"`` / ``"padded"``, module docstring). The model's ``StepTableSelector`` (per-step activation tables) is
    re-bound to the new layers, so sampling selects their rows per timestep as before.

    A layer the kernels cannot run (no activation quantization, static per-channel activations or an uncalibrated
    static quantizer, asymmetric per-group weights, an unsupported group size, a side branch that is not plain
    low-rank, 3-D / grouped convolutions, timestep-dependent *weights*: vidit-q ``timeranges`` (``TimeRangeSwitch``)
    or weight step tables) raises :class:`Unsupported` (a ``ValueError`` naming the layer) before anything is
    swapped — or, with ``strict=False``, stays fake-quant with a logged warning.

    ``attention="int8"``: the attention of every diffusers-style attention module (one with a ``processor``) runs
    the SageAttention-style int8 kernel (:func:`vqcore.kernels.int8_attention`: smoothed K, per-block int8 Q·Kᵀ,
    16-bit P·V), replacing fake-quant attention products if the model had them; masked/causal calls keep the float
    SDPA. ``save_converted`` records it and ``load_converted`` re-installs it."""
    if not isinstance(qmodel, nn.Module):
        raise TypeError(f"qmodel must be an nn.Module, got {type(qmodel).__name__}")
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    if mixed_layout not in MIXED_LAYOUTS:
        raise ValueError(f"mixed_layout must be one of {MIXED_LAYOUTS}, got {mixed_layout!r}")
    if _is_fake_quant_linear(qmodel) or _is_fake_quant_conv(qmodel):
        raise ValueError("qmodel is itself a single quantized layer; wrap it in a container module to convert it")
    new: dict[str, QLinearInt] = {}
    timed = _time_dependent_layers(qmodel)
    for name, mod in qmodel.named_modules():
        if not name or name in skip or not _weight_is_quantized(mod):
            continue
        if not (_is_fake_quant_linear(mod) or _is_fake_quant_conv(mod)):
            continue
        try:
            if name in timed:
                raise Unsupported(f"{name}: {timed[name]}")
            new[name] = _convert_one(name, mod, mixed_layout)  # validate every layer before swapping any
        except Unsupported as e:
            if strict:
                raise
            logger.warning("kept fake-quant: %s", e)
    for name, mod in new.items():
        _set_submodule(qmodel, name, mod)
    if new:
        for _, sel in _step_selectors(qmodel):
            sel.bind(qmodel)  # the selector's pre-hook now drives the integer layers' tables
    logger.info("converted %d fake-quant layers to integer layers (%d convolutions)", len(new),
                sum(isinstance(m, QConv2dInt) for m in new.values()))  # fmt: skip
    if attention == "int8":
        logger.info("int8 attention in %d attention modules", kernels.use_int8_attention(qmodel))
    return qmodel


def _set_submodule(root: nn.Module, name: str, mod: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, mod)


# ---- save / load -----------------------------------------------------------------------------------------------------
FORMAT = "vqcore-int/2"
_READS = ("vqcore-int/1", FORMAT)


def save_converted(model: nn.Module, directory: str | os.PathLike, *, format: str = "vqcore") -> Path:
    """Save a converted model: ``model.safetensors`` (its state dict, packed int weights and activation tables
    included) and ``int_layers.json`` (the :class:`IntLinearSpec` of every integer layer, and the step selector's
    schedule when the model has one). Written atomically per file.

    ``format="diffusers"`` (a diffusers model): a diffusers folder instead — ``config.json`` with a
    ``quantization_config`` (``quant_method: "vqcore"``) and ``diffusion_pytorch_model.safetensors`` — that
    ``<ModelClass>.from_pretrained`` loads after :func:`vqcore.integrations.diffusers.register` (see
    :mod:`vqcore.integrations.diffusers`)."""
    if format == "diffusers":
        from .integrations.diffusers import save_pretrained

        return save_pretrained(model, directory)
    if format != "vqcore":
        raise ValueError(f"format must be 'vqcore' or 'diffusers', got {format!r}")
    from safetensors.torch import save_file

    d = Path(directory)
    specs = {n: asdict(m.spec) for n, m in model.named_modules() if isinstance(m, QLinearInt)}
    if not specs:
        raise ValueError("model has no QLinearInt layers; call vqcore.convert(model) first")
    d.mkdir(parents=True, exist_ok=True)
    meta: dict = {"format": FORMAT, "layers": specs}
    sels = _step_selectors(model)
    if sels:
        meta["step_tables"] = {"module": sels[0][0], "timesteps": [float(t) for t in sels[0][1].timesteps]}
    if any(isinstance(m, kernels.Int8SDPA) for m in model.modules()):
        meta["attention"] = "int8"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    os.close(fd)
    save_file(state, tmp)
    os.replace(tmp, d / "model.safetensors")
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, d / "int_layers.json")
    return d


def load_converted(model: nn.Module, directory: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Rebuild a converted model from ``directory``: ``model`` is a float model of the same architecture (its linears
    and convolutions named in ``int_layers.json`` are replaced by empty integer layers), then the saved state dict is
    loaded, and a saved step schedule re-attaches a ``StepTableSelector`` (per-step activation tables follow the
    call's timestep again)."""
    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / "int_layers.json").read_text())
    if meta.get("format") not in _READS:
        raise ValueError(f"{d}: not a vqcore converted model (format {meta.get('format')!r}, expected one of "
                         f"{list(_READS)})")  # fmt: skip
    known = {f.name for f in fields(IntLinearSpec)}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, spec in meta["layers"].items():
        extra = sorted(set(spec) - known)
        if extra:
            raise ValueError(f"{d}: layer {name} has unknown spec fields {extra} (saved by a newer vqcore?)")
        s = IntLinearSpec(**spec)
        _set_submodule(model, name, _layer_class(s)(s, device=device))
    state = load_file(str(d / "model.safetensors"), device=str(device))
    model.load_state_dict(state, strict=strict)
    tables = meta.get("step_tables")
    if tables:
        from .methods.timerange import attach_step_tables

        existing = _step_selectors(model)
        if existing:
            existing[0][1].bind(model)
        else:
            attach_step_tables(model, tables["timesteps"])
    if meta.get("attention") == "int8":
        kernels.use_int8_attention(model)
    return model


def _bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def int_weight_bytes(model: nn.Module, *, convs: bool = True) -> int:
    """Bytes of the weight storage of the model's linear (and, with ``convs``, 2-D/3-D convolution) layers: the
    ``weight`` of float and fake-quant layers; ``qweight`` + ``weight_scale`` + ``weight_sum`` (+ ``weight_zp_scaled``,
    ``split_index`` and the static activation table ``act_scale``/``act_zero_point``) of integer layers. Biases are
    excluded."""
    total = 0
    for m in model.modules():
        if isinstance(m, QLinearInt):
            if convs or not m.spec.is_conv:
                total += _bytes(m.qweight, m.weight_scale, m.weight_zp_scaled, m.weight_sum, m.split_index,
                                m.act_scale, m.act_zero_point)  # fmt: skip
        elif isinstance(getattr(m, "weight", None), torch.Tensor):
            is_lin = isinstance(m, nn.Linear) or _is_fake_quant_linear(m)
            is_conv = isinstance(m, (nn.Conv2d, nn.Conv3d)) or _is_fake_quant_conv(m)
            if is_lin or (convs and is_conv):
                total += _bytes(m.weight)
    return total


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weight storage of every linear layer: ``weight`` of float ``nn.Linear``/fake-quant linears, and
    ``qweight`` + ``weight_scale`` (+ ``weight_zp_scaled``, ``weight_sum``, activation table) of :class:`QLinearInt`
    (biases and convolutions excluded; :func:`int_weight_bytes` counts convolutions too)."""
    return int_weight_bytes(model, convs=False)

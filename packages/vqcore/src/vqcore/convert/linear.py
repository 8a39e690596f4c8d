"""The integer linear layer :class:`QLinearInt`: its buffers, how it is built from an :class:`~.spec.IntWeights` /
:class:`~.spec.ActQuant` / :class:`~.spec.LayerExtras` triple, and its forward pass (activation quantization, integer
GEMM with a fused epilogue, split rows added onto their channels)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import kernels
from ..kernels import reference as kref
from ..kernels.packing import pack_int4, padded_k, unpack_int4
from .layout import weight_rows
from .spec import ActQuant, IntLinearSpec, IntWeights, LayerExtras

__all__ = ["QLinearInt"]

# from_codes keyword → (object, field) of the build triple (the keyword API predates the objects)
_WEIGHT_KW = {"w_bits": "bits", "group_size": "group_size", "channel_bits": "channel_bits", "mixed_layout": "layout"}
_ACT_KW = {"a_bits": "bits", "a_symmetric": "symmetric", "a_shared": "shared", "act_scale": "scale",
           "act_zero_point": "zero_point", "act_timesteps": "timesteps"}  # fmt: skip


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
    def build(cls, weights: IntWeights, act: ActQuant | None = None, extras: LayerExtras | None = None) -> QLinearInt:
        """Build the layer (a :class:`~vqcore.convert.QConv2dInt` when ``extras.conv`` is given) from integer weight
        codes, the activation quantization and the rest (bias, smoothing, side branch, conv geometry)."""
        act = act if act is not None else ActQuant()
        ex = extras if extras is not None else LayerExtras()
        codes = weights.codes
        n, k = codes.shape
        ex.check(n, k)
        rows, row_scale, zps, split_idx, width = weight_rows(codes, weights.scale, weights.zero_point, weights.bits,
                                                             weights.group_size, weights.channel_bits,
                                                             weights.layout)  # fmt: skip
        spec = _layer_spec(n, k, width, weights.group_size, zps is not None,
                           0 if split_idx is None else split_idx.numel(), act, ex)  # fmt: skip
        from .conv import QConv2dInt  # the conv layer subclasses this one

        klass = QConv2dInt if spec.is_conv else cls
        mod = klass(spec, device=codes.device)
        mod._fill_weights(rows, row_scale, zps, split_idx, weights.group_size)
        mod._fill_extras(ex, act, n)
        return mod

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None,
                   **options) -> QLinearInt:  # fmt: skip
        """:meth:`build` with flat keywords (``w_bits`` (required), ``group_size``, ``channel_bits``, ``mixed_layout``;
        ``a_bits``, ``a_symmetric``, ``a_shared``, ``act_scale``, ``act_zero_point``, ``act_timesteps``; the fields
        of :class:`~.spec.LayerExtras`), kept for callers written before the build objects."""
        if "w_bits" not in options:
            raise TypeError("from_codes() needs the keyword w_bits")
        w = {_WEIGHT_KW[key]: options.pop(key) for key in list(options) if key in _WEIGHT_KW}
        a = {_ACT_KW[key]: options.pop(key) for key in list(options) if key in _ACT_KW}
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(LayerExtras)})
        if unknown:
            raise TypeError(f"from_codes() got unexpected keywords {unknown}")
        return cls.build(IntWeights(codes, scale, zero_point, **w), ActQuant(**a), LayerExtras(**options))

    def _fill_weights(self, rows: torch.Tensor, row_scale: torch.Tensor, zps: torch.Tensor | None,
                      split_idx: torch.Tensor | None, group_size: int) -> None:  # fmt: skip
        sig = rows.to(torch.int8)
        self.qweight.copy_(pack_int4(sig) if self.spec.packed else sig)
        self.weight_scale.copy_(row_scale.reshape(self.weight_scale.shape))
        wz = None if zps is None else zps * row_scale.reshape(-1)
        if wz is not None:
            self.weight_zp_scaled.copy_(wz)
        self.weight_sum.copy_(
            kref.dequantize_weight(sig, row_scale.reshape(self.weight_scale.shape), group_size, wz).sum(1)
        )
        if split_idx is not None:
            self.split_index.copy_(split_idx)

    def _fill_extras(self, ex: LayerExtras, act: ActQuant, n: int) -> None:
        if ex.bias is not None:
            self.bias.zero_()
            self.bias[:n].copy_(ex.bias.detach())
        if ex.smooth_scale is not None:
            self.smooth_scale.copy_(ex.smooth_scale.detach().float().reshape(-1))
        if ex.down is not None:
            self.lr_down.copy_(ex.down.detach())
            self.lr_up.zero_()
            self.lr_up[:n].copy_(ex.up.detach())
            if ex.row_gain is not None:
                self.lr_row_gain.copy_(ex.row_gain.detach().float().reshape(-1))
        if act.static:
            self.act_scale.copy_(act.scale)
            shift = 0 if act.symmetric else 2 ** (act.bits - 1)
            self.act_zero_point.copy_((act.zero_point - shift).to(torch.int32))

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
        return cls.build(IntWeights(codes, scale, None, bits=w_bits, group_size=group_size),
                         ActQuant(bits=a_bits, symmetric=a_symmetric),
                         LayerExtras(bias=linear.bias, dtype=linear.weight.dtype))  # fmt: skip

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


def _layer_spec(n: int, k: int, width: int, group_size: int, weight_zp: bool, nsplit: int, act: ActQuant,
                ex: LayerExtras) -> IntLinearSpec:  # fmt: skip
    """The :class:`IntLinearSpec` of a layer built from the given parts."""
    conv = dict(ex.conv or {})
    return IntLinearSpec(
        in_features=k, out_features=n, w_bits=width, a_bits=act.bits, a_symmetric=act.symmetric,
        group_size=group_size, weight_zero_point=weight_zp, bias=ex.bias is not None,
        smooth=ex.smooth_scale is not None, rank=0 if ex.down is None else ex.down.shape[0],
        side_on_quantized=ex.side_on_quantized, a_shared=act.shared, dtype=str(ex.dtype).replace("torch.", ""),
        side_row_period=0 if ex.row_gain is None or ex.down is None else ex.row_gain.numel(),
        a_static=act.static, timesteps=int(act.timesteps) if act.static else 0, split_rows=nsplit,
        kernel_size=tuple(conv.get("kernel_size", ())), stride=tuple(conv.get("stride", (1, 1))),
        padding=tuple(conv.get("padding", (0, 0))), dilation=tuple(conv.get("dilation", (1, 1))),
        in_channels=int(conv.get("in_channels", 0)),
    )  # fmt: skip

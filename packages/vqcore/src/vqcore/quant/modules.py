"""Fake-quantized modules: ``QLinear``, ``QConv2d``/``QConv3d`` and ``QMatMul``.

A quantized linear computes (ViDiT-Q / Q-VDiT ``QuantLayer``; MPQ-DM/EfficientDM ``QuantModule``)::

    x̂ = Q_a(x / s)                          input quantizer (dynamic per-token or static per-tensor), smoothing s
    Ŵ = Q_w(W · s + adapter())             weight quantizer; ``weight_adapter`` (e.g. Q-VDiT/EfficientDM's rank-32
                                            LoRA) is added *inside* the quantizer, so it merges into the integer weight
    y = x̂ Ŵᵀ + b + side_branch(x̂ or x)    optional low-rank branch *after* quantization (Q-VDiT's rank-1 TQE term)

Contract used by :mod:`vqcore.convert` (integer kernels) and the method recipes:

- ``weight``, ``bias``; ``weight_quantizer`` / ``input_quantizer`` (:class:`UniformQuantizer`, with ``bits``,
  ``symmetric``, ``granularity``, ``group_size``, ``dynamic``, ``enabled``);
- ``smooth_scale``: ``None`` or a ``[in_features]`` tensor;
- ``weight_adapter``: ``None`` or a module whose ``forward()`` returns a ``[out, in]`` weight delta;
- ``side_branch``: ``None`` or a module with ``down`` ``[r, in]`` and ``up`` ``[out, r]`` (``nn.Linear``s) and a
  boolean ``on_quantized_input``; called as ``side_branch(x̂ or x)``;
- ``quantized_weight()`` → the dequantized weight the forward uses; ``integer_weight()`` → ``(codes [out, in], Δ, zp)``
  with Δ, zp ``[out]`` per channel, ``[out, groups]`` per group or scalar per tensor, such that
  ``(codes − zp) · Δ == quantized_weight()``.

Set ``quant_weight`` / ``quant_input`` to False to run a module in floating point (e.g. to cache FP outputs). With
both off and no smoothing, adapter or side branch the layer calls ``F.linear(x, W, b)`` on its own weight — what the
general path computes, bit for bit, without its float32 copy of ``W``.

Training memory (``recompute``): when a module's forward builds an autograd graph (a trainable quantizer step, adapter
or side branch, or an input that requires grad) and ``recompute`` is on, the forward runs under
``torch.utils.checkpoint`` (non-reentrant). Autograd then keeps only the layer's input (in the model's dtype; the
weight, Δ, zp and adapters are the module's own tensors) instead of the float32 ``W · s + BA``, ``W / Δ``, the clamp
mask, ``q − zp`` and the rounded ``Ŵ`` (≈ 7× the bf16 weight per layer), and recomputes them layer by layer in the
backward pass. The backward runs the same operations on the same recomputed values, so the gradients equal the plain
autograd path's bit for bit (``tests/test_vqcore_recompute.py``); the cost is one more forward of the layer per step.
The optimisation engine (:func:`vqcore.recon.optimize`) switches it on while it trains (``ReconConfig.recompute``).
On CPU with glibc, the recomputing layers also return the freed temporaries to the system after their forward and
before their backward (:mod:`vqcore.quant.heap`: ``malloc_trim``; values are unchanged).

Dtypes: a module of a bf16/fp16 model takes and returns the model's dtype and multiplies in it; the quantizers work in
float32 (``x.float() / s``, ranges, ``round(· / Δ)``, ``(q − zp)·Δ``; ``W.float() · s``), their Δ / zp, the smoothing
vector and trainable adapters are float32, and ``x̂`` / ``Ŵ`` are rounded to the model's dtype just before the matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .heap import release_freed_memory
from .quantizer import QuantSpec, UniformQuantizer

__all__ = ["QLinear", "QConv2d", "QConv3d", "QMatMul", "QuantModule", "LowRankBranch", "register_module_type",
           "MODULE_TYPES"]

MODULE_TYPES: dict[str, type[nn.Module]] = {}


def register_module_type(cls: type[nn.Module]) -> type[nn.Module]:
    """Make an adapter / side-branch class restorable by ``vqcore.load``: it needs ``vq_describe() -> dict`` (JSON
    constructor arguments) and a classmethod ``vq_build(desc) -> module``. Methods register their own classes."""
    if not (hasattr(cls, "vq_describe") and hasattr(cls, "vq_build")):
        raise TypeError(f"{cls.__name__} needs vq_describe() and a classmethod vq_build(desc)")
    MODULE_TYPES[cls.__name__] = cls
    return cls


@register_module_type
class LowRankBranch(nn.Module):
    """``up(down(x))``: a rank-``r`` side branch (``down``: in→r, ``up``: r→out), zero-initialised on ``up`` so it
    starts as the identity correction."""

    def __init__(self, in_features: int, out_features: int, rank: int, on_quantized_input: bool = True):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        self.on_quantized_input = on_quantized_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def vq_describe(self) -> dict:
        return {"in_features": self.down.in_features, "out_features": self.up.out_features,
                "rank": self.down.out_features, "on_quantized_input": self.on_quantized_input}

    @classmethod
    def vq_build(cls, desc: dict) -> LowRankBranch:
        return cls(desc["in_features"], desc["out_features"], desc["rank"], desc["on_quantized_input"])


def _release_before_backward(grad: torch.Tensor) -> None:
    release_freed_memory()  # the previous layer's backward temporaries; returns None: the gradient is unchanged


class QuantModule(nn.Module):
    """Shared machinery of the quantized weight layers."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_quant(self, w_spec: QuantSpec | None, a_spec: QuantSpec | None) -> None:
        self.weight_quantizer = UniformQuantizer(w_spec) if w_spec is not None else None
        self.input_quantizer = UniformQuantizer(a_spec) if a_spec is not None else None
        self.register_buffer("smooth_scale", None)
        self.weight_adapter: nn.Module | None = None
        self.side_branch: nn.Module | None = None
        self.quant_weight = w_spec is not None
        self.quant_input = a_spec is not None
        self.fp_forward = False  # vqcore.quant.full_precision: compute the original float op (the FP teacher)
        self.recompute = False  # keep only the input for backward; recompute Ŵ, x̂ there (module docstring)

    def _plain(self, x: torch.Tensor) -> bool:
        """Both quantizers off and nothing that changes the float op: the general forward would compute exactly
        ``op(x, W, b)`` (``x.float()`` and ``W.float()`` cast back to their own dtype are the same tensors)."""
        return (not (self.quant_weight and self.weight_quantizer is not None)
                and not (self.quant_input and self.input_quantizer is not None) and self.smooth_scale is None
                and self.weight_adapter is None and self.side_branch is None and x.dtype == self.weight.dtype)

    def _recompute_active(self, x: torch.Tensor) -> bool:
        return self.recompute and torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _run(self, fn, x: torch.Tensor) -> torch.Tensor:
        if not self._recompute_active(x):
            return fn(x)
        y = checkpoint(fn, x, use_reentrant=False)
        if x.device.type == "cpu":  # glibc keeps the freed temporaries in its heap: give them back (vqcore.quant.heap)
            release_freed_memory()
            if y.requires_grad:
                y.register_hook(_release_before_backward)
        return y

    def set_smooth_scale(self, scale: torch.Tensor | None) -> None:
        """Set the per-input-channel smoothing vector ``s`` (``x / s``, ``W · s``); resets the weight quantizer's
        range so it is re-initialised on the smoothed weight."""
        if scale is not None:
            scale = scale.detach().to(self.weight.device, torch.float32).reshape(-1)
            if scale.numel() != self.weight.shape[1]:
                raise ValueError(f"smooth scale must have {self.weight.shape[1]} entries, got {scale.numel()}")
            if (scale <= 0).any():
                raise ValueError("smooth scale must be positive")
        self._buffers["smooth_scale"] = scale
        if self.weight_quantizer is not None:
            self.weight_quantizer.initialized = False

    def _scale_shape(self) -> tuple[int, ...]:
        return (1, -1) + (1,) * (self.weight.ndim - 2)

    def effective_weight(self) -> torch.Tensor:
        """``W · s + adapter()`` before quantization; float32 whatever the model's dtype (the weight quantizer's
        ranges and codes are computed in float32, the forward casts ``Ŵ`` to the input's dtype)."""
        w = self.weight.float()
        if self.smooth_scale is not None:
            w = w * self.smooth_scale.float().view(self._scale_shape())
        if self.weight_adapter is not None:
            w = w + self.weight_adapter().float().reshape(w.shape)
        return w

    def effective_weight_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` (output channels) of :meth:`effective_weight`, equal to its slice element for element,
        computed without the whole float32 tensor (the weight adapter's product, if any, is computed whole)."""
        w = self.weight[start:stop].float()
        if self.smooth_scale is not None:
            w = w * self.smooth_scale.float().view(self._scale_shape())
        if self.weight_adapter is not None:
            w = w + self.weight_adapter().float().reshape(self.weight.shape)[start:stop]
        return w

    @torch.no_grad()
    def calibrate_weight(self, timestep: int | None = None) -> None:
        """``weight_quantizer.calibrate(effective_weight())`` — the same Δ, zp — searching row-separable ranges on
        row chunks of the smoothed weight, so no float32 copy of the whole weight is made (subclassed quantizers with
        their own ``calibrate``, e.g. MPQ-DM's OMQ, get the whole tensor)."""
        wq = self.weight_quantizer
        if wq is None:
            raise RuntimeError("this layer has no weight quantizer")
        if type(wq).calibrate is not UniformQuantizer.calibrate or self.weight_adapter is not None:
            wq.calibrate(self.effective_weight().detach(), timestep)
            return
        wq.calibrate_rows(self.effective_weight_rows, self.weight.shape[0], self.weight[0].numel(),
                          self.weight.device, timestep)

    def quantized_weight(self) -> torch.Tensor:
        w = self.effective_weight()
        if not self.quant_weight or self.weight_quantizer is None:
            return w
        return self.weight_quantizer(w)

    @torch.no_grad()
    def integer_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.weight_quantizer is None:
            raise RuntimeError("this layer has no weight quantizer")
        w = self.effective_weight().detach()
        codes, scale, zp = self.weight_quantizer.quantize_codes(w)
        out = w.shape[0]
        codes = codes.reshape(out, -1)
        g = self.weight_quantizer.granularity
        if g == "per_channel":
            scale, zp = scale.reshape(out), zp.reshape(out)
        elif g == "per_group":
            scale, zp = scale.reshape(out, -1), zp.reshape(out, -1)
        else:
            scale, zp = scale.reshape(()), zp.reshape(())
        return codes, scale, zp

    def _side(self, x_in: torch.Tensor, x_hat: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """The side branch on ``x̂`` or ``x / s``, run in the branch's own dtype (its trainable parameters stay fp32
        in a bf16/fp16 model) and returned in ``dtype``."""
        if self.side_branch is None:
            return None
        inp = x_hat if getattr(self.side_branch, "on_quantized_input", True) else x_in
        p = next(self.side_branch.parameters(), None)
        out = self.side_branch(inp if p is None else inp.to(p.dtype))
        return out.to(dtype)

    def _quantize_input(self, x: torch.Tensor, smooth_view: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x / s, x̂)``, both in ``x``'s dtype. In a bf16/fp16 model the division and the quantizer run in float32
        (``x.float() / s``, codes ``round(· / Δ)`` and ``(q − zp)·Δ`` as the integer kernels compute them) and only
        ``x̂`` is rounded back to the model's dtype; in float32 this is the plain computation, bit for bit."""
        xf = x.float()
        if self.smooth_scale is not None:
            xf = xf / self.smooth_scale.float().view(smooth_view)
        x_hat = self.input_quantizer(xf) if self.quant_input and self.input_quantizer is not None else xf
        return xf.to(x.dtype), x_hat.to(x.dtype)


class QLinear(QuantModule):
    """Fake-quantized ``nn.Linear`` (see module docstring). Built from an existing linear with :meth:`from_float`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, w_spec: QuantSpec | None = None,
                 a_spec: QuantSpec | None = None, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self._init_quant(w_spec, a_spec)

    @classmethod
    def from_float(cls, linear: nn.Linear, w_spec: QuantSpec | None, a_spec: QuantSpec | None) -> QLinear:
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, w_spec, a_spec,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        mod.weight = linear.weight
        mod.bias = linear.bias
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp_forward or self._plain(x):
            return F.linear(x, self.weight, self.bias)
        return self._run(self._quant_forward, x)

    def _quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in, x_hat = self._quantize_input(x, (-1,))
        y = F.linear(x_hat, self.quantized_weight().to(x.dtype), self.bias)
        side = self._side(x_in, x_hat, y.dtype)
        return y if side is None else y + side

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class _QConvNd(QuantModule):
    _conv = staticmethod(F.conv2d)

    def __init__(self, conv: nn.Module, w_spec: QuantSpec | None, a_spec: QuantSpec | None):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if getattr(conv, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"only zero padding is supported, got padding_mode={conv.padding_mode!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self._init_quant(w_spec, a_spec)

    @classmethod
    def from_float(cls, conv: nn.Module, w_spec: QuantSpec | None, a_spec: QuantSpec | None):
        return cls(conv, w_spec, a_spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp_forward or self._plain(x):
            return self._conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return self._run(self._quant_forward, x)

    def _quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth_scale is not None and self.groups != 1:
            raise ValueError("smoothing scales are only supported for convolutions with groups=1")
        x_in, x_hat = self._quantize_input(x, (1, -1, *([1] * (x.ndim - 2))))
        y = self._conv(x_hat, self.quantized_weight().to(x.dtype), self.bias, self.stride, self.padding,
                       self.dilation, self.groups)
        side = self._side(x_hat, x_hat, y.dtype)
        return y if side is None else y + side

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel={tuple(self.weight.shape[2:])}, stride={self.stride}"


class QConv2d(_QConvNd):
    """Fake-quantized ``nn.Conv2d`` (per-output-channel weights; per-tensor activations by default)."""

    _conv = staticmethod(F.conv2d)


class QConv3d(_QConvNd):
    """Fake-quantized ``nn.Conv3d``."""

    _conv = staticmethod(F.conv3d)


class QMatMul(nn.Module):
    """Quantize both operands of an activation–activation product (``Q·Kᵀ`` or ``attn·V``).

    Off by default everywhere: the official video code keeps both attention products in floating point; the newer
    ViDiT-Q quantizes them. Use it inside a custom attention processor: ``qmm(q, k.transpose(-1, -2))``.
    """

    def __init__(self, spec: QuantSpec | None = None):
        super().__init__()
        spec = spec or QuantSpec(bits=8, granularity="per_token")
        self.a_quantizer = UniformQuantizer(spec)
        self.b_quantizer = UniformQuantizer(spec)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.a_quantizer(a) @ self.b_quantizer(b.transpose(-1, -2)).transpose(-1, -2)

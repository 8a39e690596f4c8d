"""Real-integer export: ``convert(qmodel)`` swaps calibrated fake-quant linears for :class:`QLinearInt` modules that
hold packed integer weights and run the integer kernels of :mod:`vqcore.kernels` (Triton on CUDA, the pure-PyTorch
reference on CPU).

What converts (and what is refused, with the reason):

* weights: 2–8 bit, per-output-channel or per-group (group a multiple of 64 at ≤ 4 bit, of 128 at 5–8 bit) scales.
  ≤ 4-bit codes are stored packed two per byte (3-bit and 2-bit codes use the 4-bit container: no extra compute speed,
  the same memory as 4 bit); 5–8-bit codes are stored as int8. Asymmetric weights keep their zero point when scales
  are per channel (an epilogue term ``−rowsum(q_x)·scale_w·zp_w``); asymmetric per-group weights are refused.
* activations: dynamic ``per_token`` or ``per_token_shared`` quantization, 2–8 bit, symmetric or asymmetric
  (asymmetric costs one epilogue term ``−zp_x·Σ_k ŵ``; the fast kernels of the literature use symmetric int8
  activations, both run on the int8 tensor cores here). Static / per-tensor activation quantizers and weight-only
  layers are refused (:class:`Unsupported`), or kept fake-quant with ``strict=False``.
* timestep-dependent quantization is refused (:class:`Unsupported`, or kept fake-quant with ``strict=False``): layers
  switched by vidit-q ``timeranges`` (``methods.timerange.TimeRangeSwitch``: one smoothing vector and weight range per
  timestep range) and layers whose quantizers carry per-timestep step tables (``QuantSpec(timesteps=T)``, selected by
  ``StepTableSelector``). An integer layer holds one set of codes and scales; converting would silently keep the
  row selected last.
* optional smoothing scale ``s`` (y = Q(x/s)·Q(W·s)ᵀ): the division ``x / s`` is fused into the activation quantizer;
  the fake-quant weight codes already include ``·s``.
* optional low-rank side branch ``up(down(·))`` (rank ≤ 64) on ``x̂`` or ``x / s``: ``t = ·downᵀ`` is a thin GEMM,
  ``t·upᵀ`` is fused into the GEMM epilogue. A side branch with ``row_gain() -> [P]`` (Q-VDiT's per-frame token mask on
  temporal layers, inputs ``[B·S, T, C]``) scales row ``i`` of ``t`` by ``gain[i mod P]`` before the epilogue.

Saved converted models (:func:`save_converted` / :func:`load_converted`) hold the packed codes (int8 tensors in
safetensors) plus a JSON description of every integer layer, so a fresh float model of the same architecture is turned
back into the integer model without recalibration.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import kernels
from .kernels import reference as kref
from .kernels.packing import pack_int4, padded_k, unpack_int4

logger = logging.getLogger(__name__)

__all__ = [
    "IntLinearSpec",
    "QLinearInt",
    "Unsupported",
    "convert",
    "linear_weight_bytes",
    "load_converted",
    "save_converted",
]


@dataclass
class IntLinearSpec:
    """Static description of a :class:`QLinearInt` (what :func:`load_converted` needs to rebuild it)."""

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

    @property
    def packed(self) -> bool:
        return self.w_bits <= 4


class QLinearInt(nn.Module):
    """Integer linear layer: per-token dynamic activation quantization + int8/int4 weight GEMM with a fused epilogue.

    Buffers: ``qweight`` (int8 codes ``[N, K]``, or int4 packed ``[N, padded_k(K)/2]``), ``weight_scale`` (fp32 ``[N]``
    or ``[N, groups]``), ``weight_sum`` (``Σ_k ŵ``, fp32 ``[N]``), optional ``weight_zp_scaled`` (``scale·zero_point``),
    ``bias``, ``smooth_scale`` (``s``: the input is ``x / s``), ``lr_down [r, K]`` / ``lr_up [N, r]``. Output dtype =
    input dtype. ``spec.a_shared`` reproduces ``per_token_shared`` activation quantization (one range per token position
    shared across the batch, ViDiT-Q/Q-VDiT) for inputs ``[B, ..., K]``.
    """

    def __init__(self, spec: IntLinearSpec, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.in_features, self.out_features = spec.in_features, spec.out_features
        n, k = spec.out_features, spec.in_features
        dtype = getattr(torch, spec.dtype)
        wshape = (n, padded_k(k) // 2) if spec.packed else (n, k)
        self.register_buffer("qweight", torch.zeros(wshape, dtype=torch.int8, device=device))
        sshape = (n, -(-k // spec.group_size)) if spec.group_size else (n,)
        self.register_buffer("weight_scale", torch.ones(sshape, dtype=torch.float32, device=device))
        self.register_buffer("weight_sum", torch.zeros(n, dtype=torch.float32, device=device))
        self.register_buffer(
            "weight_zp_scaled", torch.zeros(n, dtype=torch.float32, device=device) if spec.weight_zero_point else None
        )
        self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=device) if spec.bias else None)
        self.register_buffer("smooth_scale", torch.ones(k, dtype=torch.float32, device=device) if spec.smooth else None)
        r = spec.rank
        self.register_buffer("lr_down", torch.zeros(r, k, dtype=dtype, device=device) if r else None)
        self.register_buffer("lr_up", torch.zeros(n, r, dtype=dtype, device=device) if r else None)
        p = spec.side_row_period
        self.register_buffer("lr_row_gain", torch.ones(p, dtype=torch.float32, device=device) if p else None)

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
    ) -> QLinearInt:
        """Build from integer weight codes ``[N, K]`` and their scale/zero point.

        ``codes`` are either signed (symmetric quantizer: values in [−2^(b−1), 2^(b−1)−1], ``zero_point`` None or all
        zero) or unsigned (asymmetric: values in [0, 2^b − 1] with ``zero_point``); the dequantized weight is
        ``(codes − zero_point)·scale``. ``scale``/``zero_point``: ``[N]`` (or ``[N, 1]``) per channel, or ``[N, G]``
        per group of ``group_size`` input columns (zero points must then be all zero)."""
        if codes.dim() != 2:
            raise ValueError(f"codes must be [N, K], got {tuple(codes.shape)}")
        n, k = codes.shape
        codes = torch.round(codes.float())
        scale = scale.detach().float().reshape(n, -1)
        if group_size == 0 and scale.shape[1] != 1:
            raise ValueError(f"per-channel scale must have {n} elements, got {tuple(scale.shape)}")
        if group_size and scale.shape[1] != -(-k // group_size):
            raise ValueError(f"per-group scale must be [{n}, {-(-k // group_size)}], got {tuple(scale.shape)}")
        zp = None
        if zero_point is not None:
            zp = zero_point.detach().float().reshape(n, -1)
            if not bool((zp == 0).all()):
                if group_size:
                    raise ValueError("asymmetric per-group weights (non-zero zero points) are not supported by the "
                                     "integer kernels; quantize weights symmetrically or per channel")  # fmt: skip
            else:
                zp = None
        half = 2 ** (w_bits - 1)
        if zp is not None:  # unsigned codes -> signed container, zero point shifted by the same offset
            lo, hi = 0, 2**w_bits - 1
            signed = codes - half
            zp_signed = zp.reshape(n) - half
        else:
            lo, hi = -half, half - 1
            signed = codes
            zp_signed = None
        if codes.numel() and (codes.min() < lo or codes.max() > hi):
            raise ValueError(f"codes outside [{lo}, {hi}] for w_bits={w_bits} "
                             f"({'asymmetric' if zp is not None else 'symmetric'})")  # fmt: skip
        spec = IntLinearSpec(
            in_features=k, out_features=n, w_bits=w_bits, a_bits=a_bits, a_symmetric=a_symmetric,
            group_size=group_size, weight_zero_point=zp is not None, bias=bias is not None,
            smooth=smooth_scale is not None, rank=0 if down is None else down.shape[0],
            side_on_quantized=side_on_quantized, a_shared=a_shared, dtype=str(dtype).replace("torch.", ""),
            side_row_period=0 if row_gain is None or down is None else row_gain.numel(),
        )  # fmt: skip
        mod = cls(spec, device=codes.device)
        sig = signed.to(torch.int8)
        mod.qweight.copy_(pack_int4(sig) if spec.packed else sig)
        mod.weight_scale.copy_(scale.reshape(mod.weight_scale.shape))
        wz = None if zp_signed is None else zp_signed * scale.reshape(n)
        if wz is not None:
            mod.weight_zp_scaled.copy_(wz)
        mod.weight_sum.copy_(kref.dequantize_weight(sig, scale.reshape(mod.weight_scale.shape), group_size, wz).sum(1))
        if bias is not None:
            mod.bias.copy_(bias.detach())
        if smooth_scale is not None:
            mod.smooth_scale.copy_(smooth_scale.detach().float().reshape(k))
        if down is not None:
            if up is None or down.shape[1] != k or up.shape != (n, down.shape[0]):
                raise ValueError(f"side branch needs down [r, {k}] and up [{n}, r]")
            mod.lr_down.copy_(down.detach())
            mod.lr_up.copy_(up.detach())
            if row_gain is not None:
                mod.lr_row_gain.copy_(row_gain.detach().float().reshape(-1))
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
    def weight_codes(self) -> torch.Tensor:
        """Signed int8 weight codes ``[N, K]`` (unpacked)."""
        return unpack_int4(self.qweight, self.in_features) if self.spec.packed else self.qweight

    def dequantized_weight(self) -> torch.Tensor:
        return kref.dequantize_weight(
            self.weight_codes(), self.weight_scale, self.spec.group_size, self.weight_zp_scaled
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected input [..., {self.in_features}], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        spec = self.spec
        if spec.a_shared and x.dim() >= 3 and x.shape[0] > 1:
            act = self._quantize_shared(x)
        else:
            act = kernels.quantize_per_token(x2, spec.a_bits, spec.a_symmetric, self.smooth_scale)
        t = None
        if spec.rank:
            if spec.side_on_quantized:  # side branch reads the dequantized (smoothed) activations x̂
                xs = (act.codes.float() - act.zero_point.float()[:, None]) * act.scale[:, None]
            else:  # ... or the smoothed float input x / s
                xs = x2 / self.smooth_scale if self.smooth_scale is not None else x2
            t = xs.to(self.lr_down.dtype) @ self.lr_down.t()
            if spec.side_row_period:  # per-row gain of the low-rank term, periodic in the row index
                p = spec.side_row_period
                if t.shape[0] % p:
                    raise ValueError(f"side-branch row gain has period {p}; got {t.shape[0]} rows")
                t = (t.view(-1, p, spec.rank) * self.lr_row_gain.to(t.dtype).view(1, p, 1)).view(-1, spec.rank)
        out_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
        y = kernels.int_linear(
            act, self.qweight, self.weight_scale, in_features=self.in_features, w4=spec.packed,
            group_size=spec.group_size, weight_sum=self.weight_sum, weight_zp_scaled=self.weight_zp_scaled,
            asymmetric_act=not spec.a_symmetric, bias=self.bias, lowrank_t=t, lowrank_up=self.lr_up,
            out_dtype=out_dtype,
        )  # fmt: skip
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
        return (f"in={s.in_features}, out={s.out_features}, W{s.w_bits}{'(packed int4)' if s.packed else ''} {gran}"
                f"{' asym' if s.weight_zero_point else ''}, A{s.a_bits} per-token{'-shared' if s.a_shared else ''} "
                f"{'sym' if s.a_symmetric else 'asym'}"
                f"{', smooth' if s.smooth else ''}{f', side rank {s.rank}' if s.rank else ''}")  # fmt: skip


# ---- conversion of fake-quant models ---------------------------------------------------------------------------------
class Unsupported(ValueError):
    """A quantized layer the integer kernels cannot run (the message names the layer and the reason)."""


def _attr(obj, names, default=None):
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _is_fake_quant_linear(mod: nn.Module) -> bool:
    """A fake-quant linear in the sense of ``vqcore.quant.QLinear`` (convolutions, with 4-D/5-D weights, are not)."""
    w = getattr(mod, "weight", None)
    return (
        hasattr(mod, "weight_quantizer") and hasattr(mod, "integer_weight") and isinstance(w, torch.Tensor)
        and w.dim() == 2
    )  # fmt: skip


def _weight_is_quantized(mod: nn.Module) -> bool:
    wq = getattr(mod, "weight_quantizer", None)
    return wq is not None and bool(getattr(mod, "quant_weight", True)) and bool(_attr(wq, ["enabled"], True))


def _linear_weight(sub) -> torch.Tensor:
    w = sub.weight if isinstance(sub, nn.Module) else sub
    if isinstance(sub, nn.Linear) and sub.bias is not None:
        raise Unsupported("side-branch linears must have no bias")
    return w.detach()


def _time_dependent_layers(qmodel: nn.Module) -> dict[str, str]:
    """Layers whose quantization parameters change with the diffusion timestep, with the reason: the integer layers
    hold one set of codes/scales, so converting them would silently freeze the row selected last."""
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
        for role in ("weight_quantizer", "input_quantizer"):
            q = getattr(mod, role, None)
            t = int(getattr(getattr(q, "spec", None), "timesteps", 0) or 0)
            if t:
                found[name] = (
                    f"{role} has a per-timestep step table ({t} rows, QuantSpec(timesteps={t}), selected "
                    "by StepTableSelector); the integer layer holds one set — converting would silently "
                    "keep the row selected last"
                )
                break
    return found


def _convert_one(name: str, mod: nn.Module) -> QLinearInt:
    wq = mod.weight_quantizer
    aq = getattr(mod, "input_quantizer", None)
    w_bits = int(wq.bits)
    if w_bits > 8:
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
    if a_gran not in ("per_token", "per_token_shared") or not bool(_attr(aq, ["dynamic"], True)):
        raise Unsupported(f"{name}: activation quantizer is {a_gran} (static); the integer path implements dynamic "
                          "per-token activation quantization only")  # fmt: skip
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
    n, k = codes.shape
    scale = scale.detach().float()
    if w_gran == "per_tensor":
        scale = scale.reshape(-1)[:1].expand(n).contiguous()
        if zp is not None:
            zp = zp.detach().float().reshape(-1)[:1].expand(n).contiguous()
    smooth = getattr(mod, "smooth_scale", None)
    dtype = mod.weight.dtype if mod.weight.dtype.is_floating_point else torch.float32
    try:
        new = QLinearInt.from_codes(
            codes, scale, zp, w_bits=w_bits, a_bits=a_bits, a_symmetric=bool(_attr(aq, ["symmetric"], True)),
            group_size=group_size, bias=getattr(mod, "bias", None), smooth_scale=smooth,
            down=None if down is None else down.to(dtype), up=None if up is None else up.to(dtype),
            side_on_quantized=on_q, a_shared=a_gran == "per_token_shared", dtype=dtype, row_gain=row_gain,
        )  # fmt: skip
    except ValueError as e:
        raise Unsupported(f"{name}: {e}") from None
    return new.to(mod.weight.device)


def convert(qmodel: nn.Module, *, skip: tuple[str, ...] = (), strict: bool = True) -> nn.Module:
    """Replace every fake-quant linear of ``qmodel`` (``vqcore.quant.QLinear`` or any module with the same contract:
    ``weight_quantizer``, ``input_quantizer``, ``integer_weight()``) by a :class:`QLinearInt`, in place, and return the
    model. Layers named in ``skip`` and layers whose weights are not quantized stay as they are; convolutions are not
    converted. A layer the kernels cannot run (static/per-tensor or no activation quantization, asymmetric per-group
    weights, unsupported group size, a side branch that is not plain low-rank, timestep-dependent quantization: vidit-q
    ``timeranges`` (``TimeRangeSwitch``) or per-timestep step tables (``QuantSpec(timesteps=T)``)) raises
    :class:`Unsupported` (a ``ValueError`` naming the layer) before anything is swapped — or, with ``strict=False``,
    stays fake-quant with a logged warning."""
    if not isinstance(qmodel, nn.Module):
        raise TypeError(f"qmodel must be an nn.Module, got {type(qmodel).__name__}")
    if _is_fake_quant_linear(qmodel):
        raise ValueError("qmodel is itself a single quantized layer; wrap it in a container module to convert it")
    new: dict[str, QLinearInt] = {}
    timed = _time_dependent_layers(qmodel)
    for name, mod in qmodel.named_modules():
        if not name or name in skip or not _is_fake_quant_linear(mod) or not _weight_is_quantized(mod):
            continue
        try:
            if name in timed:
                raise Unsupported(f"{name}: {timed[name]}")
            new[name] = _convert_one(name, mod)  # validate every layer before swapping any
        except Unsupported as e:
            if strict:
                raise
            logger.warning("kept fake-quant: %s", e)
    for name, mod in new.items():
        _set_submodule(qmodel, name, mod)
    logger.info("converted %d fake-quant linears to QLinearInt", len(new))
    return qmodel


def _set_submodule(root: nn.Module, name: str, mod: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, mod)


# ---- save / load -----------------------------------------------------------------------------------------------------
def save_converted(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Save a converted model: ``model.safetensors`` (its state dict, packed int weights included) and
    ``int_layers.json`` (the :class:`IntLinearSpec` of every :class:`QLinearInt`). Written atomically per file."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    specs = {n: asdict(m.spec) for n, m in model.named_modules() if isinstance(m, QLinearInt)}
    if not specs:
        raise ValueError("model has no QLinearInt layers; call vqcore.convert(model) first")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    os.close(fd)
    save_file(state, tmp)
    os.replace(tmp, d / "model.safetensors")
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"format": "vqcore-int/1", "layers": specs}, f, indent=1)
    os.replace(tmp, d / "int_layers.json")
    return d


def load_converted(model: nn.Module, directory: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Rebuild a converted model from ``directory``: ``model`` is a float model of the same architecture (its linears
    named in ``int_layers.json`` are replaced by empty :class:`QLinearInt`), then the saved state dict is loaded."""
    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / "int_layers.json").read_text())
    if meta.get("format") != "vqcore-int/1":
        raise ValueError(f"{d}: not a vqcore converted model (format {meta.get('format')!r})")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, spec in meta["layers"].items():
        _set_submodule(model, name, QLinearInt(IntLinearSpec(**spec), device=device))
    state = load_file(str(d / "model.safetensors"), device=str(device))
    model.load_state_dict(state, strict=strict)
    return model


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weight storage of every linear layer: ``weight`` of float ``nn.Linear``/fake-quant linears, and
    ``qweight`` + ``weight_scale`` (+ ``weight_zp_scaled``, ``weight_sum``) of :class:`QLinearInt` (biases excluded)."""
    total = 0
    for m in model.modules():
        if isinstance(m, QLinearInt):
            for b in (m.qweight, m.weight_scale, m.weight_zp_scaled, m.weight_sum):
                if b is not None:
                    total += b.numel() * b.element_size()
        elif isinstance(getattr(m, "weight", None), torch.Tensor) and (
            isinstance(m, nn.Linear) or _is_fake_quant_linear(m)
        ):
            total += m.weight.numel() * m.weight.element_size()
    return total

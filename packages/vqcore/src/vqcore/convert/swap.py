"""Conversion of a fake-quant model: every calibrated ``QLinear``/``QConv2d`` (or module with the same contract) is
checked against what the integer kernels run — refused with the reason (:class:`Unsupported`) or described as an
:class:`~.spec.IntWeights` / :class:`~.spec.ActQuant` / :class:`~.spec.LayerExtras` triple — and swapped for a
:class:`~.linear.QLinearInt` / :class:`~.conv.QConv2dInt` in place."""

from __future__ import annotations

import logging

import torch
from torch import nn

from .. import kernels
from .conv import QConv2dInt
from .linear import QLinearInt
from .spec import MIXED_LAYOUTS, ActQuant, IntWeights, LayerExtras

__all__ = ["ATTENTION_MODES", "Unsupported", "convert", "set_submodule", "step_selectors"]

logger = logging.getLogger("vqcore.convert")


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


def is_fake_quant_linear(mod: nn.Module) -> bool:
    """A fake-quant linear in the sense of ``vqcore.quant.QLinear`` (convolutions, with 4-D/5-D weights, are not)."""
    return _is_fake_quant_layer(mod) and mod.weight.dim() == 2


def is_fake_quant_conv(mod: nn.Module) -> bool:
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
    from ..methods.timerange import TimeRangeSwitch  # recipes sit above convert: imported on use

    found: dict[str, str] = {}
    for sw_name, sw in qmodel.named_modules():
        names = getattr(sw, "layer_shapes", None)
        ranges = getattr(sw, "ranges", None)
        if isinstance(sw, TimeRangeSwitch) and isinstance(names, dict):
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
    """``scale`` / ``zero_point`` / ``timesteps`` (the :class:`ActQuant` fields) and the selected ``row`` of a
    calibrated static per-tensor quantizer."""
    a_gran = str(_attr(aq, ["granularity"], "per_tensor"))
    if a_gran != "per_tensor":
        raise Unsupported(f"{name}: static {a_gran} activation quantization (a range per channel/group) is not "
                          "supported; the integer path runs static per_tensor or dynamic per_token "
                          "activations")  # fmt: skip
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
    return {"scale": scale.reshape(rows), "zero_point": zp.reshape(rows), "timesteps": t,
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
        new = QLinearInt.build(
            IntWeights(codes, scale, zp, bits=w_bits, group_size=group_size, channel_bits=channel_bits,
                       layout=mixed_layout),
            ActQuant(bits=a_bits, symmetric=bool(_attr(aq, ["symmetric"], True)),
                     shared=a_gran == "per_token_shared" and not static, **static),
            LayerExtras(bias=getattr(mod, "bias", None), smooth_scale=smooth,
                        down=None if down is None else down.to(dtype), up=None if up is None else up.to(dtype),
                        side_on_quantized=on_q, row_gain=row_gain, dtype=dtype, conv=conv),
        )  # fmt: skip
    except ValueError as e:
        raise Unsupported(f"{name}: {e}") from None
    new._t = row
    return new.to(mod.weight.device)


def step_selectors(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's ``StepTableSelector`` modules (per-step activation tables), with their names."""
    from ..methods.timerange import StepTableSelector  # recipes sit above convert: imported on use

    return [(n, m) for n, m in model.named_modules() if isinstance(m, StepTableSelector)]


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
    if is_fake_quant_linear(qmodel) or is_fake_quant_conv(qmodel):
        raise ValueError("qmodel is itself a single quantized layer; wrap it in a container module to convert it")
    new: dict[str, QLinearInt] = {}
    timed = _time_dependent_layers(qmodel)
    for name, mod in qmodel.named_modules():
        if not name or name in skip or not _weight_is_quantized(mod):
            continue
        if not (is_fake_quant_linear(mod) or is_fake_quant_conv(mod)):
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
        set_submodule(qmodel, name, mod)
    if new:
        for _, sel in step_selectors(qmodel):
            sel.bind(qmodel)  # the selector's pre-hook now drives the integer layers' tables
    logger.info("converted %d fake-quant layers to integer layers (%d convolutions)", len(new),
                sum(isinstance(m, QConv2dInt) for m in new.values()))  # fmt: skip
    if attention == "int8":
        logger.info("int8 attention in %d attention modules", kernels.use_int8_attention(qmodel))
    return qmodel


def set_submodule(root: nn.Module, name: str, mod: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, mod)

"""Statistics gathered by running calibration inputs through the model: static activation ranges and the per-channel
activation maxima that channel balancing (SmoothQuant / ViDiT-Q / MPQ-DM) needs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from ..functional import smoothquant_scales
from ..quant.modules import QuantModule
from .capture import ROOT, CalibItem, CalibrationSet, stack_items

__all__ = ["root_items", "calibrate_static_quantizers", "activation_channel_absmax", "apply_smoothing"]

logger = logging.getLogger(__name__)


def root_items(calib: CalibrationSet | Sequence[CalibItem] | Sequence[dict] | None) -> list[CalibItem]:
    """Normalise the calibration argument to a list of root-model items.

    Accepts a :class:`CalibrationSet` (its ``"__model__"`` items), a list of :class:`CalibItem`, or a list of
    keyword-argument dicts for the model's forward (each a batch; split into rows).
    """
    if calib is None:
        return []
    if isinstance(calib, CalibrationSet):
        return list(calib[ROOT])
    calib = list(calib)
    if not calib:
        return []
    if all(isinstance(c, CalibItem) for c in calib):
        return calib
    if all(isinstance(c, dict) for c in calib):
        items = []
        for call, kwargs in enumerate(calib):
            first = next((v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.ndim > 0), None)
            if first is None:
                raise ValueError("each calibration dict must contain at least one batched tensor")
            b = first.shape[0]
            for r in range(b):
                row = {k: (v[r:r + 1] if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == b else v)
                       for k, v in kwargs.items()}
                t = row.get("timestep")
                t = float(t.flatten()[0]) if isinstance(t, torch.Tensor) and t.numel() else t
                items.append(CalibItem((), row, None, t, call, r))
        return items
    raise TypeError("calib must be a CalibrationSet, a list of CalibItem, or a list of forward-kwargs dicts")


def _batches(items: Sequence[CalibItem], batch_size: int, device: torch.device):
    from ..recon.engine import _to

    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        rows = chunk[0].rows
        yield (chunk, _to(stack_items([c.args for c in chunk], rows), device),
               _to(stack_items([c.kwargs for c in chunk], rows), device))


@torch.no_grad()
def calibrate_static_quantizers(model: nn.Module, items: Sequence[CalibItem], batch_size: int = 8,
                                max_rows: int = 4096) -> int:
    """Initialise every uncalibrated static activation quantizer from the full-precision activations of ``items``
    (weights and activations unquantized while observing). Returns how many quantizers were calibrated."""
    layers = [m for m in model.modules() if isinstance(m, QuantModule) and m.input_quantizer is not None
              and not m.input_quantizer.dynamic and not m.input_quantizer.initialized]
    if not layers:
        return 0
    if not items:
        raise ValueError("static activation quantizers need calibration data: pass calib=... (a CalibrationSet or a "
                         "list of forward-kwargs dicts)")
    seen: dict[QuantModule, list[torch.Tensor]] = {m: [] for m in layers}
    state = {m: (m.quant_input, m.quant_weight) for m in model.modules() if isinstance(m, QuantModule)}
    for m in state:
        m.quant_input = m.quant_weight = False

    def hook(mod, args):
        x = args[0].detach()
        if mod.smooth_scale is not None:
            s = mod.smooth_scale
            x = x / s if mod.weight.ndim == 2 else x / s.view(1, -1, *([1] * (x.ndim - 2)))
        flat = x.flatten(0, -2) if mod.weight.ndim == 2 else x
        seen[mod].append(flat[:max_rows].float().cpu())

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    device = next(model.parameters()).device
    try:
        for _, args, kwargs in _batches(items, batch_size, device):
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, (qi, qw) in state.items():
            m.quant_input, m.quant_weight = qi, qw
    for m, xs in seen.items():
        if xs:
            m.input_quantizer.calibrate(torch.cat(xs).to(device))
    return len(layers)


@torch.no_grad()
def activation_channel_absmax(model: nn.Module, items: Sequence[CalibItem], momentum: float = 0.95,
                              batch_size: int = 4) -> dict[QuantModule, torch.Tensor]:
    """Per input channel of every quantized layer: an EMA (``momentum``) over calibration batches of
    ``mean_batch(max_tokens |X_:,j|)`` — ViDiT-Q's ``momentum_act_max`` statistic (conv: max over batch and space)."""
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    stats: dict[QuantModule, torch.Tensor] = {}

    def hook(mod, args):
        x = args[0].detach().float().abs()
        if mod.weight.ndim == 2:
            cur = x.flatten(1, -2).amax(1).mean(0) if x.ndim > 2 else x.amax(0)
        else:
            cur = x.transpose(0, 1).flatten(1).amax(1)
        prev = stats.get(mod)
        stats[mod] = cur if prev is None else momentum * prev + (1 - momentum) * cur

    state = {m: (m.quant_input, m.quant_weight) for m in layers}
    for m in layers:
        m.quant_input = m.quant_weight = False
    handles = [m.register_forward_pre_hook(hook) for m in layers]
    device = next(model.parameters()).device
    try:
        for _, args, kwargs in _batches(items, batch_size, device):
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, (qi, qw) in state.items():
            m.quant_input, m.quant_weight = qi, qw
    return stats


def apply_smoothing(absmax: dict[QuantModule, torch.Tensor], alpha: float) -> int:
    """Set ``s = a^α / max_out|W|^(1−α)`` on every layer with statistics (groups=1 convs and linears)."""
    count = 0
    for mod, a in absmax.items():
        if getattr(mod, "groups", 1) != 1:
            continue
        w = mod.weight.detach().abs()
        wmax = w.amax(0) if w.ndim == 2 else w.transpose(0, 1).flatten(1).amax(1)
        mod.set_smooth_scale(smoothquant_scales(a.to(wmax.device), wmax, alpha))
        count += 1
    return count



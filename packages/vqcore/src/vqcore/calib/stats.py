"""Statistics gathered by running calibration inputs through the model: static activation ranges and the per-channel
activation maxima that channel balancing (SmoothQuant / ViDiT-Q / MPQ-DM) needs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..functional import smoothquant_scales
from ..quant.modules import QuantModule
from .capture import ROOT, CalibItem, CalibrationSet, stack_items

__all__ = ["root_items", "calibrate_static_quantizers", "activation_channel_absmax", "apply_smoothing"]

logger = logging.getLogger(__name__)


def root_items(calib: CalibrationSet | Sequence[Any] | torch.Tensor | None) -> list[CalibItem]:
    """Normalise the calibration argument to a list of root-model items (one per batch row).

    Accepts a :class:`CalibrationSet` (its ``"__model__"`` items), a list of :class:`CalibItem`, or a list (or just one)
    of model inputs, each a batch:

    * a tensor ``x`` → ``model(x)``;
    * a tuple of positional inputs ``(x, t, ...)`` → ``model(x, t, ...)``;
    * a dict of keyword inputs → ``model(**kwargs)``.

    Tensors whose first dimension is the batch size (that of the first batched tensor) are split into rows; others
    (a scalar timestep, a shared table) are kept whole in every row. The timestep of a row is ``timestep=`` or the
    second positional input, as :class:`~vqcore.calib.Capture` reads it.
    """
    if calib is None:
        return []
    if isinstance(calib, CalibrationSet):
        return list(calib[ROOT])
    if isinstance(calib, (torch.Tensor, tuple)):
        calib = [calib]
    if isinstance(calib, dict):
        calib = [calib]
    calib = list(calib)
    if not calib:
        return []
    if all(isinstance(c, CalibItem) for c in calib):
        return calib
    kinds = {type(c) for c in calib}
    if not all(isinstance(c, (torch.Tensor, tuple, dict)) for c in calib) or len(kinds) > 1 and not all(
            isinstance(c, torch.Tensor) for c in calib):
        names = sorted({t.__name__ for t in kinds})
        raise TypeError(f"calib must be a CalibrationSet (vqcore.calib.Capture), or a list of model inputs all of one "
                        f"form — tensors (model(x)), tuples (model(*args)) or dicts (model(**kwargs)); got {names}")
    items = []
    for call, c in enumerate(calib):
        args, kwargs = ((c,), {}) if isinstance(c, torch.Tensor) else (tuple(c), {}) if isinstance(c, tuple) else \
            ((), dict(c))
        first = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.ndim > 0), None)
        if first is None:
            raise ValueError(f"calibration input {call} has no batched tensor (each input needs at least one tensor "
                             "whose first dimension is the batch)")
        b = first.shape[0]

        def row(v, r, b=b):
            return v[r:r + 1] if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == b else v

        for r in range(b):
            a_r = tuple(row(v, r) for v in args)
            k_r = {k: row(v, r) for k, v in kwargs.items()}
            t = k_r.get("timestep", a_r[1] if len(a_r) > 1 else None)
            if isinstance(t, torch.Tensor):
                t = float(t.flatten()[0]) if t.numel() else None
            elif isinstance(t, (int, float)) and not isinstance(t, bool):
                t = float(t)
            else:
                t = None
            items.append(CalibItem(a_r, k_r, None, t, call, r))
    return items


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
        raise ValueError("static activation quantizers need calibration data: pass calib= a CalibrationSet, or a "
                         "list of model inputs (tensors, tuples of positional inputs or dicts of keyword inputs)")
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
def activation_channel_absmax(model: nn.Module, items: Sequence[CalibItem], momentum: float | None = None,
                              batch_size: int = 4) -> dict[QuantModule, torch.Tensor]:
    """Per input channel of every quantized layer, the activation magnitude that channel balancing divides by.

    Default (``momentum=None``), independent of the order of ``items``: linears with token inputs ``[B, ..., C]``
    get the mean over all calibration samples of each sample's ``max_tokens |X_:,j|`` (every sample weighs the same;
    summed in float64, so a shuffled calibration set gives the same float32 statistic), 2-D inputs and convolutions
    the max over everything (exact).

    ``momentum=0.95`` reproduces the official ViDiT-Q code's ``momentum_act_max`` (also inherited by Q-VDiT): an EMA
    over calibration batches of ``mean_batch(max_tokens |X_:,j|)`` started at the first batch. It depends on the
    order: after ``n`` batches the first holds ``momentum^(n−1)`` of the weight (0.70 for 8 batches), so a set ordered
    by timestep is dominated by its earliest steps. The methods expose it as ``act_momentum=0.95``."""
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be None (order-free) or in [0, 1), got {momentum!r}")
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    stats: dict[QuantModule, torch.Tensor] = {}
    sums: dict[QuantModule, list] = {}  # order-free mean: [float64 sum of per-sample maxima, samples]

    def hook(mod, args):
        x = args[0].detach().float().abs()
        per_sample = mod.weight.ndim == 2 and x.ndim > 2
        if mod.weight.ndim == 2:
            cur = x.flatten(1, -2).amax(1) if per_sample else x.amax(0)
        else:
            cur = x.transpose(0, 1).flatten(1).amax(1)
        if momentum is not None:
            cur = cur.mean(0) if per_sample else cur
            prev = stats.get(mod)
            stats[mod] = cur if prev is None else momentum * prev + (1 - momentum) * cur
        elif per_sample:
            acc = sums.setdefault(mod, [0.0, 0])
            acc[0] = acc[0] + cur.double().sum(0)
            acc[1] += cur.shape[0]
        else:
            prev = stats.get(mod)
            stats[mod] = cur if prev is None else torch.maximum(prev, cur)

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
    for mod, (total, n) in sums.items():
        stats[mod] = (total / n).float()
    return stats


def apply_smoothing(absmax: dict[QuantModule, torch.Tensor], alpha: float) -> int:
    """Set ``s = a^α / max_out|W|^(1−α)`` on every layer with statistics (groups=1 convs and linears)."""
    count = 0
    for mod, a in absmax.items():
        if getattr(mod, "groups", 1) != 1:
            continue
        w = mod.weight.detach()  # max|W| per input channel as max(max W, −min W): no |W| copy of the weight
        if w.ndim == 2:
            wmax = torch.maximum(w.amax(0), -w.amin(0))
        else:
            wt = w.transpose(0, 1).flatten(1)
            wmax = torch.maximum(wt.amax(1), -wt.amin(1))
        mod.set_smooth_scale(smoothquant_scales(a.to(wmax.device), wmax, alpha))
        count += 1
    return count



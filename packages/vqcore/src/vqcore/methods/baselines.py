"""Baselines the papers compare against, on the shared layer.

- ``rtn`` — round-to-nearest: min-max ranges, no learning; static activation ranges (if any) from calibration data.
- ``vidit-q`` — ViDiT-Q-style for video DiTs (Zhao et al., arXiv 2406.02540; old code ``A-suozhang/ViDiT-Q``):
  per-channel min-max weights, dynamic per-token asymmetric activations, SmoothQuant-style channel balancing with
  the mean over calibration samples of each sample's per-channel token max (order-free; ``act_momentum=0.95`` gives
  the official code's ``momentum_act_max`` EMA, which depends on the order of the calibration set) and α = 0.11
  when activations are ≤ 6 bit or weights ≤ 4 bit
  (its W4A8 plan), and Q-VDiT's W8A8 MLPs at those bit-widths. ``timeranges=[[0, 500], [501, 1000]]`` reproduces
  the timestep-aware plan (one smoothing vector and one weight range per timestep range, :mod:`.timerange`); the
  default is one range for all timesteps.
- ``q-diffusion`` — Q-Diffusion / EfficientDM-style for image diffusion models (Li et al., ICCV 2023): per-channel
  weights with the L_p (p = 2.4) range search, static per-tensor activations (range search on calibration data),
  then BRECQ block reconstruction with AdaRound weights and a learned activation step (LSQ, lr 4e-4); first/last
  layers W8A8, shortcut/downsample layers FP. The official 20 000 iterations per block are scaled down by
  ``iters`` (default 200) for small models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..calib.capture import CalibrationSet, find_blocks
from ..calib.stats import activation_channel_absmax, apply_smoothing, calibrate_static_quantizers, root_items
from ..quant.modules import QuantModule
from ..quant.prepare import QuantConfig, preset
from ..quant.quantizer import QuantSpec
from ..recon.engine import ReconConfig, block_reconstruction
from .base import Method, MethodConfig, check_int, register_method
from .timerange import TimeRangeSwitch, check_timeranges

logger = logging.getLogger(__name__)


def init_weight_quantizers(model: nn.Module) -> int:
    """Initialise every weight quantizer from its (smoothed) weight (row chunks: :meth:`QuantModule.calibrate_weight`,
    no float32 copy of a whole weight)."""
    n = 0
    for m in model.modules():
        if isinstance(m, QuantModule) and m.weight_quantizer is not None and not m.weight_quantizer.initialized:
            m.calibrate_weight()
            n += 1
    return n


@dataclass
class ViDiTQConfig(MethodConfig):
    """Options of ``vidit-q``: ``alpha`` (channel-balancing strength; None = 0.11 at ≤ 4-bit weights or ≤ 6-bit
    activations, else 0), ``timeranges`` (``[[lo, hi], ...]``: one smoothing vector and weight range per timestep
    range; None = one range), ``act_momentum`` (None = order-free mean of per-sample maxima; 0.95 = the official
    EMA)."""

    alpha: float | None = None
    timeranges: list | None = None
    act_momentum: float | None = None

    def __post_init__(self) -> None:
        if self.alpha is not None and (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))
                                       or self.alpha < 0):  # fmt: skip
            raise ValueError(f"alpha must be a number >= 0 or None, got {self.alpha!r}")
        if self.timeranges is not None:
            check_timeranges(self.timeranges)
        if self.act_momentum is not None and not 0.0 <= self.act_momentum < 1.0:
            raise ValueError(f"act_momentum must be in [0, 1) or None, got {self.act_momentum!r}")


@dataclass
class QDiffusionConfig(MethodConfig):
    """Options of ``q-diffusion``: ``iters`` per block (200), ``batch_size`` (4), ``blocks`` (None = every captured
    block), ``checkpoint`` (a resumable file), ``progress``."""

    iters: int = 200
    batch_size: int = 4
    blocks: list[str] | None = field(default=None)
    checkpoint: Any = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_int(self, "iters", 0, " (per block)")
        check_int(self, "batch_size", 1)


@register_method("rtn")
class RTN(Method):
    """Round-to-nearest with min-max ranges (no calibration learning)."""

    def default_config(self, kind, w_bits, a_bits, opts=None):
        cfg = preset(kind, w_bits, a_bits)
        return replace(cfg, weight=replace(cfg.weight, init="minmax"), act=replace(cfg.act, init="minmax"))

    def run(self, qmodel, fp_model, config, calib, opts) -> dict[str, Any]:
        n_act = calibrate_static_quantizers(qmodel, root_items(calib))
        n_w = init_weight_quantizers(qmodel)
        return {"weight_quantizers": n_w, "static_activation_quantizers": n_act}


@register_method("vidit-q")
class ViDiTQ(Method):
    """ViDiT-Q-style baseline (see module docstring)."""

    Config = ViDiTQConfig
    needs_calibration = True

    def default_config(self, kind, w_bits, a_bits, opts=None):
        if kind != "dit":
            logger.warning("vidit-q is a baseline for video DiTs; using its DiT recipe on a %s", kind)
        cfg = preset("dit", w_bits, a_bits)
        return replace(cfg, weight=QuantSpec(granularity="per_channel", init="minmax"),
                       act=QuantSpec(granularity="per_token", init="minmax"))

    def run(self, qmodel, fp_model, config, calib, opts: ViDiTQConfig) -> dict[str, Any]:
        alpha, timeranges, act_momentum = opts.alpha, opts.timeranges, opts.act_momentum
        items = root_items(calib)
        if alpha is None:
            alpha = 0.11 if (config.w_bits <= 4 or (config.a_bits or 8) <= 6) else 0.0
        if timeranges is not None:
            return self._run_timeranges(qmodel, items, alpha, check_timeranges(timeranges), act_momentum)
        smoothed = 0
        if alpha > 0:
            if not items:
                raise ValueError("vidit-q channel balancing needs calibration data (calib=...)")
            smoothed = apply_smoothing(activation_channel_absmax(qmodel, items, momentum=act_momentum), alpha)
        n_act = calibrate_static_quantizers(qmodel, items)
        n_w = init_weight_quantizers(qmodel)
        return {"smoothing_alpha": alpha, "smoothed_layers": smoothed, "weight_quantizers": n_w,
                "static_activation_quantizers": n_act}


    @staticmethod
    def _run_timeranges(qmodel, items, alpha: float, ranges, act_momentum: float | None = None) -> dict[str, Any]:
        if not items or any(i.timestep is None for i in items):
            raise ValueError("vidit-q timeranges need calibration items with timesteps (vqcore.calib.Capture)")
        per_range = [[i for i in items if lo <= i.timestep <= hi] for lo, hi in ranges]
        empty = [list(r) for r, its in zip(ranges, per_range) if not its]
        if empty:
            raise ValueError(f"vidit-q timeranges {empty} hold no calibration item; calibration timesteps: "
                             f"{sorted({i.timestep for i in items})}")
        layers = {n: m for n, m in qmodel.named_modules() if isinstance(m, QuantModule)
                  and m.weight_quantizer is not None and getattr(m, "groups", 1) == 1}
        for m in layers.values():  # a neutral vector so every layer has one to record when alpha is 0
            m.set_smooth_scale(torch.ones(m.weight.shape[1]))
        switch = None
        for r, its in enumerate(per_range):
            if alpha > 0:
                apply_smoothing(activation_channel_absmax(qmodel, its, momentum=act_momentum), alpha)
            for m in layers.values():
                m.weight_quantizer.initialized = False
            init_weight_quantizers(qmodel)
            if switch is None:
                shapes = [(n, {"s": [len(ranges), m.weight.shape[1]],
                               "ws": [len(ranges), *m.weight_quantizer.scale.shape],
                               "wz": [len(ranges), *m.weight_quantizer.zero_point.shape]}) for n, m in layers.items()]
                switch = TimeRangeSwitch(ranges, shapes).to(next(qmodel.parameters()).device)
                switch.bind(qmodel)
            switch.record(r)
        switch.vq_attach(qmodel)  # only now: the hook would load not-yet-recorded rows during the statistics passes
        qmodel.add_module("vq_timerange", switch)
        qmodel.vqcore_extra_modules = {**getattr(qmodel, "vqcore_extra_modules", {}), "vq_timerange": switch}
        calibrate_static_quantizers(qmodel, items)
        return {"smoothing_alpha": alpha, "timeranges": [list(r) for r in ranges], "smoothed_layers": len(layers),
                "items_per_range": [len(its) for its in per_range]}


@register_method("q-diffusion")
class QDiffusion(Method):
    """Q-Diffusion / EfficientDM-style baseline (see module docstring)."""

    Config = QDiffusionConfig
    needs_calibration = True
    needs_block_captures = True

    def default_config(self, kind, w_bits, a_bits, opts=None):
        cfg = preset(kind, w_bits, a_bits)
        return replace(cfg, weight=QuantSpec(granularity="per_channel", init="mse"),
                       act=QuantSpec(granularity="per_tensor", init="mse"))

    def run(self, qmodel, fp_model, config: QuantConfig, calib, opts: QDiffusionConfig) -> dict[str, Any]:
        iters = opts.iters
        if not isinstance(calib, CalibrationSet):
            raise ValueError("q-diffusion reconstructs blocks: pass a CalibrationSet captured with targets='blocks' "
                             "(vqcore.calib.Capture)")
        items = root_items(calib)
        n_act = calibrate_static_quantizers(qmodel, items)
        init_weight_quantizers(qmodel)
        blocks = opts.blocks or [b for b in find_blocks(qmodel) if b in calib.items]
        if not blocks:
            raise ValueError("the calibration set has no block captures; capture with targets='blocks'")

        def setup(name: str, block: nn.Module) -> None:
            for m in block.modules():
                if isinstance(m, QuantModule) and m.weight_quantizer is not None and m.quant_weight:
                    m.weight_quantizer.init_adaround(m.effective_weight().detach())

        lrs = {"adaround": 1e-3, "act_scale": 4e-4}
        cfg = ReconConfig(iters=iters, batch_size=opts.batch_size, lrs=lrs, weight_decay=0.0,
                          checkpoint=opts.checkpoint, progress=opts.progress)
        beta = {"start": 20.0, "end": 2.0}

        def round_reg(name: str, block: nn.Module):
            quantizers = [m.weight_quantizer for m in block.modules()
                          if isinstance(m, QuantModule) and m.weight_quantizer is not None]

            def reg(i: int):
                frac = i / max(iters, 1)
                if frac < 0.2:  # warm-up: no rounding regulariser (BRECQ)
                    return torch.zeros(())
                b = beta["end"] + (beta["start"] - beta["end"]) * (1 - (frac - 0.2) / 0.8)  # β annealed 20 → 2
                return 0.01 * sum(q.rounding_loss(b) for q in quantizers)
            return reg

        history = block_reconstruction(qmodel, blocks, calib.items, cfg, before_block=setup, regularizer_fn=round_reg)
        for m in qmodel.modules():  # harden the learned rounding
            if isinstance(m, QuantModule) and m.weight_quantizer is not None:
                m.weight_quantizer.eval()
        qmodel.eval()
        return {"blocks": len(blocks), "iters_per_block": iters, "static_activation_quantizers": n_act,
                "final_block_losses": {k: (v[-1] if v else None) for k, v in history.items()}}

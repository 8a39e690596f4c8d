"""Q-VDiT (Feng et al., ICML 2025, arXiv 2505.22167; official code ``wlfeng0509/Q-VDiT``) as a vqcore recipe.

Two parts, each written from what the released code does (``qdiff/models/quant_layer.py``,
``qdiff/models/stdit_quant_layer.py``, ``qdiff/optimization/{model_recon,block_recon}.py``, ``qdiff/utils.py``):

**Token-aware Quantization Estimator (TQE, paper §3.2)** — per quantized linear (:func:`attach_tqe`)::

    Ŵ = Q_w(W·s + B A) + β αᵀ          A: [32, d_in], B: [d_out, 32]   (the rank-32 LoRA, *inside* the quantizer)
    y = Q_a(x/s) Ŵᵀ + b                                                  (β αᵀ: the rank-1 term, *after* it)

The rank-32 term is a :class:`LoRAWeightAdapter` in ``QLinear.weight_adapter``: it is added to the weight before the
weight quantizer, so it merges exactly into the integer weight. The rank-1 term is a ``side_branch`` on the quantized
input x̂ (``x̂ α βᵀ`` = ``x̂ (β αᵀ)ᵀ``), which :mod:`vqcore.convert` keeps as a fused rank-1 epilogue term. Init as the
code: A (and α) ``kaiming_uniform(a=√5)``, B (and β) zeros — the model starts exactly at plain quantization.

In temporal-attention linears the code adds ``(x̂ (β αᵀ)ᵀ) ⊙ M`` with a learnable per-frame mask ``M`` (``ones[1, T, 1]``
over the ``[B·S, T, C]`` temporal layout) on top of the rank-1 term already inside Ŵ, i.e. the rank-1 correction of
frame ``f`` is scaled by ``(1 + M_f)`` (paper: ``Δ̂ = (M ⊙ Q̂(X)) α``). :class:`FrameMaskedRank1` implements exactly that
gain. *Token layout*: temporal-attention linears are found by name (``temporal_patterns``: diffusers Latte's
``temporal_transformer_blocks.*.attn1.*``, Open-Sora STDiT's ``*.attn_temp.*``); their inputs are ``[B·S, T, C]`` (Latte
folds the spatial tokens into the batch and puts frames on dim −2), so the frame of a token is its index on dim −2 and
``T`` is read from a probing forward on one calibration item (or given as ``frames=``). CogVideoX has no temporal
attention (one joint 3-D attention over ``[B, text + T·S, C]``): no layer matches, TQE there is the LoRA + rank-1 terms
only, as for every non-temporal layer of the official code. In :mod:`vqcore.convert` the gain becomes a per-row scale of
the rank-1 GEMM output ``t = x̂ αᵀ`` (rows of the flattened ``[B·S·T, 1]`` are periodic in ``T``), applied before the
fused epilogue term ``t βᵀ`` — so the mask survives integer export at no kernel cost.

**Temporal Maintenance Distillation (TMD, paper §3.3)** — :class:`TMDTerm` wraps :func:`vqcore.functional.tmd_loss`:
``MSE + λ·KL`` between the row-softmaxed frame-to-frame cosine-similarity matrices of the FP and quantized outputs,
λ = 100, computed per frame (``mode="per_frame"``, the paper) or as the released code reshapes (``mode="code"``: no
permute, its "frames" are channel chunks).

**Recipe** (:class:`QVDiT`, ``method="q-vdit"``): dynamic per-token asymmetric activations, per-channel weights with
Q-VDiT's clipping grid (``init="grid_lp"``), the Q-VDiT mixed precision (MLPs W8A8 when weights ≤ 4 bit or activations
≤ 6 bit; embedders, time/condition projections and final layer FP), smoothing α per config, then *whole-model output
distillation* on cached FP outputs (:func:`vqcore.recon.output_distillation`): AdamW (weight decay 0.01), cosine to 0,
batch 4; trainable: weight-quantizer Δ (lr 1e-6) and the TQE adapters + masks (lr 1e-5); zero points, activation
ranges and model weights frozen.

**Training memory.** Backpropagating through the whole model, plain autograd keeps every layer's float32 fake-quant
graph (``W·s + BA``, ``W/Δ``, ``q − zp``, ``Ŵ``: several times the bf16 weights) until the backward pass. Here every
quantized layer keeps only its input and recomputes that graph in the backward pass (``recompute``;
:mod:`vqcore.quant.modules`), and with ``grad_checkpointing`` the transformer blocks are activation-checkpointed as
the official code does (``torch.utils.checkpoint`` on ``blocks[1..26]`` of its 28; here on every block found by
:func:`vqcore.calib.capture.find_blocks`). Both recompute the same operations, so the gradients — and the trained
model — are bit-identical to the plain path; the cost is one more layer forward per step (``recompute``) and one more
block forward per step (``grad_checkpointing``). ``"auto"`` (the default of both) turns them on for models of at
least 10⁸ parameters (every released video DiT; not the tiny test models, whose graphs are small).

Official settings (configs ``t2v/configs/quant/opensora/w{3a8,4a6,6a6,8a8}_ours.yaml``) and how they are scaled here:

============  ==========  ===========  ============  =========================================================
setting       iterations  loss         smoothing α   calibration steps kept (of the FP trajectory)
============  ==========  ===========  ============  =========================================================
W3A8 / W3A6   15 000      MSE + TMD    0.11          all (100 of 100) — W3A6 has no config: W3A8's, A6
W4A6          10 000      MSE only     off           every 5th (20 of 100)
W4A8          10 000      MSE + TMD    0.11          all — no Q-VDiT config: ViDiT-Q's W4A8 α, W3A8's loss
W6A6          5 000       MSE + TMD    0.5           all
W8A8          5 000       MSE + TMD    off           all
============  ==========  ===========  ============  =========================================================

Scaling rule for small models (documented defaults, overridable): the official runs make ``E = iters·4 / items``
passes over their calibration set (2000 items, 400 at W4A6): 30 (W3), 100 (W4A6), 10 (W6/W8). ``iters=None`` keeps the
same number of passes over *our* calibration set, ``ceil(E · items / 4)``, capped at the official count. Fewer
iterations than the official run get learning rates scaled by ``official_iters / iters`` (capped at ×100, and at ×iters
below 100 iterations), keeping the total Adam step budget ``lr × iters`` of the official run (``lr_scale=1.0`` gives the
official rates unchanged). The second cap exists because the uncapped ×100 with 10 iterations moved the 8-bit weight
steps by ~10 % per Adam step and broke W8A8 (quick CPU benchmark, PSNR vs FP: 14.5 vs RTN's 24.6; 25.1 with the cap).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..calib.capture import find_blocks
from ..calib.stats import activation_channel_absmax, apply_smoothing, root_items
from ..functional import tmd_loss
from ..quant.modules import LowRankBranch, QLinear, register_module_type
from ..quant.prepare import preset
from ..quant.quantizer import QuantSpec
from ..recon.engine import RECOMPUTE_MIN_PARAMS, LossTerm, MSETerm, ReconConfig, _to, first_tensor, output_distillation
from .base import Method, MethodConfig, check_choice, check_int, register_method
from .baselines import init_weight_quantizers
from .budget import lr_budget_scale

__all__ = ["LoRAWeightAdapter", "FrameMaskedRank1", "TMDTerm", "QVDiT", "attach_tqe", "official_settings",
           "TEMPORAL_PATTERNS"]

logger = logging.getLogger(__name__)

#: qualified-name patterns of temporal-attention linears (Latte / Open-Sora STDiT)
TEMPORAL_PATTERNS = ("*temporal_transformer_blocks.*.attn1.*", "*attn_temp.*")

_OFFICIAL = {  # (w_bits, a_bits) → iterations, TMD on, smoothing α, fraction of calibration steps kept
    (3, 8): (15000, True, 0.11, 1.0), (3, 6): (15000, True, 0.11, 1.0),
    (4, 6): (10000, False, 0.0, 0.2), (4, 8): (10000, True, 0.11, 1.0),
    (6, 6): (5000, True, 0.5, 1.0), (8, 8): (5000, True, 0.0, 1.0),
}
_OFFICIAL_ITEMS = 2000  # 10 prompts × 100 steps × (cond, uncond); 400 at W4A6 (every 5th step)
_BATCH = 4


def _blocks_or_none(model: nn.Module) -> list[str]:
    try:
        return find_blocks(model)
    except ValueError:
        logger.warning("q-vdit grad_checkpointing: no block list found in %s; training without it",
                       type(model).__name__)
        return []


def official_settings(w_bits: int, a_bits: int | None) -> dict[str, Any]:
    """The official Q-VDiT settings for a bit-width (nearest config where none ships; see module docstring)."""
    a = a_bits or 8
    key = (w_bits, a) if (w_bits, a) in _OFFICIAL else (
        (3, 6 if a <= 6 else 8) if w_bits <= 3 else (4, 6 if a <= 6 else 8) if w_bits <= 4 else
        (6, 6) if a <= 6 else (8, 8))
    iters, tmd, alpha, frac = _OFFICIAL[key]
    items = _OFFICIAL_ITEMS * frac
    return {"config": f"W{key[0]}A{key[1]}", "iters": iters, "tmd": tmd, "alpha": alpha, "step_fraction": frac,
            "passes": iters * _BATCH / items}


# -- TQE modules ---------------------------------------------------------------------------------------------------
@register_module_type
class LoRAWeightAdapter(nn.Module):
    """Rank-``r`` weight delta ``B A`` (``[out, in]``) added inside the weight quantizer (Q-VDiT/EfficientDM QALoRA).

    ``lora_A [r, in]`` is ``kaiming_uniform(a=√5)``, ``lora_B [out, r]`` zeros, as ``nn.Linear`` initialises the
    code's ``loraA``/``loraB`` (then ``B`` zeroed). The code builds the dense matrix as ``B(A(I))ᵀ`` every forward; the
    product ``B @ A`` is the same matrix."""

    def __init__(self, in_features: int, out_features: int, rank: int = 32):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A

    def vq_describe(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0],
                "rank": self.lora_A.shape[0]}

    @classmethod
    def vq_build(cls, desc: dict) -> LoRAWeightAdapter:
        return cls(desc["in_features"], desc["out_features"], desc["rank"])


@register_module_type
class FrameMaskedRank1(LowRankBranch):
    """Rank-``r`` side branch whose output for frame ``f`` is scaled by ``1 + frame_mask[f]`` (Q-VDiT's temporal
    token mask; ``frame_mask`` starts at ones as in the code). Inputs are ``[..., T, C]`` with frames on dim −2 (the
    temporal layout ``[B·S, T, C]``). :meth:`row_gain` gives the per-frame gain that :mod:`vqcore.convert` applies to
    the rows of the low-rank GEMM output."""

    def __init__(self, in_features: int, out_features: int, rank: int = 1, frames: int = 16,
                 on_quantized_input: bool = True):
        super().__init__(in_features, out_features, rank, on_quantized_input)
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be a positive int, got {frames!r}")
        self.frames = frames
        self.frame_mask = nn.Parameter(torch.ones(frames))

    def row_gain(self) -> torch.Tensor:
        """``1 + M`` per frame, ``[T]``; row ``i`` of a flattened ``[B·S·T, ·]`` input belongs to frame ``i mod T``."""
        return 1.0 + self.frame_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[-2] != self.frames:
            raise ValueError(f"FrameMaskedRank1 expects inputs [..., T={self.frames}, C] (temporal layout), got "
                             f"{tuple(x.shape)}")
        t = self.down(x) * self.row_gain().to(x.dtype)[:, None]
        return self.up(t)

    def vq_describe(self) -> dict:
        return {**super().vq_describe(), "frames": self.frames}

    @classmethod
    def vq_build(cls, desc: dict) -> FrameMaskedRank1:
        return cls(desc["in_features"], desc["out_features"], desc["rank"], desc["frames"],
                   desc["on_quantized_input"])


def _temporal_frames(model: nn.Module, names: list[str], item) -> dict[str, int]:
    """Run one calibration item and read ``T`` (dim −2 of the input) of each temporal linear."""
    found: dict[str, int] = {}
    mods = dict(model.named_modules())
    def hook(name: str):
        def fn(module, args) -> None:  # returns None: a pre-hook's return value would replace the input
            found.setdefault(name, int(args[0].shape[-2]))
        return fn

    handles = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(*_to(item.args, device), **_to(item.kwargs, device))
    finally:
        for h in handles:
            h.remove()
    return found


def attach_tqe(qmodel: nn.Module, lora_rank: int = 32, side_rank: int = 1,
               temporal_patterns: tuple[str, ...] = TEMPORAL_PATTERNS, frames: int | None = None,
               probe_item=None, frame_mask: bool = True) -> dict[str, Any]:
    """Give every weight-quantized :class:`QLinear` of ``qmodel`` Q-VDiT's TQE terms (see module docstring).

    Temporal-attention linears (names matching ``temporal_patterns``) get a :class:`FrameMaskedRank1` side branch;
    their frame count is ``frames`` or read from a forward of ``probe_item`` (a calibration item). Layers whose
    quantizer already carries an adapter or side branch are refused (``ValueError``). Returns counts for the report.
    """
    if not isinstance(lora_rank, int) or lora_rank < 0 or not isinstance(side_rank, int) or side_rank < 0:
        raise ValueError(f"lora_rank and side_rank must be non-negative ints, got {lora_rank!r}, {side_rank!r}")
    layers = {n: m for n, m in qmodel.named_modules() if isinstance(m, QLinear) and m.quant_weight
              and m.weight_quantizer is not None}
    busy = [n for n, m in layers.items() if m.weight_adapter is not None or m.side_branch is not None]
    if busy:
        raise ValueError(f"layers already carry an adapter/side branch: {busy[:3]}")
    temporal = [n for n in layers if any(fnmatch.fnmatchcase(n, p) for p in temporal_patterns)] if frame_mask else []
    tframes: dict[str, int] = {}
    if temporal and side_rank:
        if frames is not None:
            tframes = {n: int(frames) for n in temporal}
        elif probe_item is not None:
            tframes = _temporal_frames(qmodel, temporal, probe_item)
        else:
            raise ValueError("temporal-attention layers need the frame count: pass frames=T or a calibration item")
    for name, m in layers.items():
        dev = m.weight.device  # adapters stay float32 in a bf16/fp16 model (trained, then merged in float32)
        if lora_rank:
            m.weight_adapter = LoRAWeightAdapter(m.in_features, m.out_features, lora_rank).to(dev)
        if side_rank:
            if name in tframes:
                m.side_branch = FrameMaskedRank1(m.in_features, m.out_features, side_rank, tframes[name]).to(dev)
            else:
                m.side_branch = LowRankBranch(m.in_features, m.out_features, side_rank).to(dev)
    return {"tqe_layers": len(layers), "temporal_masked_layers": len(tframes), "lora_rank": lora_rank,
            "side_rank": side_rank, "frames": sorted(set(tframes.values()))}


# -- TMD loss term -------------------------------------------------------------------------------------------------
class TMDTerm(LossTerm):
    """Q-VDiT's Temporal Maintenance Distillation loss ``MSE + λ·KL(frame relations)`` for the recon engine.

    ``lam`` = 100 as the code; ``mode`` ``"per_frame"`` (paper, default) or ``"code"`` (released reshape);
    ``layout`` ``"bcthw"`` (Latte / Open-Sora outputs) or ``"btchw"`` (CogVideoX outputs)."""

    name = "tmd"

    def __init__(self, lam: float = 100.0, mode: str = "per_frame", layout: str = "bcthw", weight: float = 1.0):
        super().__init__(weight)
        if mode not in ("per_frame", "code"):
            raise ValueError(f"mode must be 'per_frame' or 'code', got {mode!r}")
        if layout not in ("bcthw", "btchw"):
            raise ValueError(f"layout must be 'bcthw' or 'btchw', got {layout!r}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam, self.mode, self.layout = float(lam), mode, layout

    def compute(self, q_out, fp_out, context):
        return tmd_loss(q_out, fp_out, weight=self.lam, layout=self.layout, mode=self.mode)


def _output_layout(model: nn.Module) -> str:
    return "btchw" if any("CogVideoX" in type(m).__name__ for m in model.modules()) else "bcthw"


def _evenly_spaced(items: list, fraction: float | None, n_steps: int | None) -> list:
    """Keep the items of evenly spaced timesteps (``range(0, nsteps, nsteps // n_steps)`` over the sorted distinct
    timesteps, as ``qdiff/utils.py::get_quant_calib_data``)."""
    ts = sorted({it.timestep for it in items if it.timestep is not None}, reverse=True)
    if not ts:
        return items
    if n_steps is None:
        n_steps = max(1, math.ceil(len(ts) * (fraction if fraction is not None else 1.0)))
    n_steps = min(max(int(n_steps), 1), len(ts))
    keep = set(ts[:: max(len(ts) // n_steps, 1)][:n_steps])
    return [it for it in items if it.timestep in keep]


@dataclass
class QVDiTConfig(MethodConfig):
    """Options of ``q-vdit`` (all optional): ``iters`` (None: the scaling rule), ``batch_size``, ``tqe``, ``tmd``
    (None = per config: off at W4A6), ``tmd_mode`` (``"per_frame"``/``"code"``), ``lam``, ``alpha`` (None = per
    config), ``lr_weight_scale`` / ``lr_adapters`` (before scaling), ``lr_scale`` (None = budget rule, or a float),
    ``lora_rank``, ``side_rank``, ``frame_mask``, ``frames``, ``calib_steps`` (None = per config), ``layout``,
    ``seed`` (set by :func:`vqcore.quantize`), ``checkpoint``, ``progress``, ``act_momentum``, ``recompute`` and
    ``grad_checkpointing`` (``"auto"``, True, False) — training memory, module docstring."""

    iters: int | None = None
    batch_size: int = _BATCH
    tqe: bool = True
    tmd: bool | None = None
    tmd_mode: str = "per_frame"
    lam: float = 100.0
    alpha: float | None = None
    lr_weight_scale: float = 1e-6
    lr_adapters: float = 1e-5
    lr_scale: float | None = None
    lora_rank: int = 32
    side_rank: int = 1
    frame_mask: bool = True
    frames: int | None = None
    calib_steps: int | None = None
    layout: str = "auto"
    seed: int = 0
    checkpoint: Any = None
    progress: bool = True
    act_momentum: float | None = None
    recompute: bool | str = "auto"
    grad_checkpointing: bool | str = "auto"

    def __post_init__(self) -> None:
        for name in ("recompute", "grad_checkpointing"):
            check_choice(self, name, ("auto", True, False))
        check_int(self, "iters", 0, none=True)
        check_int(self, "batch_size", 1)
        check_choice(self, "layout", ("auto", "bcthw", "btchw"))
        check_choice(self, "tmd_mode", ("per_frame", "code"))
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


@register_method("q-vdit")
class QVDiT(Method):
    """Q-VDiT: TQE + TMD with the official optimisation recipe (see module docstring).

    Options of :meth:`run` (all optional): ``iters`` (default: the scaling rule), ``batch_size`` (4), ``tqe`` (True),
    ``tmd`` (None = per config: off at W4A6), ``tmd_mode`` (``"per_frame"``/``"code"``), ``lam`` (100), ``alpha``
    (None = per config), ``lr_weight_scale`` / ``lr_adapters`` (1e-6 / 1e-5 before scaling), ``lr_scale``
    (None = budget rule, or a float), ``lora_rank`` (32), ``side_rank`` (1), ``frame_mask`` (True), ``frames``,
    ``calib_steps`` (None = per config), ``layout`` (``"auto"``), ``seed``, ``checkpoint``, ``progress``,
    ``recompute`` and ``grad_checkpointing`` (``"auto"``, True, False) — training memory, module docstring.
    """

    Config = QVDiTConfig
    kinds = ("dit",)
    needs_calibration = True

    def default_config(self, kind, w_bits, a_bits, opts=None):
        if kind != "dit":
            logger.warning("q-vdit targets video DiTs; using its DiT recipe on a %s", kind)
        cfg = preset("dit", w_bits, a_bits)
        return replace(cfg, weight=QuantSpec(granularity="per_channel", init="grid_lp"),
                       act=QuantSpec(granularity="per_token", init="minmax"))

    def run(self, qmodel, fp_model, config, calib, opts: QVDiTConfig) -> dict[str, Any]:
        iters, alpha, layout = opts.iters, opts.alpha, opts.layout
        recompute, grad_checkpointing = opts.recompute, opts.grad_checkpointing
        official = official_settings(config.w_bits, config.a_bits)
        all_items = root_items(calib)
        if not all_items:
            raise ValueError("q-vdit needs calibration data (calib=...)")
        items = _evenly_spaced(all_items, official["step_fraction"], opts.calib_steps)
        torch.manual_seed(opts.seed)
        # 1. smoothing (statistics on the FP model: quantization is off while observing)
        alpha = official["alpha"] if alpha is None else float(alpha)
        absmax = activation_channel_absmax(qmodel, items, momentum=opts.act_momentum) if alpha > 0 else {}
        smoothed = apply_smoothing(absmax, alpha) if alpha > 0 else 0
        # 2. FP targets: the captured outputs, or the model itself with quantization off
        items = self._with_fp_outputs(qmodel, items)
        # 3. weight ranges (Q-VDiT's per-channel clipping grid), then the TQE terms (zero-initialised)
        n_w = init_weight_quantizers(qmodel)
        tqe_info = attach_tqe(qmodel, opts.lora_rank, opts.side_rank, frames=opts.frames, probe_item=items[0],
                              frame_mask=opts.frame_mask) if opts.tqe else {"tqe_layers": 0}
        # 4. whole-model output distillation
        use_tmd = official["tmd"] if opts.tmd is None else bool(opts.tmd)
        layout = _output_layout(qmodel) if layout == "auto" else layout
        if use_tmd and first_tensor(items[0].output).ndim != 5:
            raise ValueError("TMD needs 5-D video outputs; pass tmd=False for this model")
        if iters is None:
            iters = min(official["iters"], math.ceil(official["passes"] * len(items) / opts.batch_size))
        # budget rule (module docstring); below 100 iterations the factor is also capped at the iteration count
        scale = lr_budget_scale(official["iters"], iters) if opts.lr_scale is None else float(opts.lr_scale)
        lrs = {"weight_scale": opts.lr_weight_scale * scale}
        if opts.tqe:
            lrs["adapters"] = opts.lr_adapters * scale
        cfg = ReconConfig(iters=iters, batch_size=opts.batch_size, lrs=lrs, weight_decay=0.01, schedule="cosine",
                          seed=opts.seed, checkpoint=opts.checkpoint, progress=opts.progress,
                          recompute=None if recompute == "auto" else bool(recompute))
        terms = [TMDTerm(opts.lam, opts.tmd_mode, layout)] if use_tmd else [MSETerm()]
        large = sum(p.numel() for p in qmodel.parameters()) >= RECOMPUTE_MIN_PARAMS
        grad_checkpointing = large if grad_checkpointing == "auto" else grad_checkpointing
        recompute = large if recompute == "auto" else bool(recompute)
        blocks = _blocks_or_none(qmodel) if grad_checkpointing else []
        losses = output_distillation(qmodel, items, cfg, terms, checkpoint_blocks=blocks)
        return {"official": official, "lr_scale": scale,
                "smoothing_alpha": alpha, "smoothed_layers": smoothed, "weight_quantizers": n_w,
                **tqe_info, "tmd": use_tmd, "tmd_mode": opts.tmd_mode if use_tmd else None,
                "lambda": opts.lam if use_tmd else 0,
                "iters": iters, "lrs": lrs, "calibration_items_used": len(items), "recompute": recompute,
                "checkpointed_blocks": len(blocks),
                "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}

    @staticmethod
    @torch.no_grad()
    def _with_fp_outputs(qmodel: nn.Module, items: list) -> list:
        if all(it.output is not None for it in items):
            return items
        layers = [m for m in qmodel.modules() if isinstance(m, QLinear)]
        state = [(m.quant_input, m.quant_weight) for m in layers]
        for m in layers:
            m.quant_input = m.quant_weight = False
        device = next(qmodel.parameters()).device
        out = []
        try:
            for it in items:
                y = first_tensor(qmodel(*_to(it.args, device), **_to(it.kwargs, device))).detach().cpu()
                out.append(replace(it, output=y))
        finally:
            for m, (qi, qw) in zip(layers, state):
                m.quant_input, m.quant_weight = qi, qw
        return out

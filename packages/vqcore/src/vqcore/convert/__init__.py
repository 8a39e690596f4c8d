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

Modules: :mod:`.spec` (the layer description and the objects a layer is built from), :mod:`.layout` (container and
split-row maths), :mod:`.linear` / :mod:`.conv` (the integer layers), :mod:`.swap` (``convert``: checks and swaps a
fake-quant model's layers), :mod:`.io` (save/load, byte counts).
"""

from __future__ import annotations

from .conv import QConv2dInt, layer_class
from .io import _READS, FORMAT, int_weight_bytes, linear_weight_bytes, load_converted, save_converted
from .layout import mixed_width_container
from .linear import QLinearInt
from .spec import MIXED_LAYOUTS, ActQuant, IntLinearSpec, IntWeights, LayerExtras
from .swap import ATTENTION_MODES, Unsupported, set_submodule, step_selectors
from .swap import convert as convert  # after this line the package attribute ``convert`` is the function

# names the package had before it was split (``vqcore.integrations.diffusers`` imports them)
_layer_class, _set_submodule, _step_selectors = layer_class, set_submodule, step_selectors

__all__ = [
    "ATTENTION_MODES",
    "FORMAT",
    "MIXED_LAYOUTS",
    "ActQuant",
    "IntLinearSpec",
    "IntWeights",
    "LayerExtras",
    "QConv2dInt",
    "QLinearInt",
    "Unsupported",
    "convert",
    "int_weight_bytes",
    "linear_weight_bytes",
    "load_converted",
    "mixed_width_container",
    "save_converted",
    "_READS",
]

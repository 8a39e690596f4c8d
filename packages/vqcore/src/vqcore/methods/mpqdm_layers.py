"""MPQ-DM's layer pieces: the OMQ mixed-width weight quantizer and the in-quantizer LoRA (EfficientDM lineage).

``OMQQuantizer`` (Outlier-driven Mixed Quantization, MPQ-DM §3.2; code ``quant_scripts/quant_layer.py``,
``weight_quantizer_{small,mid,large_res}``): every output channel carries a bit-width ``n−1``, ``n`` or ``n+1``; each
width has its own per-channel quantizer and ``Ŵ = Σ_g mask_g ⊙ Q_g(W·s + BA)``. The ``n``-bit quantizer is the object
itself (so the core's ``scale`` / ``zero_point`` / ``calibrate`` keep working); the ``n−1`` and ``n+1`` ones are the
children ``low`` and ``high``. Masking is applied *after* quantization (the code quantizes masked weights, giving the
masked-out channels placeholder ranges; since each quantizer is per channel the kept channels are identical and the
dropped ones are exactly zero here instead of ``Q(0)``).

Integer form: :meth:`OMQQuantizer.quantize_codes` returns one code per weight, in the range of its channel's width,
with that channel's Δ and zp, so ``(codes − zp)·Δ`` is the fake-quantized weight; ``channel_bits`` is what
:func:`vqcore.convert` reads. ``bits`` reports the widest group (``n+1``). ``vqcore.convert`` stores a mixed-width layer
in the narrowest integer container (int4 / int8) that holds its n−1 and n channels, and each channel one bit wider than
that container (the n+1 group at W4 and W8) as two rows of the same GEMM (high digit, low bit; ``mixed_layout="split"``,
the default), or every channel in the container of the widest width (``mixed_layout="padded"``). The storage of each
choice is :meth:`OMQQuantizer.storage_bits`.

``MPQLoRA`` — rank-``r`` (32) LoRA added *inside* the weight quantizer: Linear ``B[out,r]·A[r,in]``; Conv as the code
(``QuantModule_lora``: ``loraA`` a conv with the original kernel → r channels, ``loraB`` r → C_out with the same kernel,
merged per kernel position ``B[:, :, i, j] @ A[:, :, i, j]``). ``B`` starts at zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..quant.modules import register_module_type
from ..quant.quantizer import QuantSpec, UniformQuantizer

__all__ = ["OMQQuantizer", "MPQLoRA", "MPQLayout", "low_bit_spec"]


def low_bit_spec(spec: QuantSpec, bits: int) -> QuantSpec:
    """A copy of ``spec`` at ``bits`` — also 1 bit (W2's ``n−1`` group), which :class:`QuantSpec` validation refuses
    for user configs: a 1-bit asymmetric quantizer has two levels ``{x_min, x_max}`` rounded onto ``(q − zp)·Δ``."""
    d = spec.to_dict()
    d["bits"] = min(max(bits, 2), 8)
    out = QuantSpec(**d)
    out.bits = int(bits)  # bypasses the [2, 8] check on purpose (1 bit for the n−1 group at W2)
    return out


class OMQQuantizer(UniformQuantizer):
    """Per-channel weight quantizer with a bit-width per output channel (``channel_bits``: values n−1, n, n+1)."""

    def __init__(self, spec: QuantSpec, channel_bits: torch.Tensor):
        super().__init__(spec)
        channel_bits = torch.as_tensor(channel_bits).long().reshape(-1)
        n = spec.bits
        if not set(channel_bits.tolist()) <= {n - 1, n, n + 1}:
            raise ValueError(f"channel_bits must take values in {{{n - 1}, {n}, {n + 1}}}")
        if spec.granularity != "per_channel":
            raise ValueError("OMQ needs a per_channel weight spec")
        self.register_buffer("channel_bits", channel_bits)
        self.low = UniformQuantizer(low_bit_spec(spec, n - 1))
        self.high = UniformQuantizer(low_bit_spec(spec, n + 1))

    @property
    def bits(self) -> int:  # the padded storage width used by the integer path
        return int(self.channel_bits.max())

    def _masks(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.spec.bits
        shape = (-1,) + (1,) * (w.ndim - 1)
        cb = self.channel_bits.view(shape)
        return ((cb == n - 1).to(w.dtype), (cb == n).to(w.dtype), (cb == n + 1).to(w.dtype))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, timestep: int | None = None) -> None:
        super().calibrate(x, timestep)
        self.low.calibrate(x)
        self.high.calibrate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        m_lo, m_mid, m_hi = self._masks(x)
        return m_lo * self.low(x) + m_mid * super().forward(x) + m_hi * self.high(x)

    def group_scales(self) -> list[nn.Parameter | torch.Tensor]:
        return [self.low.scale, self.scale, self.high.scale]

    @torch.no_grad()
    def quantize_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m_lo, m_mid, m_hi = (m.bool() for m in self._masks(x))
        outs = [self.low.quantize_codes(x), UniformQuantizer.quantize_codes(self, x), self.high.quantize_codes(x)]
        codes = torch.where(m_lo, outs[0][0], torch.where(m_hi, outs[2][0], outs[1][0]))
        scale = torch.where(m_lo, outs[0][1], torch.where(m_hi, outs[2][1], outs[1][1]))
        zp = torch.where(m_lo, outs[0][2], torch.where(m_hi, outs[2][2], outs[1][2]))
        return codes, scale, zp

    def storage_bits(self, per_channel_elements: int) -> dict[str, int]:
        """Weight-code storage in bits for ``per_channel_elements`` weights per output channel: ``packed`` (each
        channel at its own width — the information content), ``padded`` (every channel at the widest width), and
        what :func:`vqcore.convert` really stores, in its 4-/8-bit containers (before the int4 K padding to a multiple
        of 128): ``int_split`` (``mixed_layout="split"``: ``N + k`` container rows) and ``int_padded``
        (``mixed_layout="padded"``: the container of the widest width)."""
        from ..convert import mixed_width_container

        c = self.channel_bits.numel()
        e = per_channel_elements
        w_split, split = mixed_width_container(self.channel_bits, "split")
        w_pad, split_pad = mixed_width_container(self.channel_bits, "padded")

        def box(w: int) -> int:
            return 4 if w <= 4 else 8

        return {"padded": c * e * self.bits, "packed": int(self.channel_bits.sum()) * e,
                "int_split": (c + int(split.sum())) * e * box(w_split),
                "int_padded": (c + int(split_pad.sum())) * e * box(w_pad)}

    def extra_repr(self) -> str:
        n = self.spec.bits
        counts = {b: int((self.channel_bits == b).sum()) for b in (n - 1, n, n + 1)}
        return super().extra_repr() + f", omq_channels={counts}"


@register_module_type
class MPQLoRA(nn.Module):
    """Rank-``r`` weight delta for a Linear (``[out, in]``) or a Conv (``[out, in, *kernel]``) weight (see module
    docstring); ``forward()`` returns the delta in the weight's shape."""

    def __init__(self, weight_shape, rank: int = 32):
        super().__init__()
        shape = tuple(int(s) for s in weight_shape)
        if len(shape) < 2 or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"need a weight shape [out, in, ...] and a positive int rank, got {shape}, {rank!r}")
        out, inp, kernel = shape[0], shape[1], shape[2:]
        self.weight_shape, self.rank = shape, rank
        self.lora_A = nn.Parameter(torch.empty(rank, inp, *kernel))
        self.lora_B = nn.Parameter(torch.zeros(out, rank, *kernel))
        nn.init.kaiming_uniform_(self.lora_A.view(rank, -1) if not kernel else self.lora_A, a=math.sqrt(5))

    def forward(self) -> torch.Tensor:
        if len(self.weight_shape) == 2:
            return self.lora_B @ self.lora_A
        # per kernel position: B[:, :, k] @ A[:, :, k]
        return torch.einsum("or...,ri...->oi...", self.lora_B, self.lora_A)

    def vq_describe(self) -> dict:
        return {"weight_shape": list(self.weight_shape), "rank": self.rank}

    @classmethod
    def vq_build(cls, desc: dict) -> MPQLoRA:
        return cls(desc["weight_shape"], desc["rank"])


@register_module_type
class MPQLayout(nn.Module):
    """What ``vqcore.load`` must rebuild before an MPQ-DM checkpoint's tensors fit: the layers whose weight quantizer
    is an :class:`OMQQuantizer` (their ``channel_bits``, ``low``/``high`` ranges come from the state dict) and the
    layers whose activation quantizer holds a per-step table of ``table_rows`` rows. A method-level module
    (``vqcore_extra_modules``): :meth:`vq_prepare` runs on the freshly prepared model before the state dict is
    loaded."""

    def __init__(self, omq_layers, table_layers=(), table_rows: int = 0):
        super().__init__()
        self.omq_layers = [str(n) for n in omq_layers]
        self.table_layers = [str(n) for n in table_layers]
        self.table_rows = int(table_rows)
        if self.table_layers and self.table_rows < 1:
            raise ValueError(f"table_rows must be a positive int when table_layers are given, got {table_rows!r}")

    def vq_prepare(self, model: nn.Module) -> None:
        from dataclasses import replace

        from ..quant.modules import QuantModule

        for name in self.omq_layers:
            mod = model.get_submodule(name)
            wq = mod.weight_quantizer
            if not isinstance(mod, QuantModule) or wq is None:
                raise ValueError(f"{name} is not a quantized layer with a weight quantizer")
            if isinstance(wq, OMQQuantizer):
                continue
            omq = OMQQuantizer(wq.spec, torch.full((mod.weight.shape[0],), wq.spec.bits, dtype=torch.long))
            for q in (omq, omq.low, omq.high):  # same shapes/flags as the restored n-bit quantizer
                q.scale, q.zero_point = torch.zeros_like(wq.scale), torch.zeros_like(wq.zero_point)
                q.initialized, q.enabled = wq.initialized, wq.enabled
                if isinstance(wq.scale, nn.Parameter):
                    UniformQuantizer.make_learnable(q, zero_point=isinstance(wq.zero_point, nn.Parameter))
            mod.weight_quantizer = omq.to(mod.weight.device)
        for name in self.table_layers:
            aq = getattr(model.get_submodule(name), "input_quantizer", None)
            if aq is None or aq.dynamic:
                raise ValueError(f"{name} has no static activation quantizer for a per-step table")
            aq.spec = replace(aq.spec, timesteps=self.table_rows)

    def vq_describe(self) -> dict:
        return {"type": "MPQLayout", "omq_layers": self.omq_layers, "table_layers": self.table_layers,
                "table_rows": self.table_rows}

    @classmethod
    def vq_build(cls, desc: dict) -> MPQLayout:
        return cls(desc["omq_layers"], desc.get("table_layers", ()), desc.get("table_rows", 0))

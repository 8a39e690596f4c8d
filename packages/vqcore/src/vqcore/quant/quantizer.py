"""Uniform affine fake quantizers, as the official code bases of Q-VDiT, ViDiT-Q, EfficientDM and MPQ-DM define them.

Asymmetric (default, unsigned codes)::

    Δ = (x_max − x_min) / (2^b − 1),  x_min ≤ 0 ≤ x_max,  zp = round(−x_min / Δ)
    q = clamp(round(x / Δ) + zp, 0, 2^b − 1),  x̂ = (q − zp) · Δ

Symmetric (option, signed codes): ``Δ = max|x| / (2^(b−1) − 1)``, ``q = clamp(round(x / Δ), −2^(b−1), 2^(b−1) − 1)``.

Granularity: ``per_tensor``, ``per_channel`` (dim 0 of a weight), ``per_group`` (groups of ``group_size`` along the
input dim of a weight), ``per_token`` (dynamic, one range per row of the last dim), ``per_token_shared`` (dynamic, one
range per token *position* shared across the batch — ViDiT-Q/Q-VDiT's ``[BS, N, C] → [N, BS·C]``).

Range initialisation (static quantizers): ``minmax``; ``percentile``; ``mse`` (EfficientDM/MPQ-DM/LAPQ: 80 candidate
ranges shrunk by 1 % each, L_p error with p = 2.4); ``grid_lp`` (Q-VDiT's per-channel clipping-ratio grid
{0.02, …, 0.98}, L_2, per channel; ``include_unclipped=True`` adds 1.0, which the released code does not).

Rounding: straight-through (``round_ste``); ``learn="lsq"`` makes Δ (and zp) learnable parameters (gradients reach
them through the dequantisation as in the official code; LSQ's gradient scale is applied); ``learn="adaround"``
(weights only) learns a per-element rounding offset h(V) = clip(σ(V)·1.2 − 0.1, 0, 1) (Nagel et al. 2020) with its
regulariser :meth:`UniformQuantizer.rounding_loss`.

Per-timestep tables (EfficientDM/MPQ-DM's TALSQ): ``timesteps=T`` keeps ``T`` (Δ, zp) pairs; :meth:`set_timestep`
selects the row used by the next forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .heap import release_freed_memory

__all__ = ["QuantSpec", "UniformQuantizer", "round_ste", "GRANULARITIES", "INIT_METHODS"]

GRANULARITIES = ("per_tensor", "per_channel", "per_group", "per_token", "per_token_shared")
INIT_METHODS = ("minmax", "percentile", "mse", "grid_lp")
_DYNAMIC = ("per_token", "per_token_shared")
#: elements per chunk of a row-separable range search (2 MiB of float32): bounded temporaries, and the chunk's ~10
#: passes per candidate run in cache (the 49-candidate grid_lp search is several times faster than on whole tensors)
CHUNK_ELEMENTS = 2**19


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient (identity)."""
    return (x.round() - x).detach() + x


@dataclass
class QuantSpec:
    """What one quantizer does. Validated on construction."""

    bits: int = 8
    symmetric: bool = False
    granularity: Literal["per_tensor", "per_channel", "per_group", "per_token", "per_token_shared"] = "per_tensor"
    group_size: int = 0
    init: Literal["minmax", "percentile", "mse", "grid_lp"] = "minmax"
    percentile: float = 99.99
    lp: float = 2.4
    include_unclipped: bool = False
    learn: Literal["none", "lsq", "adaround"] = "none"
    timesteps: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an int in [2, 8], got {self.bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "per_group" and (not isinstance(self.group_size, int) or self.group_size < 2):
            raise ValueError(f"per_group needs group_size >= 2, got {self.group_size!r}")
        if self.init not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got {self.init!r}")
        if self.learn not in ("none", "lsq", "adaround"):
            raise ValueError(f"learn must be 'none', 'lsq' or 'adaround', got {self.learn!r}")
        if self.dynamic and (self.learn != "none" or self.timesteps):
            raise ValueError("dynamic (per-token) quantizers compute their range every call: learn must be 'none' "
                             "and timesteps 0")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")
        if not isinstance(self.timesteps, int) or self.timesteps < 0:
            raise ValueError(f"timesteps must be a non-negative int, got {self.timesteps!r}")

    @property
    def dynamic(self) -> bool:
        return self.granularity in _DYNAMIC

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def to_dict(self) -> dict:
        return asdict(self)


class UniformQuantizer(nn.Module):
    """Fake-quantize tensors (see module docstring). ``forward(x)`` returns ``x̂`` with straight-through gradients.

    Static quantizers initialise their range from the first tensor they see (or :meth:`calibrate`); dynamic ones
    (per-token) compute it from every input. ``enabled=False`` makes the quantizer the identity.
    """

    def __init__(self, spec: QuantSpec | None = None, **kwargs):
        super().__init__()
        self.spec = spec if spec is not None else QuantSpec(**kwargs)
        if spec is not None and kwargs:
            raise TypeError("pass either spec or keyword arguments, not both")
        self.enabled = True
        self.initialized = False
        self._t = 0
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0))
        self.alpha: nn.Parameter | None = None  # AdaRound's V

    # -- properties used by vqcore.convert and the methods ---------------------------------------------------------
    bits = property(lambda self: self.spec.bits)
    symmetric = property(lambda self: self.spec.symmetric)
    granularity = property(lambda self: self.spec.granularity)
    group_size = property(lambda self: self.spec.group_size)
    dynamic = property(lambda self: self.spec.dynamic)

    def set_timestep(self, index: int) -> None:
        """Select the (Δ, zp) row used next (per-timestep tables); ignored without a table."""
        if self.spec.timesteps and not 0 <= index < self.spec.timesteps:
            raise ValueError(f"timestep index must be in [0, {self.spec.timesteps}), got {index}")
        self._t = int(index)

    # -- range computation -----------------------------------------------------------------------------------------
    def _reduce_dims(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Reshape ``x`` so the quantization groups are rows, returning (view, dims to reduce)."""
        g = self.spec.granularity
        if g == "per_tensor":
            return x, tuple(range(x.ndim))
        if g == "per_channel":
            return x, tuple(range(1, x.ndim))
        if g == "per_group":
            k = x.shape[1]
            if k % self.spec.group_size:
                raise ValueError(f"input dim {k} is not divisible by group_size={self.spec.group_size}")
            xg = x.reshape(x.shape[0], k // self.spec.group_size, self.spec.group_size, *x.shape[2:])
            return xg, (2, *range(3, xg.ndim))
        if g == "per_token":
            return x, (x.ndim - 1,)
        # per_token_shared: [B, N, C] → one range per N shared across B and C
        if x.ndim < 3:
            return x, (x.ndim - 1,)
        return x, (0, x.ndim - 1)

    def _qparams_from_range(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        if spec.symmetric:
            scale = torch.maximum(lo.abs(), hi.abs()).clamp_min(1e-8) / spec.qmax
            return scale, torch.zeros_like(scale)
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = ((hi - lo) / (2**spec.bits - 1)).clamp_min(1e-8)
        return scale, torch.round(-lo / scale)

    def compute_qparams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Min-max (Δ, zp) for ``x`` at this quantizer's granularity, shaped to broadcast against the grouped view."""
        xg, dims = self._reduce_dims(x.detach())
        return self._qparams_from_range(xg.amin(dim=dims, keepdim=True), xg.amax(dim=dims, keepdim=True))

    def _fake(self, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, ste: bool = True,
              soft_round: torch.Tensor | None = None) -> torch.Tensor:
        spec = self.spec
        if soft_round is None and not (torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad
                                                                    or zp.requires_grad)):
            # No autograd graph to build (sampling, evaluation, range search): the same arithmetic in place on one
            # buffer. Bit-identical to the path below (round_ste's forward value is exactly round(x): r − x is exact
            # for |r − x| ≤ ½ and adding x back gives the representable r), and several times faster on CPU,
            # where fresh full-size temporaries dominate the cost of fake-quantizing activations.
            q = x / scale
            return q.round_().add_(zp).clamp_(spec.qmin, spec.qmax).sub_(zp).mul_(scale)
        if (soft_round is None and ste and not zp.requires_grad and x.ndim >= 2 and scale.ndim == x.ndim
                and scale.shape[0] == x.shape[0] and _clamp_edges() is not None):
            return _FakeQuantSTE.apply(x, scale, zp, spec.qmin, spec.qmax)
        if soft_round is not None:  # AdaRound: floor + learned offset in [0, 1]
            q = torch.floor(x / scale).detach() + soft_round
        else:
            q = round_ste(x / scale) if ste else torch.round(x / scale)
        q = torch.clamp(q + zp, spec.qmin, spec.qmax)
        return (q - zp) * scale

    def _search_range(self, xg: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        lo, hi = xg.amin(dim=dims, keepdim=True), xg.amax(dim=dims, keepdim=True)
        if spec.init == "minmax":
            return self._qparams_from_range(lo, hi)
        if spec.init == "percentile":
            flat = xg.movedim([d for d in range(xg.ndim) if d not in dims], list(range(xg.ndim - len(dims))))
            flat = flat.reshape(*flat.shape[: xg.ndim - len(dims)], -1).float()
            q = torch.tensor([1 - spec.percentile / 100, spec.percentile / 100], device=xg.device)
            lo_p = torch.quantile(flat, q[0], dim=-1)
            hi_p = torch.quantile(flat, q[1], dim=-1)
            shape = lo.shape
            return self._qparams_from_range(lo_p.reshape(shape), hi_p.reshape(shape))
        if spec.init == "mse":  # 80 candidates, range shrunk 1 % each, L_p error (EfficientDM / MPQ-DM)
            ratios = [1.0 - 0.01 * i for i in range(80)]
            p = spec.lp
        else:  # grid_lp: Q-VDiT's per-channel clipping grid, L_2 error
            ratios = [0.02 * i for i in range(1, 50)] + ([1.0] if spec.include_unclipped else [])
            p = 2.0
        best_err = best_scale = best_zp = None
        for r in ratios:
            scale, zp = self._qparams_from_range(lo * r, hi * r)
            with torch.no_grad():  # in place on the fresh fake-quantized tensor: no extra full-size temporaries
                err = _abs_pow_(self._fake(xg, scale, zp, ste=False).sub_(xg), p).sum(dim=dims, keepdim=True)
            if best_err is None:
                best_err, best_scale, best_zp = err, scale, zp
            else:
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best_scale = torch.where(better, scale, best_scale)
                best_zp = torch.where(better, zp, best_zp)
        return best_scale, best_zp

    @property
    def row_separable(self) -> bool:
        """The range search of each output row (dim 0) depends on that row only, and gives the same bits whether the
        rows are searched together or in chunks: ``per_channel``/``per_group`` with ``minmax`` (exact min/max),
        ``grid_lp`` (exact element-wise ops, each row summed by itself) or ``percentile`` (per-row sort). ``mse``
        is left whole: its ``|e|^2.4`` uses ``exp``/``log``, whose vectorised and scalar-tail results may differ in
        the last bit, so a different split of the tensor could move a near-tie."""
        return (self.spec.granularity in ("per_channel", "per_group")
                and self.spec.init in ("minmax", "grid_lp", "percentile"))

    def _search_rows(self, rows: Callable[[int, int], torch.Tensor], n_rows: int, row_numel: int,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Δ, zp) of ``rows(0, n_rows)`` searched ``CHUNK_ELEMENTS`` at a time (:attr:`row_separable`)."""
        step = max(1, CHUNK_ELEMENTS // max(row_numel, 1))
        scales, zps = [], []
        for start in range(0, n_rows, step):
            xg, dims = self._reduce_dims(rows(start, min(start + step, n_rows)).detach().float())
            scale, zp = self._search_range(xg, dims)
            scales.append(scale)
            zps.append(zp)
        return torch.cat(scales), torch.cat(zps)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, timestep: int | None = None) -> None:
        """Initialise Δ, zp from ``x`` (static quantizers). With a per-timestep table, fill row ``timestep`` (or every
        row when ``timestep`` is None). Row-separable searches (:attr:`row_separable`) run on chunks of
        ``CHUNK_ELEMENTS`` elements of ``x`` (the same Δ, zp, with float32 temporaries of a few MiB instead of
        several copies of the whole tensor)."""
        if self.spec.dynamic:
            return
        if self.row_separable and x.ndim >= 2:
            scale, zp = self._search_rows(lambda a, b: x[a:b], x.shape[0], x[0].numel())
        else:
            xg, dims = self._reduce_dims(x.detach().float())
            scale, zp = self._search_range(xg, dims)
        self._store_qparams(scale, zp, x.device, timestep)

    @torch.no_grad()
    def calibrate_rows(self, rows: Callable[[int, int], torch.Tensor], n_rows: int, row_numel: int,
                       device: torch.device, timestep: int | None = None) -> None:
        """:meth:`calibrate` on a tensor given by its row slices ``rows(start, stop)`` (e.g. the rows of a smoothed
        weight ``W[start:stop] · s``), so the whole tensor is never materialised; falls back to ``rows(0, n_rows)``
        when the search is not row-separable."""
        if self.spec.dynamic:
            return
        if not self.row_separable:
            self.calibrate(rows(0, n_rows), timestep)
            return
        scale, zp = self._search_rows(rows, n_rows, row_numel)
        self._store_qparams(scale, zp, device, timestep)

    def _store_qparams(self, scale: torch.Tensor, zp: torch.Tensor, device: torch.device,
                       timestep: int | None) -> None:
        T = self.spec.timesteps
        if T:
            if self.scale.numel() == 0:
                self.scale = scale.unsqueeze(0).repeat(T, *([1] * scale.ndim)).to(device)
                self.zero_point = zp.unsqueeze(0).repeat(T, *([1] * zp.ndim)).to(device)
            elif timestep is None:
                self.scale[:] = scale
                self.zero_point[:] = zp
            if timestep is not None:
                self.scale[timestep] = scale
                self.zero_point[timestep] = zp
        else:
            self.scale, self.zero_point = scale.to(device), zp.to(device)
        self.initialized = True
        if self.spec.learn == "lsq":
            self.make_learnable()

    def make_learnable(self, zero_point: bool = False) -> None:
        """Turn Δ (and optionally zp) into parameters (LSQ-style learning of the step size)."""
        if not self.initialized:
            raise RuntimeError("calibrate the quantizer before making it learnable")
        if not isinstance(self.scale, nn.Parameter):
            scale = self.scale.detach().clone()
            del self.scale
            self.scale = nn.Parameter(scale)
        if zero_point and not isinstance(self.zero_point, nn.Parameter):
            zp = self.zero_point.detach().clone()
            del self.zero_point
            self.zero_point = nn.Parameter(zp)

    def init_adaround(self, w: torch.Tensor) -> None:
        """Start AdaRound's V so that h(V) equals the fractional part of ``w / Δ`` (i.e. round-to-nearest ≈ h)."""
        if not self.initialized:
            self.calibrate(w)
        xg, _ = self._reduce_dims(w.detach())
        rest = (xg / self.scale) - torch.floor(xg / self.scale)
        v = -torch.log((1.2 - 0.1) / (rest.clamp(0.01, 0.99) + 0.1) - 1)
        self.alpha = nn.Parameter(v)

    def soft_rounding(self) -> torch.Tensor | None:
        if self.alpha is None:
            return None
        h = torch.clamp(torch.sigmoid(self.alpha) * 1.2 - 0.1, 0, 1)
        return h if self.training else (h >= 0.5).float()

    def rounding_loss(self, beta: float) -> torch.Tensor:
        """AdaRound's regulariser ``Σ 1 − |2h − 1|^β`` (0 when every offset is hard 0/1)."""
        if self.alpha is None:
            return torch.zeros(())
        h = torch.clamp(torch.sigmoid(self.alpha) * 1.2 - 0.1, 0, 1)
        return (1 - (2 * h - 1).abs().pow(beta)).sum()

    def current_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Δ, zp) used by the next forward of a static quantizer (the selected timestep row if tabled)."""
        if not self.initialized:
            raise RuntimeError("quantizer is not calibrated yet")
        if self.spec.timesteps:
            return self.scale[self._t], self.zero_point[self._t]
        return self.scale, self.zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if x.dtype in (torch.float16, torch.bfloat16):  # codes and ranges in float32, x̂ in the input's dtype
            return self._forward(x.float()).to(x.dtype)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.dynamic:
            xg, _ = self._reduce_dims(x)
            scale, zp = self.compute_qparams(x)
            return self._fake(xg, scale, zp).reshape(x.shape)
        if not self.initialized:
            self.calibrate(x)
        scale, zp = self.current_qparams()
        if isinstance(self.scale, nn.Parameter) and self.spec.learn == "lsq":
            # LSQ gradient scale 1/sqrt(numel · qmax): keeps the step's gradient in proportion to the weights'
            g = 1.0 / math.sqrt(max(x.numel() // max(scale.numel(), 1), 1) * self.spec.qmax)
            scale = (scale - scale * g).detach() + scale * g
        xg, _ = self._reduce_dims(x)
        return self._fake(xg, scale, zp, soft_round=self.soft_rounding()).reshape(x.shape)

    @torch.no_grad()
    def quantize_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integer codes of ``x`` (as the forward rounds them: in float32) with their Δ and zp."""
        x = x.float()
        if self.spec.dynamic:
            scale, zp = self.compute_qparams(x)
            xg, _ = self._reduce_dims(x)
        else:
            if not self.initialized:
                self.calibrate(x)
            scale, zp = self.current_qparams()
            xg, _ = self._reduce_dims(x)
        h = self.soft_rounding()
        q = torch.floor(xg / scale) + h if h is not None else torch.round(xg / scale)
        q = torch.clamp(q + zp, self.spec.qmin, self.spec.qmax)
        return q.reshape(x.shape), scale, zp

    def extra_repr(self) -> str:
        s = self.spec
        extra = f", group={s.group_size}" if s.granularity == "per_group" else ""
        table = f", timesteps={s.timesteps}" if s.timesteps else ""
        return (f"bits={s.bits}, {'sym' if s.symmetric else 'asym'}, {s.granularity}{extra}, init={s.init}, "
                f"learn={s.learn}{table}, enabled={self.enabled}")


_CLAMP_EDGES: list = []


def _clamp_edges() -> tuple[bool, bool] | None:
    """Whether ``torch.clamp``'s backward passes the gradient at ``x == min`` and at ``x == max`` (torch versions
    differ); None (use the autograd graph) if it does anything but pass or block there."""
    if not _CLAMP_EDGES:
        with torch.enable_grad():
            u = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
            (g,) = torch.autograd.grad(torch.clamp(u, 0, 2).sum(), u)
        edges = (float(g[0]), float(g[2]))
        _CLAMP_EDGES.append((edges[0] == 1.0, edges[1] == 1.0) if set(edges) <= {0.0, 1.0} else None)
    return _CLAMP_EDGES[0]


_clamp_edges()  # probed at import: a first probe inside a checkpointed forward would save tensors the recompute doesn't


class _FakeQuantSTE(torch.autograd.Function):
    """``x̂ = (clamp(round(x / Δ) + zp, qmin, qmax) − zp) · Δ`` with the straight-through gradient — the values and
    gradients of the autograd graph that :meth:`UniformQuantizer._fake` builds (``round_ste``), with less memory.

    That graph keeps ``x``, ``round(x / Δ) + zp`` (for the clamp mask) and ``q − zp`` (for ``∂/∂Δ``), three float32
    copies of a weight, and its backward pass makes about five more. Here only ``x`` is kept; the backward pass
    recomputes ``u = round(x / Δ) + zp`` and ``v = clamp(u) − zp`` on chunks of ``CHUNK_ELEMENTS`` along dim 0 and
    applies the formulas autograd uses for that graph, term by term and in the same order:

    * ``MulBackward`` (``x̂ = v · Δ``): ``g_v = g · Δ``; ``g_Δ¹ = Σ g · v``;
    * ``ClampBackward1``: ``g_u = where(qmin < u < qmax, g_v, 0)``, with ``u = qmin``/``qmax`` passing or not as this
      torch's clamp backward does (probed once, :func:`_clamp_edges`: torch 2.14 passes neither); the ``+ zp``,
      ``− zp`` and the STE pass it on;
    * ``DivBackward0`` (``t = x / Δ``): ``g_x = g_u / Δ``; ``g_Δ² = Σ −g_u · ((x / Δ) / Δ)``;
    * ``g_Δ = g_Δ¹ + g_Δ²`` (Σ over the dims Δ broadcasts on, as ``sum_to`` reduces them).

    Dim 0 is never summed over (``Δ`` has one entry per row: per channel, per group, per token), so each chunk's values
    are those of the whole tensor (tests compare the gradients with the autograd graph's exactly)."""

    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):  # noqa: D102
        ctx.save_for_backward(x, scale, zp)
        ctx.bounds = (qmin, qmax)
        q = x / scale
        return q.round_().add_(zp).clamp_(qmin, qmax).sub_(zp).mul_(scale)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        x, scale, zp = ctx.saved_tensors
        qmin, qmax = ctx.bounds
        if x.device.type == "cpu":  # the recomputed forward's temporaries are free now (vqcore.quant.heap)
            release_freed_memory()
        need_x, need_s = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x) if need_x else None
        rows = x.shape[0]
        sums = tuple(i for i in range(x.ndim) if scale.shape[i] == 1 and g.shape[i] != 1)
        grad_s = [] if need_s else None

        def rows_of(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
            return t[a:b] if t.ndim and t.shape[0] == rows else t

        step = max(1, CHUNK_ELEMENTS // max(x[0].numel(), 1))
        for a in range(0, rows, step):
            b = min(a + step, rows)
            xr, gr, sr, zr = x[a:b], g[a:b], rows_of(scale, a, b), rows_of(zp, a, b)
            u = (xr / sr).round_().add_(zr)
            lo_in, hi_in = _clamp_edges()
            mask = ((u >= qmin) if lo_in else (u > qmin)).logical_and_((u <= qmax) if hi_in else (u < qmax))
            g_u = torch.where(mask, gr * sr, torch.zeros((), dtype=g.dtype))
            if need_x:
                grad_x[a:b] = g_u / sr
            if need_s:
                v = u.clamp_(qmin, qmax).sub_(zr)
                s1 = (gr * v).sum(sums, keepdim=True) if sums else gr * v
                s2 = -g_u * ((xr / sr) / sr)
                s2 = s2.sum(sums, keepdim=True) if sums else s2
                grad_s.append(s1 + s2)
        return grad_x, torch.cat(grad_s) if need_s else None, None, None, None


def _abs_pow_(e: torch.Tensor, p: float) -> torch.Tensor:
    """``|e|^p`` in place. ``p = 2`` squares (exactly ``pow(2)``); other exponents use ``exp(p·log|e|)`` (0 stays 0),
    on the CPU, equal to ``pow`` to float32 rounding (~1e-6 relative) and ~3× faster there, where ``pow`` with a
    fractional exponent dominated the 80-candidate ``mse`` range search (EfficientDM/MPQ-DM's L_2.4 error)."""
    e.abs_()
    if p == 2.0:
        return e.mul_(e)
    if p == 1.0:
        return e
    if e.device.type != "cpu":  # memory-bound there: one pass beats three
        return e.pow_(p)
    return e.log_().mul_(p).exp_()


def lp_error(x: torch.Tensor, x_hat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean ``|x − x̂|^p`` (used by range searches and tests)."""
    return (x - x_hat).abs().pow(p).mean()


_ = F  # re-exported for methods that build on this module

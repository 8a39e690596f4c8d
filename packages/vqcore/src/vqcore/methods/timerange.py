"""ViDiT-Q's timestep-aware channel balancing (``w4a8_timestep_aware_cb.yaml``): one SmoothQuant vector and one
weight-quantizer range per timestep range (official: ``timerange: [[0, 500], [501, 1000]]``).

:class:`TimeRangeSwitch` keeps, for every quantized layer, the smoothing vector ``s_r`` and the weight quantizer's
``(Δ_r, zp_r)`` of each range ``r`` as buffers, and a forward pre-hook on the root model loads the row of the range
that contains the call's ``timestep`` into the layers before they run. It is a method-level module
(``vqcore_extra_modules``), so ``vqcore.save``/``vqcore.load`` keep it and re-attach the hook.

Limit: integer export of time-range models (and of per-timestep *weight* tables) is not supported:
``vqcore.convert`` raises ``Unsupported`` naming the layer (with ``strict=False`` those layers stay fake-quant and keep
switching per timestep). Per-timestep *activation* tables (:class:`StepTableSelector`, MPQ-DM/EfficientDM) do convert:
the integer layer keeps the ``T`` (Δ, zp) rows and the same selector picks its row per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..quant.modules import QuantModule, register_module_type

__all__ = ["TimeRangeSwitch", "check_timeranges", "StepTableSelector", "attach_step_tables"]


def check_timeranges(timeranges) -> list[tuple[float, float]]:
    """Validate ``[[lo, hi], ...]`` (inclusive, non-overlapping)."""
    try:
        ranges = [(float(lo), float(hi)) for lo, hi in timeranges]
    except (TypeError, ValueError) as err:
        raise ValueError(f"timeranges must be a list of [lo, hi] pairs, got {timeranges!r}") from err
    if len(ranges) < 2 or any(lo > hi for lo, hi in ranges):
        raise ValueError(f"timeranges must hold at least two [lo, hi] pairs with lo <= hi, got {timeranges!r}")
    ordered = sorted(ranges)
    if any(a[1] >= b[0] for a, b in zip(ordered, ordered[1:])):
        raise ValueError(f"timeranges must not overlap, got {timeranges!r}")
    return ranges


@register_module_type
class TimeRangeSwitch(nn.Module):
    """Per-timestep-range smoothing vectors and weight ranges of named layers (see module docstring)."""

    def __init__(self, ranges: Sequence[Sequence[float]], layers: Sequence[tuple[str, dict[str, list[int]]]]):
        super().__init__()
        self.ranges = check_timeranges(ranges)
        # an ordered list (buffer i belongs to layer i): JSON configs may be written with sorted keys
        self.layer_shapes = {name: dict(shapes) for name, shapes in layers}
        self.current = -1
        for i, shapes in enumerate(self.layer_shapes.values()):
            for key, shape in shapes.items():
                self.register_buffer(f"{key}_{i}", torch.zeros(shape))
        object.__setattr__(self, "_layers", [])  # resolved by attach(); not registered as children

    def index_of(self, t: float) -> int:
        for r, (lo, hi) in enumerate(self.ranges):
            if lo <= t <= hi:
                return r
        return min(range(len(self.ranges)), key=lambda r: min(abs(t - self.ranges[r][0]), abs(t - self.ranges[r][1])))

    @torch.no_grad()
    def record(self, r: int) -> None:
        """Store the layers' current smoothing vector and weight range as range ``r``."""
        for i, mod in enumerate(self._layers):
            getattr(self, f"s_{i}")[r] = mod.smooth_scale
            getattr(self, f"ws_{i}")[r] = mod.weight_quantizer.scale
            getattr(self, f"wz_{i}")[r] = mod.weight_quantizer.zero_point

    @torch.no_grad()
    def select(self, r: int) -> None:
        for i, mod in enumerate(self._layers):
            mod._buffers["smooth_scale"] = getattr(self, f"s_{i}")[r].clone()  # own storage: safetensors-safe
            mod.weight_quantizer.scale = getattr(self, f"ws_{i}")[r].clone()
            mod.weight_quantizer.zero_point = getattr(self, f"wz_{i}")[r].clone()
            mod.weight_quantizer.initialized = True
        self.current = r

    def _pre_hook(self, module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if t is None:
            raise ValueError("a time-range quantized model needs the `timestep` argument in every call")
        t = float(torch.as_tensor(t).flatten()[0])
        r = self.index_of(t)
        if r != self.current:
            self.select(r)

    def vq_attach(self, model: nn.Module) -> None:
        """Resolve the layers in ``model`` and register the range-selecting pre-hook on it."""
        self.bind(model)
        model.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        self.current = -1

    def bind(self, model: nn.Module) -> None:
        """Resolve the layers in ``model`` (no hook: :meth:`record` during calibration)."""
        layers = []
        for name in self.layer_shapes:
            mod = model.get_submodule(name)
            if not isinstance(mod, QuantModule) or mod.weight_quantizer is None:
                raise ValueError(f"{name} is not a quantized layer with a weight quantizer")
            if isinstance(mod.weight_quantizer.scale, nn.Parameter):
                raise ValueError(f"{name}: learnable weight ranges are not supported with timestep ranges")
            layers.append(mod)
        object.__setattr__(self, "_layers", layers)

    def vq_describe(self) -> dict:
        return {"type": "TimeRangeSwitch", "ranges": [list(r) for r in self.ranges],
                "layers": [[k, v] for k, v in self.layer_shapes.items()]}

    @classmethod
    def vq_build(cls, desc: dict) -> TimeRangeSwitch:
        return cls(desc["ranges"], desc["layers"])


@register_module_type
class StepTableSelector(nn.Module):
    """Inference-time row selection for per-timestep quantizer tables (EfficientDM/MPQ-DM's TALSQ).

    Row ``k`` of every tabled quantizer (``QuantSpec(timesteps=T)``) belongs to the ``k``-th timestep of the sampling
    schedule ``timesteps`` (the order :func:`vqcore.recon.rollout_distillation` trains them in). A forward pre-hook on
    the root model picks the row of the schedule timestep nearest to the call's ``timestep``, so a sampler needs no
    changes. Attach with :func:`attach_step_tables`; ``save``/``load`` keep it.
    """

    def __init__(self, timesteps: Sequence[float]):
        super().__init__()
        ts = [float(t) for t in timesteps]
        if not ts:
            raise ValueError("timesteps must be a non-empty sequence of the sampling schedule's timesteps")
        self.timesteps = ts
        object.__setattr__(self, "_tabled", [])

    def index_of(self, t: float) -> int:
        return min(range(len(self.timesteps)), key=lambda k: abs(self.timesteps[k] - t))

    def _pre_hook(self, module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if t is None:
            raise ValueError("a model with per-timestep quantizer tables needs the `timestep` argument in every call")
        k = self.index_of(float(torch.as_tensor(t).flatten()[0]))
        for q in self._tabled:
            q.set_timestep(k)

    def bind(self, model: nn.Module) -> None:
        """Resolve the tabled quantizers of ``model`` (anything with ``spec.timesteps`` and ``set_timestep``: the
        fake-quant ``UniformQuantizer`` tables, and the integer layers of ``vqcore.convert`` that hold a table) without
        registering a hook — ``vqcore.convert`` calls it after swapping layers, so the same pre-hook drives both."""
        tabled = [m for m in model.modules() if getattr(getattr(m, "spec", None), "timesteps", 0)
                  and hasattr(m, "set_timestep")]
        if not tabled:
            raise ValueError("the model has no per-timestep quantizer tables (QuantSpec(timesteps=T))")
        wrong = sorted({m.spec.timesteps for m in tabled} - {len(self.timesteps)})
        if wrong:
            raise ValueError(f"quantizer tables have {wrong} rows but the schedule has {len(self.timesteps)} timesteps")
        object.__setattr__(self, "_tabled", tabled)

    def vq_attach(self, model: nn.Module) -> None:
        self.bind(model)
        model.register_forward_pre_hook(self._pre_hook, with_kwargs=True)

    def vq_describe(self) -> dict:
        return {"type": "StepTableSelector", "timesteps": self.timesteps}

    @classmethod
    def vq_build(cls, desc: dict) -> StepTableSelector:
        return cls(desc["timesteps"])


def attach_step_tables(qmodel: nn.Module, timesteps: Sequence[float]) -> StepTableSelector:
    """Make ``qmodel`` select its per-timestep quantizer rows from the call's timestep (see :class:`StepTableSelector`);
    registered as the extra module ``vq_step_tables`` so ``vqcore.save``/``load`` keep it."""
    selector = StepTableSelector([float(t) for t in timesteps])
    selector.vq_attach(qmodel)
    qmodel.add_module("vq_step_tables", selector)
    qmodel.vqcore_extra_modules = {**getattr(qmodel, "vqcore_extra_modules", {}), "vq_step_tables": selector}
    return selector

"""``prepare(model, config)``: swap a model's linears/convs for fake-quantized ones by rules.

Rules, in order: a layer is quantized if it is an ``nn.Linear`` (or ``nn.Conv2d``/``nn.Conv3d`` when
``config.quantize_conv``) whose qualified name matches ``include`` (default: everything), matches no ``exclude``
pattern and no ``keep_fp`` pattern. ``overrides`` then set per-layer bits by pattern (first match wins), and
``first_last_8bit`` keeps the first ``n`` and the last quantized layer at W8A8 (EfficientDM/MPQ-DM on UNets).
Patterns are ``fnmatch`` globs over qualified module names (``transformer_blocks.*.ff.*``).

Presets reproduce the mixed-precision allocations the papers state (every benchmark row says which it used):

- ``"dit"`` (ViDiT-Q / Q-VDiT on video DiTs): quantize linears only; embedders, time/condition projections,
  adaLN/modulation linears and the final layer stay FP; with ``w_bits ≤ 4`` or ``a_bits ≤ 6`` the MLP linears stay
  W8A8 (Q-VDiT's ``weight_{3,4}_mp.yaml`` / ``act_6_mp.yaml``). Layers are chosen by their role in the block
  (:mod:`vqcore.quant.roles`, e.g. Flux/HunyuanVideo single-stream ``proj_mlp``/``proj_out`` are MLP linears, Wan's
  ``ffn`` and MMDiT ``ff_context`` too); the name patterns below are the fallback for unrecognised models.
- ``"unet"`` (Q-Diffusion / EfficientDM / MPQ-DM on UNets): convs and linears except ``skip``/``op`` modules (shortcut
  1×1 convs and downsamplers), time embedding FP, first three and last layers W8A8.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from torch import nn

from .attention import quantize_attention
from .modules import QConv2d, QConv3d, QLinear, QuantModule
from .quantizer import QuantSpec

__all__ = ["QuantConfig", "prepare", "quantized_layers", "preset", "LayerPlan"]

logger = logging.getLogger(__name__)

DIT_KEEP_FP = (
    "*patch_embed*", "*pos_embed*", "*time_embedding*", "*time_proj*", "*timestep*", "*t_embedder*",
    "*adaln_single*", "*caption_projection*", "*text_proj*", "*class_embedding*", "*norm_out*", "*proj_out*",
    "*emb*", "*norm*.linear", "*final_layer*",
)
DIT_MLP = ("*.ff.*", "*.mlp.*", "*feed_forward*")
UNET_EXCLUDE = ("*skip*", "*conv_shortcut*", "*downsamplers*", "*.op", "*time_embedding*", "*class_embedding*",
                "*time_emb_proj*")


@dataclass
class QuantConfig:
    """How to quantize a model. Bits are the default; ``overrides`` adjust them per layer.

    Args:
        w_bits, a_bits: default weight / activation bits (2–8); ``a_bits=None`` keeps activations in floating point.
        weight: quantizer spec template for weights (``bits`` is overwritten per layer).
        act: quantizer spec template for activations.
        include, exclude, keep_fp: fnmatch patterns over qualified module names.
        overrides: ``[(pattern, w_bits, a_bits)]``, first match wins.
        quantize_conv: also quantize Conv2d/Conv3d.
        first_last_8bit: number of leading layers (plus the last one) forced to W8A8; 0 disables.
        attention_bits: ``None`` (default) keeps the attention products ``Q·Kᵀ`` and ``attn·V`` in floating point as
            the official video code does; ``b`` fake-quantizes both operands of both products per token at ``b``
            bits (newer ViDiT-Q), see :mod:`vqcore.quant.attention`.
        roles: choose linears by their role in the block (:mod:`vqcore.quant.roles`) instead of by name: linears
            whose role is in ``fp_roles`` stay floating point, ``role_overrides`` ``[(role, w_bits, a_bits)]`` set
            bits per role; ``keep_fp`` and ``overrides`` (name patterns) are then only the fallback for a model
            whose blocks are not recognised (a warning says so). ``exclude``/``include`` always apply.
    """

    w_bits: int = 8
    a_bits: int | None = 8
    weight: QuantSpec = field(default_factory=lambda: QuantSpec(granularity="per_channel", init="minmax"))
    act: QuantSpec = field(default_factory=lambda: QuantSpec(granularity="per_token"))
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    keep_fp: tuple[str, ...] = ()
    overrides: tuple[tuple[str, int, int | None], ...] = ()
    quantize_conv: bool = False
    first_last_8bit: int = 0
    attention_bits: int | None = None
    roles: bool = False
    fp_roles: tuple[str, ...] = ()
    role_overrides: tuple[tuple[str, int, int | None], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.w_bits, int) or not 2 <= self.w_bits <= 8:
            raise ValueError(f"w_bits must be an int in [2, 8], got {self.w_bits!r}")
        if self.a_bits is not None and (not isinstance(self.a_bits, int) or not 2 <= self.a_bits <= 8):
            raise ValueError(f"a_bits must be an int in [2, 8] or None, got {self.a_bits!r}")
        if isinstance(self.weight, dict):
            self.weight = QuantSpec(**self.weight)
        if isinstance(self.act, dict):
            self.act = QuantSpec(**self.act)
        if self.weight.dynamic:
            raise ValueError(f"weight granularity must be static (per_tensor/per_channel/per_group), got "
                             f"{self.weight.granularity!r}")
        for name in ("include", "exclude", "keep_fp"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise TypeError(f"{name} must be a sequence of glob patterns (strings)")
            setattr(self, name, tuple(value))
        if self.attention_bits is not None and (not isinstance(self.attention_bits, int)
                                                or not 2 <= self.attention_bits <= 8):
            raise ValueError(f"attention_bits must be an int in [2, 8] or None, got {self.attention_bits!r}")
        self.overrides = tuple((str(p), int(w), None if a is None else int(a)) for p, w, a in self.overrides)
        from .roles import ROLES

        self.fp_roles = tuple(self.fp_roles)
        self.role_overrides = tuple((str(r), int(w), None if a is None else int(a)) for r, w, a in self.role_overrides)
        unknown = sorted({*self.fp_roles, *(r for r, _, _ in self.role_overrides)} - set(ROLES))
        if unknown:
            raise ValueError(f"unknown layer roles {unknown}; roles are {ROLES}")
        for p, w, a in self.overrides:
            if not 2 <= w <= 8 or (a is not None and not 2 <= a <= 8):
                raise ValueError(f"override {p!r}: bits must be in [2, 8], got W{w}A{a}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["overrides"] = [list(o) for o in self.overrides]
        d["role_overrides"] = [list(o) for o in self.role_overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        d = dict(d)
        d["weight"], d["act"] = QuantSpec(**d["weight"]), QuantSpec(**d["act"])
        d["overrides"] = tuple(tuple(o) for o in d.get("overrides", ()))
        d["role_overrides"] = tuple(tuple(o) for o in d.get("role_overrides", ()))
        d["fp_roles"] = tuple(d.get("fp_roles", ()))
        for key in ("include", "exclude", "keep_fp"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)


def preset(kind: str, w_bits: int, a_bits: int | None, **changes) -> QuantConfig:
    """The papers' allocations (see module docstring): ``"dit"`` or ``"unet"``."""
    if kind == "dit":
        low = w_bits <= 4 or (a_bits or 8) <= 6
        overrides = tuple((p, 8, 8) for p in DIT_MLP) if low else ()
        cfg = QuantConfig(w_bits=w_bits, a_bits=a_bits, keep_fp=DIT_KEEP_FP, overrides=overrides, roles=True,
                          fp_roles=("embedder", "final", "modulation"),
                          role_overrides=(("mlp_in", 8, 8), ("mlp_out", 8, 8)) if low else (),
                          weight=QuantSpec(granularity="per_channel", init="minmax"),
                          act=QuantSpec(granularity="per_token"))
    elif kind == "unet":
        cfg = QuantConfig(w_bits=w_bits, a_bits=a_bits, exclude=UNET_EXCLUDE, quantize_conv=True, first_last_8bit=3,
                          weight=QuantSpec(granularity="per_channel", init="mse"),
                          act=QuantSpec(granularity="per_tensor", init="mse"))
    else:
        raise ValueError(f"kind must be 'dit' or 'unet', got {kind!r}")
    return replace(cfg, **changes) if changes else cfg


@dataclass
class LayerPlan:
    name: str
    kind: str
    w_bits: int
    a_bits: int | None
    role: str | None = None


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def plan_layers(model: nn.Module, config: QuantConfig) -> list[LayerPlan]:
    """Which layers ``prepare`` quantizes, and at which bits (nothing is changed)."""
    roles = None
    if config.roles:
        from .roles import linear_roles

        roles = linear_roles(model)
        if roles is None:
            logger.warning("%s has no recognised block list (transformer_blocks, single_transformer_blocks, blocks, "
                           "down_blocks/up_blocks): its layers are chosen by name patterns (keep_fp/overrides) only",
                           type(model).__name__)
        else:
            other = sorted(n for n, r in roles.items() if r == "other")
            if other:
                logger.warning("%d linears inside the blocks of %s have no recognised role (quantized at the default "
                               "bits): %s", len(other), type(model).__name__, ", ".join(other[:8]))
    kinds: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, QuantModule):
            continue
        layer_type = isinstance(mod, nn.Linear) or (config.quantize_conv and isinstance(mod, (nn.Conv2d, nn.Conv3d)))
        role = roles.get(name) if roles is not None else None
        if role is not None:
            wanted = (_matches(name, config.include) and not _matches(name, config.exclude)
                      and role not in config.fp_roles)
        else:
            wanted = _matches(name, config.include) and not _matches(name, (*config.exclude, *config.keep_fp))
        if layer_type and wanted:
            kinds.append((name, mod))
    plans = []
    for i, (name, mod) in enumerate(kinds):
        w, a = config.w_bits, config.a_bits
        role = roles.get(name) if roles is not None else None
        if role is not None:
            for r, ow, oa in config.role_overrides:
                if r == role:
                    w, a = ow, oa
                    break
        else:
            for pattern, ow, oa in config.overrides:
                if fnmatch.fnmatchcase(name, pattern):
                    w, a = ow, oa
                    break
        if config.first_last_8bit and (i < config.first_last_8bit or i == len(kinds) - 1):
            w, a = 8, 8 if a is not None else None
        plans.append(LayerPlan(name, type(mod).__name__, w, a, role))
    return plans


def _set(root: nn.Module, name: str, mod: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, mod)


def prepare(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Swap the planned layers for :class:`QLinear` / :class:`QConv2d` / :class:`QConv3d` in place; return the model.

    Raises ``ValueError`` when no layer matches (nothing to quantize).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    plans = plan_layers(model, config)
    if not plans:
        raise ValueError("no quantizable layer matched: the model has no nn.Linear"
                         f"{'/Conv' if config.quantize_conv else ''} outside keep_fp/exclude "
                         f"(include={config.include}, exclude={config.exclude}, keep_fp={config.keep_fp[:4]}...)")
    if config.attention_bits is not None and not any(callable(getattr(m, "processor", None))
                                                     for m in model.modules()):
        raise ValueError("attention_bits is set but the model has no diffusers-style attention module (with a "
                         "`processor`) whose products could be quantized")
    for plan in plans:
        mod = model.get_submodule(plan.name)
        w_spec = replace(config.weight, bits=plan.w_bits)
        a_spec = replace(config.act, bits=plan.a_bits) if plan.a_bits is not None else None
        if isinstance(mod, nn.Linear):
            q = QLinear.from_float(mod, w_spec, a_spec)
        else:
            if a_spec is not None and a_spec.granularity in ("per_token", "per_token_shared"):
                a_spec = replace(a_spec, granularity="per_tensor")  # convs: per-tensor activations
            if w_spec.granularity == "per_group":
                w_spec = replace(w_spec, granularity="per_channel")
            q = (QConv2d if isinstance(mod, nn.Conv2d) else QConv3d).from_float(mod, w_spec, a_spec)
        _set(model, plan.name, q)
    if config.attention_bits is not None:
        n_attn = quantize_attention(model, config.attention_bits)
        logger.info("prepare: attention products of %d attention modules at %d bits", n_attn, config.attention_bits)
    model.vqcore_plan = plans  # type: ignore[attr-defined]
    logger.info("prepare: %d layers quantized (%s)", len(plans),
                ", ".join(sorted({f"W{p.w_bits}A{p.a_bits or 'fp'}" for p in plans})))
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantModule]:
    """Every fake-quant layer of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantModule)}

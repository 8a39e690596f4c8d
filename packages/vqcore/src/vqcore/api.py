"""``vqcore.quantize`` / ``vqcore.save`` / ``vqcore.load``: the user-facing entry points."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from commons.io import load_checkpoint, load_json, save_checkpoint

from .calib.capture import ROOT, CalibrationSet
from .calib.stats import root_items
from .methods import MethodConfig, get_method, list_methods
from .quant.fpmode import FullPrecisionView
from .quant.modules import MODULE_TYPES, QuantModule, register_module_type
from .quant.prepare import QuantConfig, prepare, quantized_layers
from .quant.quantizer import UniformQuantizer
from .recon.engine import _to

__all__ = ["quantize", "save", "load", "QuantReport", "model_kind", "register_module_type"]

logger = logging.getLogger(__name__)
FORMAT = "vqcore-fakequant/1"


@dataclass
class QuantReport:
    """What :func:`quantize` did."""

    method: str
    w_bits: int
    a_bits: int | None
    layers: int
    bits: dict[str, int]
    calibration_items: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        mix = ", ".join(f"{k}: {v}" for k, v in sorted(self.bits.items()))
        return (f"{self.method} W{self.w_bits}A{self.a_bits or 'fp'}: {self.layers} layers ({mix}), "
                f"{self.calibration_items} calibration items, {self.seconds:.1f} s")


def model_kind(model: nn.Module) -> str:
    """``"unet"`` for UNet-style denoisers (down/up blocks), ``"dit"`` otherwise."""
    for mod in model.modules():
        if hasattr(mod, "down_blocks") and hasattr(mod, "up_blocks"):
            return "unet"
    return "dit"


def _shapes(obj: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of every tensor in a (nested) args/kwargs structure."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "tensor": tuple(obj.shape)}
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _shapes(val, f"{prefix}{key}.").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _shapes(val, f"{prefix}{i}.").items()}
    return {}


@torch.no_grad()
def _check_calibration(model: nn.Module, items) -> None:
    """Cheap checks before any expensive work: every root item has the tensors and shapes of the first one (the
    engine batches items by concatenation), and one forward of the first item through the model succeeds."""
    if not items:
        return
    ref = {**_shapes(items[0].args, "args."), **_shapes(items[0].kwargs)}
    for i, it in enumerate(items[1:], 1):
        cur = {**_shapes(it.args, "args."), **_shapes(it.kwargs)}
        if cur != ref:
            diff = sorted(k for k in set(ref) | set(cur) if ref.get(k) != cur.get(k))[:3]
            raise ValueError(f"calibration item {i} does not match item 0: "
                             + ", ".join(f"{k.rstrip('.')}: {cur.get(k)} vs {ref.get(k)}" for k in diff)
                             + " (all calibration inputs must have the same shapes)")
    item = items[0]
    device = next(model.parameters()).device
    try:
        model(*_to(item.args, device), **_to(item.kwargs, device))
    except Exception as err:  # noqa: BLE001 - re-raised with the reason
        raise ValueError(f"calibration data does not fit the model: a forward of the first calibration item failed "
                         f"with {type(err).__name__}: {err}") from err


def quantize(model: nn.Module, method: str = "rtn", w_bits: int = 8, a_bits: int | None = 8,
             calib: CalibrationSet | list | None = None, config: QuantConfig | None = None, kind: str = "auto",
             inplace: bool = False, seed: int = 0, options: MethodConfig | dict | None = None,
             **kwargs: Any) -> nn.Module:
    """Quantize a diffusion model with a registered method; returns the fake-quantized model.

    Args:
        model: a diffusers transformer/UNet (or any module with linears/convs).
        method: a name from :func:`vqcore.methods.list_methods` (``rtn``, ``vidit-q``, ``q-diffusion``, ...).
        w_bits, a_bits: default bits (2–8); ``a_bits=None`` keeps activations in floating point.
        calib: a :class:`~vqcore.calib.CalibrationSet` (from :class:`~vqcore.calib.Capture`), or a list of model
            inputs, each a batch: tensors (``model(x)``), tuples of positional inputs (``model(x, t)``) or dicts of
            keyword inputs (``model(**kw)``); see :func:`vqcore.calib.root_items`. Block-reconstruction methods
            (``q-diffusion``, ``s2q-vdit``) need a ``CalibrationSet`` with block captures.
        config: a full :class:`QuantConfig` overriding the method's default for ``kind`` (its ``w_bits``/``a_bits``
            then replace the arguments, also in the report).
        kind: ``"dit"``, ``"unet"`` or ``"auto"``.
        inplace: quantize ``model`` itself (its linears/convs are swapped for quantized layers that share its
            weights) instead of a deep copy: one copy of the weights in memory. Methods that need the FP teacher
            (``mpq-dm``, ``s2q-vdit``) get it from the same modules (:class:`vqcore.quant.FullPrecisionView`), so
            no method holds a second copy. If the method fails, ``model`` is left prepared (quantized layers).
        seed: seeds ``torch`` and ``random`` before the method runs, and sets the ``seed`` field of methods whose
            config has one (same seed + same calibration → same quantized model).
        options: the method's options — its config dataclass (``get_method(method).Config``, e.g.
            ``QVDiTConfig(iters=300)``) or a dict of its fields; validated before any work.
        kwargs: options as keywords (``iters=300``), applied on top of ``options``.

    The returned model carries ``vqcore_report`` (:class:`QuantReport`) and ``vqcore_meta`` (what :func:`save`
    writes, the method's options included).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(w_bits, int) or not 2 <= w_bits <= 8:
        raise ValueError(f"w_bits must be an int in [2, 8], got {w_bits!r}")
    if a_bits is not None and (not isinstance(a_bits, int) or not 2 <= a_bits <= 8):
        raise ValueError(f"a_bits must be an int in [2, 8] or None, got {a_bits!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if kind not in ("auto", "dit", "unet"):
        raise ValueError(f"kind must be 'auto', 'dit' or 'unet', got {kind!r}")
    if any(isinstance(m, QuantModule) for m in model.modules()):
        raise ValueError("model is already quantized (it contains vqcore quantized layers); pass the FP model")
    impl = get_method(method)
    opts = impl.make_options(options, **kwargs)
    if "seed" in impl.option_names():
        opts = dataclasses.replace(opts, seed=seed)
    impl.check_model(model, opts)
    kind = model_kind(model) if kind == "auto" else kind
    if config is not None:
        if not isinstance(config, QuantConfig):
            raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
        w_bits, a_bits = config.w_bits, config.a_bits  # the config's default bits are what the report must state
    config = config or impl.default_config(kind, w_bits, a_bits, opts)
    if impl.needs_block_captures and not (isinstance(calib, CalibrationSet)
                                          and any(name != ROOT and its for name, its in calib.items.items())):
        raise ValueError(f"method {method!r} reconstructs blocks: pass calib=a CalibrationSet with block captures "
                         "(vqcore.calib.Capture(model, targets='blocks')), got "
                         + (type(calib).__name__ if not isinstance(calib, CalibrationSet) else "one without blocks"))
    items = root_items(calib)
    if impl.needs_calibration and not items:
        raise ValueError(f"method {method!r} needs calibration data: pass calib= a vqcore.calib.Capture result, or a "
                         "list of model inputs (tensors, tuples of positional inputs, or dicts of keyword inputs)")
    _check_calibration(model, items)
    start = time.perf_counter()
    qmodel = model if inplace else copy.deepcopy(model)
    prepare(qmodel, config)
    # the FP teacher is the quantized model's own modules in full-precision mode: no second copy of the weights
    fp_model = FullPrecisionView(qmodel) if impl.needs_teacher else None
    torch.manual_seed(seed)
    random.seed(seed)
    details = impl.run(qmodel, fp_model, config, calib, opts) or {}
    qmodel.eval()
    plans = qmodel.vqcore_plan
    bits = Counter(f"W{p.w_bits}A{p.a_bits or 'fp'}" for p in plans)
    report = QuantReport(method, w_bits, a_bits, len(plans), dict(bits), len(items), time.perf_counter() - start,
                         details)
    qmodel.vqcore_report = report
    qmodel.vqcore_meta = {"format": FORMAT, "method": method, "w_bits": w_bits, "a_bits": a_bits, "kind": kind,
                          "seed": seed, "options": opts.record(),
                          "config": config.to_dict(), "model_class": type(model).__name__}
    logger.info("vqcore.quantize: %s", report.summary())
    return qmodel


# -- save / load -----------------------------------------------------------------------------------------------------
def _describe_quantizer(q: UniformQuantizer | None) -> dict | None:
    if q is None:
        return None
    return {"initialized": q.initialized, "learn_scale": isinstance(q.scale, nn.Parameter),
            "learn_zp": isinstance(q.zero_point, nn.Parameter), "scale_shape": list(q.scale.shape),
            "adaround_shape": None if q.alpha is None else list(q.alpha.shape), "enabled": q.enabled}


def _restore_quantizer(q: UniformQuantizer | None, desc: dict | None, name: str) -> None:
    if desc is None or q is None:
        return
    shape = tuple(desc["scale_shape"])
    q.scale = torch.zeros(shape)
    q.zero_point = torch.zeros(shape)
    q.initialized = desc["initialized"]
    q.enabled = desc["enabled"]
    if desc["learn_scale"]:
        q.make_learnable(zero_point=desc["learn_zp"])
    if desc["adaround_shape"] is not None:
        q.alpha = nn.Parameter(torch.zeros(desc["adaround_shape"]))


def _describe_sub(mod: nn.Module | None) -> dict | None:
    if mod is None:
        return None
    if not hasattr(mod, "vq_describe") or type(mod).__name__ not in MODULE_TYPES:
        raise ValueError(f"{type(mod).__name__} cannot be saved: register it with vqcore.api.register_module_type "
                         "and give it vq_describe()/vq_build()")
    return {"type": type(mod).__name__, **mod.vq_describe()}


def save(qmodel: nn.Module, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a model returned by :func:`quantize` as ``model.safetensors`` + ``config.json`` (atomic: a crash leaves
    no partial directory). Refuses an existing directory unless ``overwrite=True``."""
    meta = getattr(qmodel, "vqcore_meta", None)
    if meta is None:
        raise ValueError("qmodel was not produced by vqcore.quantize (no vqcore_meta)")
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    layers = {}
    for name, m in quantized_layers(qmodel).items():
        layers[name] = {"weight_quantizer": _describe_quantizer(m.weight_quantizer),
                        "input_quantizer": _describe_quantizer(m.input_quantizer),
                        "smooth": m.smooth_scale is not None, "quant_weight": m.quant_weight,
                        "quant_input": m.quant_input, "weight_adapter": _describe_sub(m.weight_adapter),
                        "side_branch": _describe_sub(m.side_branch)}
    extra = getattr(qmodel, "vqcore_extra_modules", {})  # method-level modules, name -> module
    config = {**meta, "layers": layers, "extra_modules": {k: _describe_sub(v) for k, v in extra.items()},
              "report": getattr(qmodel, "vqcore_report", None).__dict__ if hasattr(qmodel, "vqcore_report") else None}
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    old = None
    try:
        save_checkpoint(tmp, qmodel.state_dict(), config, overwrite=True)
        if directory.exists():  # keep the old checkpoint until the new one is complete and in place
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / directory.name).exists() and not directory.exists():
            os.replace(old / directory.name, directory)  # put the old checkpoint back
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def _sub_descs(config: dict) -> list[dict]:
    descs = [d for layer in config.get("layers", {}).values() for d in (layer.get("weight_adapter"),
                                                                        layer.get("side_branch")) if d]
    return descs + list(config.get("extra_modules", {}).values())


def _check_tensor_shapes(directory: Path, model: nn.Module) -> None:
    """Compare the shapes of the model's own parameters/buffers with the checkpoint's (read from the safetensors
    header, no tensor is loaded) before ``model`` is touched: a same-class model of another size fails here."""
    from safetensors import safe_open

    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{directory} has no model.safetensors; is it a vqcore checkpoint directory?")
    from safetensors import SafetensorError

    try:
        with safe_open(str(weights), framework="pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} could not be read (truncated or corrupt?): {err}") from err
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [(k, own[k], saved[k]) for k in own if k in saved and own[k] != saved[k]]
    if wrong:
        shown = ", ".join(f"{k}: model {a} vs checkpoint {b}" for k, a, b in wrong[:3])
        raise ValueError(f"checkpoint {directory} does not match this model's architecture ({len(wrong)} tensors "
                         f"differ in shape: {shown})")
    missing = sorted(k for k in own if k not in saved)
    if missing:
        raise ValueError(f"checkpoint {directory} does not match this model's architecture: it lacks "
                         f"{len(missing)} of the model's tensors, e.g. {missing[:3]}")


def load(directory: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Rebuild a quantized model saved by :func:`save` on a fresh full-precision ``model`` of the same architecture.

    Raises a clear ``ValueError`` when the checkpoint belongs to another architecture.
    """
    directory = Path(directory)
    config = load_json(directory / "config.json")
    if config.get("format") != FORMAT:
        raise ValueError(f"{directory} is not a vqcore fake-quant checkpoint (format {config.get('format')!r})")
    if config.get("model_class") != type(model).__name__:
        raise ValueError(f"checkpoint was made from a {config.get('model_class')}, got a {type(model).__name__}")
    list_methods()  # import every method module so the module types they register (adapters, switches) are known
    unknown = sorted({d["type"] for d in _sub_descs(config)} - set(MODULE_TYPES))
    if unknown:
        raise ValueError(f"{directory} needs module types {unknown} that no imported vqcore method registers")
    _check_tensor_shapes(directory, model)
    qconfig = QuantConfig.from_dict(config["config"])
    qmodel = prepare(model, qconfig)
    layers = quantized_layers(qmodel)
    if set(layers) != set(config["layers"]):
        missing = sorted(set(config["layers"]) - set(layers))[:5]
        unexpected = sorted(set(layers) - set(config["layers"]))[:5]
        raise ValueError(f"checkpoint {directory} does not match this model's architecture: layers missing "
                         f"{missing}, unexpected {unexpected}")
    for name, desc in config["layers"].items():
        m = layers[name]
        _restore_quantizer(m.weight_quantizer, desc["weight_quantizer"], name)
        _restore_quantizer(m.input_quantizer, desc["input_quantizer"], name)
        if desc["smooth"]:
            m.set_smooth_scale(torch.ones(m.weight.shape[1]))
            if m.weight_quantizer is not None:
                m.weight_quantizer.initialized = desc["weight_quantizer"]["initialized"]
        m.quant_weight, m.quant_input = desc["quant_weight"], desc["quant_input"]
        for attr in ("weight_adapter", "side_branch"):
            if desc[attr] is not None:
                setattr(m, attr, MODULE_TYPES[desc[attr]["type"]].vq_build(desc[attr]))
    extra = {k: MODULE_TYPES[d["type"]].vq_build(d) for k, d in config.get("extra_modules", {}).items()}
    for k, mod in extra.items():
        qmodel.add_module(k, mod)
    for mod in extra.values():  # method-level modules that reshape layers before the tensors load (MPQ-DM's OMQ)
        if hasattr(mod, "vq_prepare"):
            mod.vq_prepare(qmodel)
    device = next(model.parameters()).device
    qmodel.to(device)
    state, _ = load_checkpoint(directory, map_location=device)
    missing, unexpected = qmodel.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {directory} does not match this model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for mod in extra.values():  # method-level modules that hook into the model (e.g. timestep ranges)
        if hasattr(mod, "vq_attach"):
            mod.vq_attach(qmodel)
    qmodel.eval()
    qmodel.vqcore_meta = {k: config[k] for k in ("format", "method", "w_bits", "a_bits", "kind", "config",
                                                  "model_class")}
    for key in ("seed", "options"):
        if key in config:
            qmodel.vqcore_meta[key] = config[key]
    if extra:
        qmodel.vqcore_extra_modules = extra
    return qmodel


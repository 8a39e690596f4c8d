"""vqcore as a diffusers quantization backend: converted (real-integer) models that load with ``from_pretrained``.

Writing (:func:`save_pretrained`, also reached as ``vqcore.save_converted(model, path, format="diffusers")``) turns a
diffusers model converted by :func:`vqcore.convert` into an ordinary diffusers model folder:

* ``config.json`` — the model's own config plus ``quantization_config = {"quant_method": "vqcore", "format":
  "vqcore-int/2", "torch_dtype": ..., "specs": [...], "layers": {name: spec index}, "step_tables": ...}``: one
  :class:`~vqcore.convert.IntLinearSpec` per distinct integer layer shape (``specs``) and, for every layer
  :func:`vqcore.convert` replaced, the index of its spec (``layers``); ``step_tables`` is the step selector's schedule
  when the model has per-step activation tables, ``attention: "int8"`` when ``convert(..., attention="int8")``
  routed the attention through :class:`vqcore.kernels.Int8SDPA` (as in ``vqcore.save_converted``'s
  ``int_layers.json``).
* ``diffusion_pytorch_model.safetensors`` — the state dict: packed int4 / int8 weight codes (``qweight``), fp32
  scales, weight sums, activation tables and the float tensors of every layer that was not converted.

:func:`mark_quantized` gives a converted model the same ``quantization_config`` and the quantizer in memory, so
diffusers' own ``save_pretrained`` (of the model, or of a whole pipeline holding it) writes such folders too.

Loading: after :func:`register`, ``<ModelClass>.from_pretrained(folder)`` (``CogVideoXTransformer3DModel``,
``LatteTransformer3DModel``, ``PixArtTransformer2DModel``, or any diffusers model class ``vqcore.convert`` converted)
finds ``quant_method: "vqcore"`` in the config and hands the model to :class:`VQCoreQuantizer`. diffusers builds the
model skeleton with ``accelerate.init_empty_weights`` (parameters on the meta device); the quantizer then replaces
every layer named in ``layers`` by an empty :class:`~vqcore.convert.QLinearInt` / ``QConv2dInt`` *on the meta device*
before any weight is read, and puts each checkpoint tensor into place (``create_quantized_param``) — so the float
weights of the converted layers are never materialised, and peak memory while loading is about the size of the
integer checkpoint. The integer layers run the Triton kernels on CUDA and the pure-PyTorch reference on CPU; the same
folder serves both (``from_pretrained(folder, device_map="cuda")`` or ``.to("cuda")`` after loading).

dtypes: without ``dtype`` (``torch_dtype``) every tensor keeps the dtype it was saved with (the loaded model is the
converted model, output for output — diffusers itself would cast floats to the default dtype; the skeleton is built
in the saved ``torch_dtype``). With ``dtype=...`` the float tensors of the layers that were not converted are cast as
diffusers always does; the integer layers keep their own dtypes (fp32 scales, int8 codes, the layer's bias dtype).
Tensors read from the file become the model's without a copy (safetensors maps the file: pages become resident when
first read).

What :func:`register` changes in diffusers: it adds the key ``"vqcore"`` to the two registries of
``diffusers.quantizers.auto`` — ``AUTO_QUANTIZER_MAPPING["vqcore"] = VQCoreQuantizer`` and
``AUTO_QUANTIZATION_CONFIG_MAPPING["vqcore"] = VQCoreConfig`` — and nothing else: no diffusers function or class is
patched, the ``QuantizationMethod`` enum is untouched (``VQCoreConfig.quant_method`` is its own ``str`` enum member
``"vqcore"``), and other quantization backends load as before. It is idempotent; :func:`unregister` removes the two
keys. ``import vqcore`` does not register (importing ``diffusers.quantizers`` costs seconds, and vqcore does not
require diffusers): call :func:`register` once before ``from_pretrained``. Before registering it checks that the
installed diffusers has the quantizer interface this module implements (written against diffusers 0.42.1) and raises
:class:`DiffusersIncompatible` naming what differs otherwise.

Not supported (a clear error): folders with layers left fake-quant by ``convert(..., strict=False)`` or other vqcore
modules that the model class does not build (refused when saving), quantizing a float checkpoint through
``from_pretrained(..., quantization_config=VQCoreConfig())`` (vqcore quantizes with calibration: use
``vqcore.quantize`` + ``vqcore.convert``), disk offload, ``model.dequantize()``.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..convert import _READS, FORMAT, IntLinearSpec, QLinearInt, _layer_class, _set_submodule, _step_selectors

try:
    import diffusers as _diffusers
except ImportError as _err:  # pragma: no cover - the optional dependency is missing
    raise ImportError("vqcore.integrations.diffusers needs diffusers: pip install 'vqcore[diffusers]'") from _err


class DiffusersIncompatible(RuntimeError):
    """The installed diffusers' quantizer interface is not the one this module implements."""


TESTED_WITH = "0.42.1"
QUANT_METHOD = "vqcore"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def _incompatible(what: str) -> DiffusersIncompatible:
    return DiffusersIncompatible(
        f"vqcore's diffusers integration does not fit the installed diffusers {_diffusers.__version__}: {what}. It "
        f"implements the quantizer interface of diffusers {TESTED_WITH} (diffusers.quantizers: DiffusersQuantizer, "
        "AUTO_QUANTIZER_MAPPING, AUTO_QUANTIZATION_CONFIG_MAPPING). Install that diffusers version, or load the model "
        "with vqcore.load_converted (format='vqcore' checkpoints)."
    )


try:
    from diffusers.quantizers import auto as _auto
    from diffusers.quantizers.base import DiffusersQuantizer
    from diffusers.quantizers.quantization_config import QuantizationConfigMixin
except ImportError as _err:
    raise _incompatible(f"its quantizer modules cannot be imported ({_err})") from _err

__all__ = [
    "DiffusersIncompatible",
    "VQCoreConfig",
    "VQCoreQuantizer",
    "check_interface",
    "mark_quantized",
    "register",
    "save_pretrained",
    "unregister",
]

logger = logging.getLogger(__name__)

# the positional parameters of the DiffusersQuantizer methods this module overrides or relies on (None: any)
_EXPECTED_SIGNATURES = {
    "check_if_quantized_param": ["self", "model", "param_value", "param_name", "state_dict"],
    "create_quantized_param": None,
    "check_quantized_param_shape": None,
    "update_torch_dtype": ["self", "torch_dtype"],
    "validate_environment": None,
    "preprocess_model": ["self", "model"],
    "postprocess_model": ["self", "model"],
}
_IMPLEMENTED_ABSTRACT = {"_process_model_before_weight_loading", "_process_model_after_weight_loading",
                         "is_serializable", "is_trainable"}  # fmt: skip


def check_interface() -> None:
    """Raise :class:`DiffusersIncompatible` naming every difference between the installed diffusers' quantizer
    interface and the one :class:`VQCoreQuantizer` implements (registries, method signatures, abstract methods, the
    loader calling ``create_quantized_param``)."""
    problems = []
    for name in ("AUTO_QUANTIZER_MAPPING", "AUTO_QUANTIZATION_CONFIG_MAPPING"):
        if not isinstance(getattr(_auto, name, None), dict):
            problems.append(f"diffusers.quantizers.auto.{name} is missing or not a dict")
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for meth, expected in _EXPECTED_SIGNATURES.items():
        fn = getattr(DiffusersQuantizer, meth, None)
        if not callable(fn):
            problems.append(f"DiffusersQuantizer.{meth} is missing")
            continue
        if expected is not None:
            got = [p.name for p in inspect.signature(fn).parameters.values() if p.kind in positional]
            if got != expected:
                problems.append(f"DiffusersQuantizer.{meth}({', '.join(got)}) (expected ({', '.join(expected)}))")
    unknown = sorted(set(getattr(DiffusersQuantizer, "__abstractmethods__", ())) - _IMPLEMENTED_ABSTRACT)
    if unknown:
        problems.append(f"DiffusersQuantizer has abstract methods vqcore does not implement: {unknown}")
    for meth in ("from_dict", "to_dict"):
        if not callable(getattr(QuantizationConfigMixin, meth, None)):
            problems.append(f"QuantizationConfigMixin.{meth} is missing")
    try:
        from diffusers.models import model_loading_utils

        src = inspect.getsource(model_loading_utils.load_model_dict_into_meta)
    except (ImportError, AttributeError, OSError, TypeError):
        problems.append("diffusers.models.model_loading_utils.load_model_dict_into_meta is missing")
    else:
        if "create_quantized_param" not in src:
            problems.append("diffusers' weight loader (load_model_dict_into_meta) does not call the quantizer's "
                            "create_quantized_param")  # fmt: skip
    if problems:
        raise _incompatible("; ".join(problems))


class VQCoreMethod(str, enum.Enum):
    """``quant_method`` of vqcore folders (diffusers reads ``quant_method.value``)."""

    VQCORE = QUANT_METHOD


_SPEC_FIELDS = {f.name for f in fields(IntLinearSpec)}


class VQCoreConfig(QuantizationConfigMixin):
    """The ``quantization_config`` of a vqcore diffusers folder (written by :func:`save_pretrained`; see the module
    docstring for the fields). Constructed by diffusers from ``config.json``; checks every field before the model is
    built."""

    def __init__(
        self,
        layers: dict[str, int] | None = None,
        specs: list[dict] | None = None,
        torch_dtype: str = "float32",
        step_tables: dict | None = None,
        attention: str | None = None,
        format: str = FORMAT,
        vqcore_version: str | None = None,
        quant_method: str = QUANT_METHOD,
        **kwargs: Any,
    ) -> None:
        if str(getattr(quant_method, "value", quant_method)) != QUANT_METHOD:
            raise ValueError(f"VQCoreConfig needs quant_method 'vqcore', got {quant_method!r}")
        if format not in _READS:
            raise ValueError(f"quantization_config format {format!r} is not one this vqcore reads ({list(_READS)}); "
                             "saved by a newer vqcore?")  # fmt: skip
        if not isinstance(getattr(torch, str(torch_dtype), None), torch.dtype) or \
                not getattr(torch, str(torch_dtype)).is_floating_point:  # fmt: skip
            raise ValueError(f"quantization_config torch_dtype must name a floating torch dtype, got {torch_dtype!r}")
        specs, layers = list(specs or []), dict(layers or {})
        for i, spec in enumerate(specs):
            extra = sorted(set(spec) - _SPEC_FIELDS)
            if extra:
                raise ValueError(f"quantization_config spec {i} has unknown fields {extra} (saved by a newer vqcore?)")
        bad = {n: i for n, i in layers.items() if not isinstance(i, int) or not 0 <= i < len(specs)}
        if bad:
            raise ValueError(f"quantization_config layers point at specs that do not exist ({len(specs)} specs): "
                             f"{dict(list(bad.items())[:3])}")  # fmt: skip
        if step_tables is not None and not isinstance(step_tables.get("timesteps"), list):
            raise ValueError("quantization_config step_tables must be {'module': ..., 'timesteps': [...]}")
        if attention not in (None, "int8"):
            raise ValueError(f"quantization_config attention must be null or 'int8', got {attention!r}")
        if kwargs:
            logger.warning("vqcore quantization_config: ignoring unknown fields %s", sorted(kwargs))
        self.quant_method = VQCoreMethod.VQCORE
        self.format = format
        self.torch_dtype = str(torch_dtype)
        self.specs = specs
        self.layers = layers
        self.step_tables = step_tables
        self.attention = attention
        self.vqcore_version = vqcore_version

    def layer_specs(self) -> dict[str, IntLinearSpec]:
        """``{layer name: IntLinearSpec}`` (validated by ``IntLinearSpec.__post_init__``)."""
        built = [IntLinearSpec(**s) for s in self.specs]
        return {name: built[i] for name, i in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["quant_method"] = QUANT_METHOD  # a plain string in config.json
        return d

    def to_diff_dict(self) -> dict[str, Any]:
        """What ``to_json_string`` (and ``repr``) show: every field (there are no defaults worth hiding)."""
        return self.to_dict()


class VQCoreQuantizer(DiffusersQuantizer):
    """diffusers quantizer for vqcore folders: integer layers replace the meta linears before weights load (see the
    module docstring)."""

    requires_calibration = False
    required_packages = None
    use_keep_in_fp32_modules = False

    def __init__(self, quantization_config: VQCoreConfig, **kwargs: Any) -> None:
        super().__init__(quantization_config, **kwargs)
        if not self.pre_quantized:
            raise ValueError("quant_method 'vqcore' loads folders written by vqcore.save_converted(model, path, "
                             "format='diffusers'); it cannot quantize a float checkpoint in from_pretrained (vqcore "
                             "calibrates: use vqcore.quantize + vqcore.convert, then save_converted)")  # fmt: skip
        self.specs = quantization_config.layer_specs()
        self.keep_saved_dtypes = True

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict) and any(str(v) == "disk" for v in device_map.values()):
            raise ValueError("vqcore folders cannot be offloaded to disk (device_map with 'disk')")

    def update_torch_dtype(self, torch_dtype: torch.dtype | None) -> torch.dtype:
        # None: every tensor keeps its saved dtype (create_quantized_param), the skeleton is built in the saved dtype
        self.keep_saved_dtypes = torch_dtype is None
        self.load_dtype = getattr(torch, self.quantization_config.torch_dtype) if torch_dtype is None else torch_dtype
        return self.load_dtype

    def get_cuda_warm_up_factor(self) -> int:
        # diffusers pre-allocates (elements // factor) values of the load dtype per device; nearly every element of a
        # vqcore model is one int8 byte, so factor = the dtype's size reserves about the checkpoint's bytes
        dtype = getattr(self, "load_dtype", None)
        return max(1, dtype.itemsize) if isinstance(dtype, torch.dtype) else super().get_cuda_warm_up_factor()

    def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        cls = type(model).__name__
        for name, spec in self.specs.items():
            try:
                old = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"the vqcore checkpoint has an integer layer {name!r} that {cls} (built from this "
                                 "config) does not have; was it saved from another model class?") from None
            expected = nn.Conv2d if spec.is_conv else nn.Linear
            shape = (old.in_channels * old.kernel_size[0] * old.kernel_size[1] if spec.is_conv
                     else getattr(old, "in_features", None), getattr(old, "out_channels" if spec.is_conv else
                                                                     "out_features", None))  # fmt: skip
            if not isinstance(old, expected) or shape != (spec.in_features, spec.out_features):
                raise ValueError(f"{cls}.{name} is {type(old).__name__} {shape}, but the vqcore checkpoint holds an "
                                 f"integer {expected.__name__} ({spec.in_features}, {spec.out_features}) there")
            _set_submodule(model, name, _layer_class(spec)(spec, device="meta"))
        logger.info("vqcore: %d integer layers built on the meta device before loading", len(self.specs))
        return model

    def check_if_quantized_param(self, model: nn.Module, param_value: torch.Tensor, param_name: str,
                                 state_dict: dict[str, Any], **kwargs: Any) -> bool:  # fmt: skip
        # every tensor of an integer layer, and every tensor at all while the saved dtypes are kept
        return self.keep_saved_dtypes or param_name.rpartition(".")[0] in self.specs

    def check_quantized_param_shape(self, param_name: str, current_param: torch.Tensor,
                                    loaded_param: torch.Tensor) -> bool:  # fmt: skip
        if tuple(current_param.shape) != tuple(loaded_param.shape):
            raise ValueError(f"{param_name}: the vqcore checkpoint holds shape {tuple(loaded_param.shape)}, the model "
                             f"expects {tuple(current_param.shape)}")  # fmt: skip
        return True

    def create_quantized_param(self, model: nn.Module, param_value: torch.Tensor, param_name: str,
                               target_device: Any, state_dict: dict[str, Any], unexpected_keys: list | None = None,
                               **kwargs: Any) -> None:  # fmt: skip
        module_name, _, attr = param_name.rpartition(".")
        mod = model.get_submodule(module_name) if module_name else model
        old = getattr(mod, attr)
        saved = state_dict.get(param_name, param_value)  # diffusers may have cast param_value to torch_dtype already
        self.check_quantized_param_shape(param_name, old, saved)
        dtype = old.dtype if module_name in self.specs else saved.dtype
        value = saved.to(device=target_device, dtype=dtype)  # no copy when device and dtype already match
        if attr in mod._parameters:
            mod._parameters[attr] = nn.Parameter(value, requires_grad=old.requires_grad and value.is_floating_point())
        else:
            mod._buffers[attr] = value

    def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        empty = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
        if empty:
            raise ValueError(f"the vqcore checkpoint lacks {len(empty)} tensors of the model (e.g. {empty[:3]}); the "
                             "folder is incomplete or was saved from another model")  # fmt: skip
        tables = self.quantization_config.step_tables
        if tables:
            from ..methods.timerange import attach_step_tables

            attach_step_tables(model, tables["timesteps"])
        if self.quantization_config.attention == "int8":
            from .. import kernels

            kernels.use_int8_attention(model)
        return model

    @property
    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        return True


def register() -> None:
    """Register the ``"vqcore"`` quantization method with diffusers (see the module docstring for exactly what this
    changes). Idempotent. Raises :class:`DiffusersIncompatible` when the installed diffusers' quantizer interface
    differs from the one implemented here."""
    check_interface()
    _auto.AUTO_QUANTIZER_MAPPING[QUANT_METHOD] = VQCoreQuantizer
    _auto.AUTO_QUANTIZATION_CONFIG_MAPPING[QUANT_METHOD] = VQCoreConfig


def unregister() -> None:
    """Remove what :func:`register` added (a no-op when nothing is registered)."""
    for name in ("AUTO_QUANTIZER_MAPPING", "AUTO_QUANTIZATION_CONFIG_MAPPING"):
        mapping = getattr(_auto, name, {})
        if mapping.get(QUANT_METHOD) in (VQCoreQuantizer, VQCoreConfig):
            del mapping[QUANT_METHOD]


def is_registered() -> bool:
    return _auto.AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is VQCoreQuantizer


# ---- saving ----------------------------------------------------------------------------------------------------------
def _int_layers(model: nn.Module) -> dict[str, QLinearInt]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QLinearInt)}


def _check_skeleton(model: nn.Module, ints: dict[str, QLinearInt]) -> None:
    """The state dict of ``model`` must be exactly what ``from_pretrained`` will build: a fresh model of the same class
    and config (on the meta device) with the same integer layers. Catches layers left fake-quant by
    ``convert(strict=False)`` and other vqcore modules (quantized attention) that no from_pretrained could rebuild."""
    try:
        from accelerate import init_empty_weights
    except ImportError as err:
        raise ImportError("saving for diffusers' from_pretrained needs accelerate (diffusers loads quantized models "
                          "with it): pip install accelerate") from err  # fmt: skip
    with init_empty_weights():
        skeleton = type(model).from_config(model.config)
    for name, mod in ints.items():
        _set_submodule(skeleton, name, _layer_class(mod.spec)(mod.spec, device="meta"))
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    shape = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if extra or missing or shape:
        parts = [f"{label}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("tensors a fresh model does not have", extra), ("missing", missing),
                                     ("other shapes", shape)) if keys]  # fmt: skip
        raise ValueError(f"{type(model).__name__} cannot be saved for from_pretrained: its state dict differs from a "
                         f"fresh {type(model).__name__} with the same integer layers ({'; '.join(parts)}). Layers "
                         "left fake-quant (convert(..., strict=False)) and quantized attention have no diffusers "
                         "form; save with format='vqcore' instead")  # fmt: skip


def _main_float_dtype(model: nn.Module, ints: dict[str, QLinearInt]) -> str:
    counts: Counter = Counter()
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] += p.numel()
    if not counts:
        counts.update(getattr(torch, m.spec.dtype) for m in ints.values())
    return str(counts.most_common(1)[0][0]).replace("torch.", "")


def quantization_config(model: nn.Module) -> dict[str, Any]:
    """The ``quantization_config`` dict that :func:`save_pretrained` writes for a converted ``model``."""
    from .. import __version__

    ints = _int_layers(model)
    specs: list[dict] = []
    index: dict[str, int] = {}
    layers: dict[str, int] = {}
    for name, mod in ints.items():
        spec = asdict(mod.spec)
        key = json.dumps(spec, sort_keys=True)
        if key not in index:
            index[key] = len(specs)
            specs.append(spec)
        layers[name] = index[key]
    cfg = {"quant_method": QUANT_METHOD, "format": FORMAT, "torch_dtype": _main_float_dtype(model, ints),
           "vqcore_version": __version__, "specs": specs, "layers": layers}  # fmt: skip
    sels = _step_selectors(model)
    cfg["step_tables"] = ({"module": sels[0][0], "timesteps": [float(t) for t in sels[0][1].timesteps]}
                          if sels else None)  # fmt: skip
    from .. import kernels

    cfg["attention"] = "int8" if any(isinstance(m, kernels.Int8SDPA) for m in model.modules()) else None
    return json.loads(json.dumps(cfg))  # tuples -> lists, exactly what config.json will hold


def _atomic_write(directory: Path, name: str, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write a converted diffusers model as a diffusers folder (``config.json`` with the vqcore
    ``quantization_config`` + ``diffusion_pytorch_model.safetensors``) that ``<ModelClass>.from_pretrained`` loads
    after :func:`register`. ``vqcore.save_converted(model, directory, format="diffusers")`` calls this. Checks the
    model before writing anything; each file is written atomically."""
    from safetensors.torch import save_file

    _check_savable(model)
    config = json.loads(model.to_json_string())
    for key in ("quantization_config", "_name_or_path", "_pre_quantization_dtype"):
        config.pop(key, None)
    config["quantization_config"] = quantization_config(model)
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        t = v.detach().contiguous().cpu()
        ptr = t.untyped_storage().data_ptr()
        state[k] = t.clone() if ptr in seen else t  # safetensors refuses tensors that share memory
        seen.add(ptr)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _atomic_write(d, WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt"}))

    def write_config(p: str) -> None:
        Path(p).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    _atomic_write(d, CONFIG_NAME, write_config)
    return d


def mark_quantized(model: nn.Module) -> nn.Module:
    """Make a model converted in memory look like one loaded by ``from_pretrained``: its config carries the vqcore
    ``quantization_config`` and it holds a :class:`VQCoreQuantizer` (``hf_quantizer``, ``is_quantized``,
    ``quantization_method``), so diffusers' own writers — ``model.save_pretrained(folder)`` and a pipeline's
    ``pipe.save_pretrained(folder)`` — write folders that ``from_pretrained`` loads. Without it they write the integer
    tensors under a float config (a folder nothing can load). Same checks as :func:`save_pretrained`; returns
    ``model``."""
    _check_savable(model)
    cfg = VQCoreConfig(**quantization_config(model))
    model.register_to_config(quantization_config=cfg)
    model.hf_quantizer = VQCoreQuantizer(cfg, pre_quantized=True)
    model.is_quantized = True
    model.quantization_method = cfg.quant_method
    return model


def _check_savable(model: nn.Module) -> dict[str, QLinearInt]:
    if not (isinstance(model, nn.Module) and hasattr(model, "config") and callable(getattr(model, "to_json_string",
                                                                                           None))):  # fmt: skip
        raise TypeError(f"format='diffusers' needs a diffusers model (a ModelMixin such as "
                        f"CogVideoXTransformer3DModel), got {type(model).__name__}; use format='vqcore' for other "
                        "modules")  # fmt: skip
    ints = _int_layers(model)
    if not ints:
        raise ValueError("model has no QLinearInt layers; call vqcore.convert(model) first")
    from ..quant.attention import QuantSDPA
    from ..quant.modules import QMatMul, QuantModule

    fake = [n for n, m in model.named_modules() if isinstance(m, (QuantModule, QMatMul, QuantSDPA))]
    if fake:
        more = " ..." if len(fake) > 3 else ""
        raise ValueError(f"{type(model).__name__} still has fake-quant modules ({fake[:3]}{more}): layers left "
                         "fake-quant by convert(..., strict=False) and fake-quant attention have no "
                         "diffusers form; convert them (attention: convert(..., attention='int8')) or save with "
                         "format='vqcore'")  # fmt: skip
    _check_skeleton(model, ints)
    return ints

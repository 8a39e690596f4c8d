"""Saving and loading converted models (``model.safetensors`` + ``int_layers.json``, format ``vqcore-int/2``; the
layout is unchanged since the format was introduced) and counting their weight bytes."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from .. import kernels
from .conv import layer_class
from .linear import QLinearInt
from .spec import IntLinearSpec
from .swap import is_fake_quant_conv, is_fake_quant_linear, set_submodule, step_selectors

__all__ = ["FORMAT", "int_weight_bytes", "linear_weight_bytes", "load_converted", "save_converted"]


FORMAT = "vqcore-int/2"
_READS = ("vqcore-int/1", FORMAT)


def save_converted(model: nn.Module, directory: str | os.PathLike, *, format: str = "vqcore") -> Path:
    """Save a converted model: ``model.safetensors`` (its state dict, packed int weights and activation tables
    included) and ``int_layers.json`` (the :class:`IntLinearSpec` of every integer layer, and the step selector's
    schedule when the model has one). Written atomically per file.

    ``format="diffusers"`` (a diffusers model): a diffusers folder instead — ``config.json`` with a
    ``quantization_config`` (``quant_method: "vqcore"``) and ``diffusion_pytorch_model.safetensors`` — that
    ``<ModelClass>.from_pretrained`` loads after :func:`vqcore.integrations.diffusers.register` (see
    :mod:`vqcore.integrations.diffusers`)."""
    if format == "diffusers":
        from ..integrations.diffusers import save_pretrained

        return save_pretrained(model, directory)
    if format != "vqcore":
        raise ValueError(f"format must be 'vqcore' or 'diffusers', got {format!r}")
    from safetensors.torch import save_file

    d = Path(directory)
    specs = {n: asdict(m.spec) for n, m in model.named_modules() if isinstance(m, QLinearInt)}
    if not specs:
        raise ValueError("model has no QLinearInt layers; call vqcore.convert(model) first")
    d.mkdir(parents=True, exist_ok=True)
    meta: dict = {"format": FORMAT, "layers": specs}
    sels = step_selectors(model)
    if sels:
        meta["step_tables"] = {"module": sels[0][0], "timesteps": [float(t) for t in sels[0][1].timesteps]}
    if any(isinstance(m, kernels.Int8SDPA) for m in model.modules()):
        meta["attention"] = "int8"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    os.close(fd)
    save_file(state, tmp)
    os.replace(tmp, d / "model.safetensors")
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, d / "int_layers.json")
    return d


def load_converted(model: nn.Module, directory: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Rebuild a converted model from ``directory``: ``model`` is a float model of the same architecture (its linears
    and convolutions named in ``int_layers.json`` are replaced by empty integer layers), then the saved state dict is
    loaded, and a saved step schedule re-attaches a ``StepTableSelector`` (per-step activation tables follow the
    call's timestep again)."""
    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / "int_layers.json").read_text())
    if meta.get("format") not in _READS:
        raise ValueError(f"{d}: not a vqcore converted model (format {meta.get('format')!r}, expected one of "
                         f"{list(_READS)})")  # fmt: skip
    known = {f.name for f in fields(IntLinearSpec)}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, spec in meta["layers"].items():
        extra = sorted(set(spec) - known)
        if extra:
            raise ValueError(f"{d}: layer {name} has unknown spec fields {extra} (saved by a newer vqcore?)")
        s = IntLinearSpec(**spec)
        set_submodule(model, name, layer_class(s)(s, device=device))
    state = load_file(str(d / "model.safetensors"), device=str(device))
    model.load_state_dict(state, strict=strict)
    tables = meta.get("step_tables")
    if tables:
        from ..methods.timerange import attach_step_tables

        existing = step_selectors(model)
        if existing:
            existing[0][1].bind(model)
        else:
            attach_step_tables(model, tables["timesteps"])
    if meta.get("attention") == "int8":
        kernels.use_int8_attention(model)
    return model


def _bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def int_weight_bytes(model: nn.Module, *, convs: bool = True) -> int:
    """Bytes of the weight storage of the model's linear (and, with ``convs``, 2-D/3-D convolution) layers: the
    ``weight`` of float and fake-quant layers; ``qweight`` + ``weight_scale`` + ``weight_sum`` (+ ``weight_zp_scaled``,
    ``split_index`` and the static activation table ``act_scale``/``act_zero_point``) of integer layers. Biases are
    excluded."""
    total = 0
    for m in model.modules():
        if isinstance(m, QLinearInt):
            if convs or not m.spec.is_conv:
                total += _bytes(m.qweight, m.weight_scale, m.weight_zp_scaled, m.weight_sum, m.split_index,
                                m.act_scale, m.act_zero_point)  # fmt: skip
        elif isinstance(getattr(m, "weight", None), torch.Tensor):
            is_lin = isinstance(m, nn.Linear) or is_fake_quant_linear(m)
            is_conv = isinstance(m, (nn.Conv2d, nn.Conv3d)) or is_fake_quant_conv(m)
            if is_lin or (convs and is_conv):
                total += _bytes(m.weight)
    return total


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weight storage of every linear layer: ``weight`` of float ``nn.Linear``/fake-quant linears, and
    ``qweight`` + ``weight_scale`` (+ ``weight_zp_scaled``, ``weight_sum``, activation table) of :class:`QLinearInt`
    (biases and convolutions excluded; :func:`int_weight_bytes` counts convolutions too)."""
    return int_weight_bytes(model, convs=False)

"""Roles of linear layers, read from the diffusers module structure (names are only a fallback).

``linear_roles(model)`` → ``{qualified name: role}`` for every ``nn.Linear``:

- inside a transformer block (``vqcore.calib.find_blocks``: ``transformer_blocks``, ``single_transformer_blocks``,
  ``temporal_transformer_blocks``, ``blocks``, UNet blocks):
  ``attn_qkv`` (``to_q/to_k/to_v``, ``add_{q,k,v}_proj`` of an attention module: a module with ``to_q`` and ``to_k``),
  ``attn_out`` (``to_out.*``, ``to_add_out`` of it), ``mlp_in`` (the projection inside an activation module —
  diffusers' ``GELU``/``GEGLU``/``ApproximateGELU``/``SwiGLU`` ``.proj`` — or any first linear of a feed-forward
  module, or a block's own ``proj_mlp``), ``mlp_out`` (the other linears of a feed-forward module — a module whose
  class name contains ``FeedForward``/``MLP`` or that is named ``ff``/``ffn``/``ff_context``/``mlp`` — and the fused
  attention + MLP output ``proj_out`` of single-stream blocks, Flux/HunyuanVideo), ``modulation`` (linears of norm
  modules: adaLN / LayerNormZero, class name containing ``Norm``; ``*modulation*`` modules; UNet resnets'
  ``time_emb_proj``), ``other``
  (anything else in a block; reported, quantized at the default bits);
- outside the blocks: ``final`` (under ``norm_out*``/``proj_out*``/``final*``: the output head) or ``embedder``
  (everything else there: patch/position/time/text/caption embedders, adaLN-single, context projections).

``None`` is returned when the model has no recognised block list; the preset then falls back to name patterns.
"""

from __future__ import annotations

from torch import nn

__all__ = ["ROLES", "linear_roles"]

ROLES = ("attn_qkv", "attn_out", "mlp_in", "mlp_out", "modulation", "embedder", "final", "other")
_QKV = {"to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_qkv", "to_kv", "to_added_qkv"}
_OUT = {"to_out", "to_add_out"}
_FF_NAMES = {"ff", "ffn", "ff_context", "mlp", "feed_forward", "ff_norm"}


def _is_attention(m: nn.Module) -> bool:
    return hasattr(m, "to_q") and (hasattr(m, "to_k") or hasattr(m, "to_kv"))


def _is_ff(name: str, m: nn.Module) -> bool:
    cls = type(m).__name__
    return "FeedForward" in cls or cls.endswith("MLP") or name.rsplit(".", 1)[-1] in _FF_NAMES


def _is_activation(m: nn.Module) -> bool:
    return type(m).__name__ in {"GELU", "GEGLU", "ApproximateGELU", "SwiGLU", "LinearActivation"}


def _block_roles(block: nn.Module) -> dict[str, str]:
    roles: dict[str, str] = {}
    # containers first, innermost wins: attention, feed-forward, norms
    for name, m in block.named_modules():
        if not name:
            continue
        if _is_attention(m):
            for sub, lin in m.named_modules():
                if isinstance(lin, nn.Linear):
                    head = sub.split(".")[0]
                    role = "attn_qkv" if head in _QKV else "attn_out" if head in _OUT else None
                    if role is None:
                        role = "modulation" if "norm" in sub else "other"
                    roles[f"{name}.{sub}"] = role
        elif _is_ff(name, m) and not isinstance(m, nn.Linear):
            linears = [(s, lin) for s, lin in m.named_modules() if isinstance(lin, nn.Linear)]
            for i, (sub, _) in enumerate(linears):
                parent = m.get_submodule(sub.rpartition(".")[0]) if "." in sub else m
                first = _is_activation(parent) or (i == 0 and not any(_is_activation(p) for p in m.modules()))
                roles[f"{name}.{sub}"] = "mlp_in" if first else "mlp_out"
        elif "Norm" in type(m).__name__ or "modulation" in name.rsplit(".", 1)[-1]:
            for sub, lin in m.named_modules():
                if isinstance(lin, nn.Linear):
                    roles.setdefault(f"{name}.{sub}" if sub else name, "modulation")
    for name, m in block.named_modules():
        if isinstance(m, nn.Linear) and name not in roles:
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "proj_mlp":
                roles[name] = "mlp_in"
            elif leaf == "proj_out":  # single-stream block: fused attention + MLP output projection
                roles[name] = "mlp_out"
            else:
                cond = ("norm" in name or "modulation" in name or "adaLN" in name or "emb" in leaf)
                roles[name] = "modulation" if cond else "other"  # emb: UNet resnets' time_emb_proj
    return roles


def linear_roles(model: nn.Module) -> dict[str, str] | None:
    """``{name: role}`` for every ``nn.Linear`` of ``model`` (module docstring), or ``None`` without blocks."""
    from ..calib.capture import find_blocks

    try:
        blocks = find_blocks(model)
    except ValueError:
        return None
    roles: dict[str, str] = {}
    for b in blocks:
        for sub, role in _block_roles(model.get_submodule(b)).items():
            roles[f"{b}.{sub}"] = role
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name not in roles:
            parts = name.split(".")
            final = any(p.startswith(("norm_out", "proj_out", "final")) for p in parts)
            roles[name] = "final" if final else "embedder"
    return roles

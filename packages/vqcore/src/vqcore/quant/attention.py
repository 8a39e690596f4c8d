"""Optional quantization of the attention products (``Q·Kᵀ`` and ``attn·V``) of diffusers ``Attention`` modules.

Off by default (``QuantConfig.attention_bits=None``): the official Q-VDiT / S²Q-VDiT / ViDiT-Q (old) code keeps both
products and the softmax in floating point. The newer ViDiT-Q quantizes them; ``attention_bits=b`` does the same:
both operands of each product are fake-quantized per token (asymmetric, ``b`` bits, dynamic) by a :class:`QMatMul`,
the softmax stays in floating point.

How: every module with a ``processor`` attribute (diffusers ``Attention``) gets its processor wrapped. While the
wrapped processor runs, ``torch.nn.functional.scaled_dot_product_attention`` — which every diffusers 2.0 processor
calls — is replaced by :class:`QuantSDPA` and restored afterwards (also on error). This works for any processor
(CogVideoX's rotary/text-concatenating one, Latte's, the UNet's) without re-implementing them; it is not
thread-safe across concurrently running models in one process. The two :class:`QMatMul` live under the attention
module as ``vq_attention`` so they appear in ``named_modules`` and ``state_dict``.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from .modules import QMatMul
from .quantizer import QuantSpec

__all__ = ["QuantSDPA", "quantize_attention"]

class QuantSDPA(nn.Module):
    """``scaled_dot_product_attention`` with both products fake-quantized (same signature, no dropout in eval)."""

    def __init__(self, bits: int):
        super().__init__()
        spec = QuantSpec(bits=bits, granularity="per_token")
        self.qk = QMatMul(spec)
        self.av = QMatMul(spec)

    def forward(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                enable_gqa=False):
        if enable_gqa and key.shape[-3] != query.shape[-3]:
            rep = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        scores = self.qk(query, key.transpose(-1, -2)) * scale
        if is_causal:
            n, m = scores.shape[-2:]
            causal = torch.ones(n, m, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
                else scores + attn_mask
        probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
        if dropout_p > 0 and self.training:
            probs = F.dropout(probs, dropout_p)
        return self.av(probs, value)


class _QuantAttnProcessor:
    """Wraps a diffusers attention processor; see the module docstring. Subclassed per inner processor class by
    :func:`_wrapper_class` so that ``__call__`` shows the inner signature (diffusers filters kwargs by it)."""

    def __init__(self, inner, sdpa: QuantSDPA):
        self.inner = inner
        self.sdpa = sdpa

    def __getattr__(self, name):  # anything else diffusers may read comes from the inner processor
        if name == "inner" or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.inner, name)


_WRAPPERS: dict[type, type] = {}


def _wrapper_class(inner_cls: type) -> type:
    if inner_cls not in _WRAPPERS:
        def __call__(self, *args, **kwargs):
            previous = F.scaled_dot_product_attention
            F.scaled_dot_product_attention = self.sdpa
            try:
                return self.inner(*args, **kwargs)
            finally:
                F.scaled_dot_product_attention = previous

        __call__.__signature__ = inspect.signature(inner_cls.__call__)
        _WRAPPERS[inner_cls] = type(f"Quant{inner_cls.__name__}", (_QuantAttnProcessor,), {"__call__": __call__})
    return _WRAPPERS[inner_cls]


def quantize_attention(model: nn.Module, bits: int) -> int:
    """Wrap every attention processor of ``model`` so both attention products use ``bits``-bit operands.

    Returns the number of attention modules wrapped (0 when the model has no diffusers-style attention).
    """
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"attention bits must be an int in [2, 8], got {bits!r}")
    n = 0
    for mod in list(model.modules()):
        proc = getattr(mod, "processor", None)
        if proc is None or not callable(proc) or isinstance(proc, _QuantAttnProcessor):
            continue
        sdpa = QuantSDPA(bits)
        mod.add_module("vq_attention", sdpa)
        mod.processor = _wrapper_class(type(proc))(proc, sdpa)
        n += 1
    return n

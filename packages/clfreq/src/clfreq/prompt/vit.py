"""A timm VisionTransformer run block by block, with prefix-tuning prompts and input prompts.

Used by PrePrompt (prefix prompts in the first blocks, one prompt per task, chosen per sample) and by the L2P
baseline (prompt tokens prepended to the patch tokens). The pre-trained weights stay in the timm module; this wrapper
only changes how the blocks are called, so any timm ``VisionTransformer`` name works (``create_vit``) and the
prompt-free path equals ``timm``'s own ``forward_features`` exactly (tested).

Prefix-tuning (Li & Liang 2021, as used by DualPrompt/HiDe-Prompt/PrePrompt's ``PreT_Attention``): a prompt of
length ``L`` at a block is a pair ``(P_k, P_v)`` of ``[L, heads, head_dim]`` tensors prepended to that block's keys
and values; the queries — and so the sequence length — are unchanged.

Layout fix (PrePrompt notes §3.7): the official code reshapes ``(layers, 2, B, ...)`` into ``(layers, B, 2, ...)``
with ``reshape`` instead of ``permute``, which mixes prompts between samples when a batch uses different prompts.
Here the prompt tensor is always indexed as ``[layer, key/value, sample, ...]``, so each sample receives exactly its
own prompt; ``tests/test_clfreq_prompt.py`` checks that a mixed-prompt batch equals per-sample forwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PromptedViT", "PrefixPromptPool", "create_vit"]


def create_vit(name: str = "vit_tiny_patch16_224", pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a timm VisionTransformer with no classification head (``num_classes=0``).

    ``pretrained=True`` loads the hub weights (needs network access or a populated cache); offline users load a local
    state dict instead (see :func:`clfreq.prompt.pretrained.load_pretrained_vit`).
    """
    try:
        import timm
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        raise ImportError("prompt-based methods need timm (a dependency of clfreq): pip install 'timm>=0.9'") from None
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"name must be a timm VisionTransformer architecture, got {type(model).__name__} for {name!r}")
    return model


class PrefixPromptPool(nn.Module):
    """One prefix prompt per task for each prompted block: a ``[layers, 2, pool, L, heads, head_dim]`` parameter.

    Initialised uniform(−1, 1) as PrePrompt's ``EPrompt``. ``select(ids)`` returns the ``[layers, 2, B, L, H, D]``
    prefixes of the given prompt ids (one id per sample).
    """

    def __init__(self, num_layers: int, pool_size: int, length: int, num_heads: int, head_dim: int):
        super().__init__()
        for name, value in (("num_layers", num_layers), ("pool_size", pool_size), ("length", length),
                            ("num_heads", num_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.prompts = nn.Parameter(torch.empty(num_layers, 2, pool_size, length, num_heads, head_dim))
        nn.init.uniform_(self.prompts, -1.0, 1.0)

    @property
    def pool_size(self) -> int:
        return self.prompts.shape[2]

    def select(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 1:
            raise ValueError(f"ids must be a 1-D tensor of prompt indices, got shape {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.pool_size):
            raise ValueError(f"prompt ids must be in [0, {self.pool_size}), got {ids.tolist()}")
        return self.prompts.index_select(2, ids.to(self.prompts.device))

    def mixed(self, task: int, momentum: float, batch: int) -> torch.Tensor:
        """PrePrompt's training prompt: ``(1 − m)·P_t + m·mean(P_0..P_{t−1})`` (mean detached), for a batch."""
        current = self.prompts[:, :, task]
        if task > 0 and momentum > 0:
            current = (1 - momentum) * current + momentum * self.prompts[:, :, :task].detach().mean(dim=2)
        return current.unsqueeze(2).expand(-1, -1, batch, -1, -1, -1)


def _attention(attn: nn.Module, x: torch.Tensor, prefix_k: torch.Tensor | None,
               prefix_v: torch.Tensor | None) -> torch.Tensor:
    """timm ``Attention.forward`` with optional per-sample prefix keys/values (``[B, L, heads, head_dim]``)."""
    b, n, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if prefix_k is not None:
        k = torch.cat([prefix_k.permute(0, 2, 1, 3).to(k.dtype), k], dim=2)
        v = torch.cat([prefix_v.permute(0, 2, 1, 3).to(v.dtype), v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = out.transpose(1, 2).reshape(b, n, heads * head_dim)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


def _block(block: nn.Module, x: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
    pk, pv = (prefix[0], prefix[1]) if prefix is not None else (None, None)
    x = x + block.drop_path1(block.ls1(_attention(block.attn, block.norm1(x), pk, pv)))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


class PromptedViT(nn.Module):
    """A frozen timm ViT whose blocks accept prefix prompts; returns the final-norm CLS feature.

    Args:
        backbone: a timm ``VisionTransformer`` (class token, no head). Its parameters are frozen here.
        prefix_layers: indices of the blocks that take prefix prompts (PrePrompt: ``[0, 1, 2, 3, 4]``).
    """

    def __init__(self, backbone: nn.Module, prefix_layers: Sequence[int] = (0, 1, 2, 3, 4)):
        super().__init__()
        depth = len(backbone.blocks)
        layers = [int(i) for i in prefix_layers]
        if any(not 0 <= i < depth for i in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"prefix_layers must be distinct block indices in [0, {depth}), got {list(prefix_layers)}")
        if getattr(backbone, "cls_token", None) is None:
            raise ValueError("backbone must be a VisionTransformer with a class token")
        self.backbone = backbone
        self.prefix_layers = layers
        self.embed_dim = backbone.embed_dim
        self.num_heads = backbone.blocks[0].attn.num_heads
        self.head_dim = backbone.blocks[0].attn.head_dim
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch + position embedding (with the class token), as timm does before the blocks."""
        bb = self.backbone
        x = bb.patch_embed(images)
        x = bb._pos_embed(x)
        x = bb.patch_drop(x)
        return bb.norm_pre(x)

    def forward(self, images: torch.Tensor, prefix: torch.Tensor | None = None,
                input_prompts: torch.Tensor | None = None) -> torch.Tensor:
        """CLS feature ``[B, D]``.

        Args:
            prefix: ``[len(prefix_layers), 2, B, L, heads, head_dim]`` prefix prompts, or None.
            input_prompts: ``[B, P, D]`` tokens inserted after the class token (L2P prompt-tuning), or None.
        """
        return self.forward_tokens(images, prefix, input_prompts)[:, 0]

    def forward_tokens(self, images: torch.Tensor, prefix: torch.Tensor | None = None,
                       input_prompts: torch.Tensor | None = None) -> torch.Tensor:
        """All output tokens after the final norm (``[B, 1 + P + patches, D]``)."""
        x = self.tokens(images)
        if input_prompts is not None:
            if input_prompts.ndim != 3 or input_prompts.shape[0] != x.shape[0] or input_prompts.shape[2] != x.shape[2]:
                raise ValueError(f"input_prompts must be [B={x.shape[0]}, P, D={x.shape[2]}], "
                                 f"got {tuple(input_prompts.shape)}")
            x = torch.cat([x[:, :1], input_prompts.to(x.dtype), x[:, 1:]], dim=1)
        if prefix is not None:
            expected = (len(self.prefix_layers), 2, x.shape[0])
            if prefix.ndim != 6 or tuple(prefix.shape[:3]) != expected or prefix.shape[4:] != (
                    self.num_heads, self.head_dim):
                raise ValueError(f"prefix must be [{expected[0]}, 2, B={expected[2]}, L, {self.num_heads}, "
                                 f"{self.head_dim}], got {tuple(prefix.shape)}")
        slot = {layer: i for i, layer in enumerate(self.prefix_layers)}
        for index, block in enumerate(self.backbone.blocks):
            layer_prefix = prefix[slot[index]] if prefix is not None and index in slot else None
            x = _block(block, x, layer_prefix)
        return self.backbone.norm(x)

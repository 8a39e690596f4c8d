"""WalMaFa: Wavelet-based Mamba with Fourier Adjustment for low-light image enhancement.

Paper: J. Tan, S. Pei, W. Qin, B. Fu, X. Li, L. Huang, "Wavelet-based Mamba with Fourier Adjustment for Low-light
Image Enhancement", ACCV 2024 (arXiv 2410.20314). Official code: ``mcpaulgeorge/WalMaFa`` (``model/Walmafa.py``,
``model/blocks.py``), read for the layout; this file is an independent implementation.

Structure (paper Sec. 3.1 / Fig. 2, code ``Walmafa.forward``): a Retinex-style pre-lighting (``estimator``), a
3-level encoder of Wavelet-based Mamba Blocks (WMB, Sec. 3.2) at H/2, H/4, H/8, the Fast Fourier Adjustment Block
(FFAB, Sec. 3.3) as the latent at H/8, and a decoder with per-channel weighted skip fusions and WMBs at H/4, H/2
and full resolution.

Where the released code and the paper differ, the default follows the **released code** (the checkpoints were made
that way) and switches give the paper's version:

* ``mamba_on="high"`` (code): Mamba runs on the stacked high-frequency bands (HL, LH, HH) and a light convolutional
  "illumination" module replaces LL. ``mamba_on="low"`` (paper Fig. 3, issue WalMaFa#11): LL goes through
  conv-ReLU-conv → LayerNorm → Mamba → 3×3 conv and the high bands through one 3×3 conv.
* ``token_layout="raw"`` (code): the WM block flattens ``[B, C, H, W]`` to ``[B, H·W, C]`` with a raw reshape, so a
  "token" is C consecutive pixels of one channel and the scan walks channel after channel; ``"pixel"`` uses one token
  per pixel with its C channels as features (what the paper's "channel-wise Mamba" reads as).
* The decoder has no WMB at H/8 (the paper figure draws one); the first decoder fusion uses ``skip_1_0`` while
  ``skip_2_1`` is unused; FFAB uses LeakyReLU and 1×1 convs where the figure draws ReLU and a 3×3 conv.
* Released checkpoints load through :func:`checkpoint_filter_fn` (timm's convention), which drops the parameters
  the released model defines but never uses: ``coefficient``, ``patch_embed_mask``, ``skip_2_1``, a second Mamba
  ``mb.model2`` with expand 9, and each WMB's ``illu.conv2`` (the released block computes its map and discards it).
  This model does not build them, so every parameter gets a gradient (multi-GPU training needs no unused-parameter
  search). Checkpoints of this package written before issue 26 (which still held ``illu.conv2``) go through the same
  filter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..mamba import SCANS, Mamba
from ..wavelets import haar_dwt, haar_iwt

__all__ = ["WalMaFaConfig", "WalMaFa", "FFAB", "WMB", "checkpoint_filter_fn", "released_config_from_state_dict",
           "load_released_checkpoint"]


@dataclass
class WalMaFaConfig:
    """Hyper-parameters. Defaults are the configuration ``train.py``/``test.py`` build (dim 16, blocks [2, 3, 4]);
    the class defaults of the released ``Walmafa`` are ``dim=32, num_blocks=(1, 2, 4)`` (registry name
    ``walmafa_classdefault``)."""

    in_channels: int = 3
    out_channels: int = 3
    dim: int = 16
    num_blocks: Sequence[int] = field(default_factory=lambda: (2, 3, 4))
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm_type: str = "WithBias"
    attention: bool = True  # makes the skip-fusion coefficients trainable
    skip: bool = False  # global residual out = conv(x) + pre-lit input
    mamba_on: str = "high"
    token_layout: str = "raw"
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    scan: str = "chunked"
    chunk_size: int = 64
    ffab: bool = True  # ablation switch: False replaces the FFAB latent by the identity (not a released variant)
    #: accepted (False only) so that model cards written before issue 26 still load; not stored
    keep_unused: InitVar[bool] = False

    def __post_init__(self, keep_unused: bool = False) -> None:
        if keep_unused:
            raise ValueError("keep_unused=True was removed: the model no longer builds the released checkpoints' "
                             "unused parameters; load those checkpoints through checkpoint_filter_fn "
                             "(WalMaFa.from_released_state_dict / load_released_checkpoint)")
        self.num_blocks = tuple(int(b) for b in self.num_blocks)
        if len(self.num_blocks) != 3 or min(self.num_blocks) < 1:
            raise ValueError(f"num_blocks must be three positive ints, got {self.num_blocks!r}")
        if not isinstance(self.dim, int) or self.dim < 2 or self.dim % 2:
            raise ValueError(f"dim must be an even int >= 2, got {self.dim!r}")
        if self.mamba_on not in ("high", "low"):
            raise ValueError(f"mamba_on must be 'high' (released code) or 'low' (paper), got {self.mamba_on!r}")
        if self.token_layout not in ("raw", "pixel"):
            raise ValueError(f"token_layout must be 'raw' (released code) or 'pixel', got {self.token_layout!r}")
        if self.layernorm_type not in ("WithBias", "BiasFree"):
            raise ValueError(f"layernorm_type must be 'WithBias' or 'BiasFree', got {self.layernorm_type!r}")
        if self.scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {self.scan!r}")
        if self.ffn_expansion_factor <= 0:
            raise ValueError(f"ffn_expansion_factor must be positive, got {self.ffn_expansion_factor}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["num_blocks"] = list(self.num_blocks)
        return d


class ChannelLayerNorm(nn.Module):
    """Per-pixel LayerNorm over channels of a ``[B, C, H, W]`` map (Restormer's, eps 1e-5; keys ``body.*``)."""

    def __init__(self, dim: int, with_bias: bool = True):
        super().__init__()
        self.body = nn.Module()
        self.body.weight = nn.Parameter(torch.ones(dim))
        self.body.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None
        self.with_bias = with_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        w = self.body.weight[None, :, None, None]
        if self.with_bias:
            mu = x.mean(dim=1, keepdim=True)
            return (x - mu) / torch.sqrt(var + 1e-5) * w + self.body.bias[None, :, None, None]
        return x / torch.sqrt(var + 1e-5) * w


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm, fusible into one conv for inference (keys ``c.*``, ``bn.*``)."""

    def __init__(self, cin: int, cout: int, k: int, padding: int, groups: int):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, k, 1, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class FeedForward(nn.Module):
    """Gated FFN with a RepVGG-style branch (code ``FeedForward``): ``u = W_in x``,
    ``a = u + BN(dw3×3 u) + BN(dw1×1 u)``, ``b = dw3×3 u``, ``out = W_out(GELU(b)·a + GELU(a)·b) + x``."""

    def __init__(self, dim: int, expansion: float, bias: bool):
        super().__init__()
        hidden = int(dim * expansion)
        self.rep_conv1 = ConvBN(hidden, hidden, 3, 1, hidden)
        self.rep_conv2 = ConvBN(hidden, hidden, 1, 0, hidden)
        self.project_in = nn.Conv2d(dim, hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.project_in(x)
        a = u + self.rep_conv1(u) + self.rep_conv2(u)
        b = self.dwconv(u)
        return self.project_out(F.gelu(b) * a + F.gelu(a) * b) + x


class IlluminationEstimator(nn.Module):
    """Retinex-style estimator (code ``Illumination_Estimator``): concat channel mean → 1×1 → depthwise 5×5
    (features) → 1×1 (map). Returns ``(features, map)``; ``with_map=False`` builds no map conv and returns
    ``(features, None)`` (the WMB's estimator, whose map the released block discards)."""

    def __init__(self, mid: int, cin: int = 4, cout: int = 3, with_map: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=True)
        self.depth_conv = nn.Conv2d(mid, mid, 5, padding=2, groups=mid, bias=True)
        self.conv2 = nn.Conv2d(mid, cout, 1, bias=True) if with_map else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        fea = self.depth_conv(self.conv1(torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)))
        return fea, (self.conv2(fea) if self.conv2 is not None else None)


class WaveletMamba(nn.Module):
    """The "WM" module: conv-ReLU-conv (+ residual) → LayerNorm → Mamba over a token sequence → 3×3 conv.

    Token layouts: see the module docstring (``raw`` replicates the released reshape, ``pixel`` is one token per
    pixel)."""

    def __init__(self, c: int, d_state: int, d_conv: int, expand: int, token_layout: str, scan: str,
                 chunk_size: int):
        super().__init__()
        self.convb = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 1, 1), nn.ReLU(), nn.Conv2d(2 * c, c, 3, 1, 1))
        # (the released code also defines a second Mamba with expand=9, ``model2``, and never calls it)
        self.model1 = Mamba(c, d_state=d_state, d_conv=d_conv, expand=expand, scan=scan, chunk_size=chunk_size)
        self.smooth = nn.Conv2d(c, c, 3, 1, 1)
        self.ln = nn.LayerNorm(c)
        self.token_layout = token_layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.convb(x) + x
        if self.token_layout == "raw":
            seq = self.ln(x.reshape(b, -1, c))  # token t = flat elements [t·c, (t+1)·c) of the [c, h, w] map
            y = self.model1(seq).permute(0, 2, 1).reshape(b, c, h, w)
        else:
            seq = self.ln(x.flatten(2).transpose(1, 2))  # one token per pixel, channels as features
            y = self.model1(seq).transpose(1, 2).reshape(b, c, h, w)
        return self.smooth(y)


class WMB(nn.Module):
    """Wavelet-based Mamba Block (paper Sec. 3.2; code ``WMB``):

    ``x ← 2·LN1(x) − 1``; Haar DWT; process LL and (HL, LH, HH) (see ``mamba_on``); IWT;
    ``x ← x + clamp((IWT + 1)/2, 0, 1)``; ``x ← x + FFN(LN2(x))`` (the FFN carries its own identity).
    Note the block's raw input is not skip-connected (released behaviour, kept)."""

    def __init__(self, dim: int, cfg: WalMaFaConfig):
        super().__init__()
        with_bias = cfg.layernorm_type == "WithBias"
        self.norm1 = ChannelLayerNorm(dim, with_bias)
        self.norm2 = ChannelLayerNorm(dim, with_bias)
        self.ffn = FeedForward(dim, cfg.ffn_expansion_factor, cfg.bias)
        self.mb = WaveletMamba(dim, cfg.d_state, cfg.d_conv, cfg.expand, cfg.token_layout, cfg.scan,
                               cfg.chunk_size)
        self.mamba_on = cfg.mamba_on
        if self.mamba_on == "high":
            # the released block computes the estimator's map (``illu.conv2``) and discards it: not built here
            self.illu = IlluminationEstimator(dim, cin=dim + 1, cout=dim, with_map=False)
        else:
            self.high_conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = 2 * self.norm1(x) - 1
        bands = haar_dwt(x)
        low, high = bands[:n], bands[n:]
        if self.mamba_on == "high":
            low, _ = self.illu(low)  # features only (the released code computes and discards the map)
            high = self.mb(high)
        else:
            low = self.mb(low)
            high = self.high_conv(high)
        y = haar_iwt(torch.cat((low, high), dim=0))
        x = x + torch.clamp((y + 1) / 2, 0.0, 1.0)
        return x + self.ffn(self.norm2(x))


class FEB(nn.Module):
    """Fourier enhancement unit: 1×1 → rfft2 → separate 1×1-LeakyReLU-1×1 MLPs on amplitude and phase → polar
    recombination → irfft2, plus identity (paper Sec. 3.3, Eq. for FFAB; code ``FEB``)."""

    def __init__(self, nc: int):
        super().__init__()
        self.fpre = nn.Conv2d(nc, nc, 1)
        self.process1 = nn.Sequential(nn.Conv2d(nc, nc, 1), nn.LeakyReLU(0.1), nn.Conv2d(nc, nc, 1))
        self.process2 = nn.Sequential(nn.Conv2d(nc, nc, 1), nn.LeakyReLU(0.1), nn.Conv2d(nc, nc, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        dtype = x.dtype
        ct = torch.promote_types(dtype, torch.float32)  # the FFT in at least fp32 (bf16/fp16 under autocast)
        spec = torch.fft.rfft2(self.fpre(x).to(ct), norm="backward")
        mag = self.process1(spec.abs().to(dtype)).to(ct)
        pha = self.process2(torch.angle(spec).to(dtype)).to(ct)
        out = torch.fft.irfft2(torch.complex(mag * torch.cos(pha), mag * torch.sin(pha)), s=(h, w), norm="backward")
        return out.to(dtype) + x


class ProcessBlock(nn.Module):
    """``x + 1×1(FEB(x))`` (code ``ProcessBlock``; its ``spatial_process`` is an identity with no parameters)."""

    def __init__(self, nc: int):
        super().__init__()
        self.frequency_process = FEB(nc)
        self.cat = nn.Conv2d(nc, nc, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cat(self.frequency_process(x)) + x


class FFAB(nn.Module):
    """Fast Fourier Adjustment Block (latent): 7 ProcessBlocks with U-shaped concatenation skips:
    ``x0 = PB(1×1 x)``, ``x1..x3 = PB``, ``x4 = 1×1 PB([x2, x3])``, ``x5 = 1×1 PB([x1, x4])``,
    ``out = 1×1 PB([x0, x5])``."""

    def __init__(self, nc: int):
        super().__init__()
        self.conv0 = nn.Sequential(nn.Conv2d(nc, nc, 1), ProcessBlock(nc))
        self.conv1 = ProcessBlock(nc)
        self.conv2 = ProcessBlock(nc)
        self.conv3 = ProcessBlock(nc)
        self.conv4 = nn.Sequential(ProcessBlock(2 * nc), nn.Conv2d(2 * nc, nc, 1))
        self.conv5 = nn.Sequential(ProcessBlock(2 * nc), nn.Conv2d(2 * nc, nc, 1))
        self.convout = nn.Sequential(ProcessBlock(2 * nc), nn.Conv2d(2 * nc, nc, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.conv0(x)
        x1 = self.conv1(x0)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x4 = self.conv4(torch.cat((x2, x3), dim=1))
        x5 = self.conv5(torch.cat((x1, x4), dim=1))
        return self.convout(torch.cat((x0, x5), dim=1))


class _Proj(nn.Module):
    """A bias-free 3×3 conv stored as ``proj`` (key layout of the released ``OverlapPatchEmbed``)."""

    def __init__(self, cin: int, cout: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _Resample(nn.Module):
    """``body`` = 3×3 conv then pixel (un)shuffle by 2 (key layout of the released ``Downsample``/``Upsample``)."""

    def __init__(self, c: int, down: bool):
        super().__init__()
        if down:  # c @H → 2c @H/2
            self.body = nn.Sequential(nn.Conv2d(c, c // 2, 3, 1, 1, bias=False), nn.PixelUnshuffle(2))
        else:  # c @H → c/2 @2H
            self.body = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 1, 1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _down(c: int) -> nn.Module:
    return _Resample(c, down=True)


def _up(c: int) -> nn.Module:
    return _Resample(c, down=False)


class WalMaFa(nn.Module):
    """The full network; input ``[B, 3, H, W]`` in [0, 1] with H and W multiples of 16 (see
    :func:`walmafa.pad_to_multiple`); output unclamped (clamp for evaluation)."""

    def __init__(self, config: WalMaFaConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = WalMaFaConfig(**overrides)
        elif overrides:
            config = WalMaFaConfig(**{**config.to_dict(), **overrides})
        if not isinstance(config, WalMaFaConfig):
            raise TypeError(f"config must be a WalMaFaConfig, got {type(config).__name__}")
        self.config = cfg = config
        c, nb = cfg.dim, cfg.num_blocks

        def stage(width: int, count: int) -> nn.Sequential:
            return nn.Sequential(*[WMB(width, cfg) for _ in range(count)])

        self.estimator = IlluminationEstimator(c, cin=cfg.in_channels + 1, cout=cfg.in_channels)
        self.patch_embed = _Proj(cfg.in_channels, c, bias=cfg.bias)
        self.down_1 = _down(c)
        self.decoder_level1_0 = stage(2 * c, nb[0])  # encoder @H/2 (released attribute names kept)
        self.down_2 = _down(2 * c)
        self.decoder_level2_0 = stage(4 * c, nb[1])  # encoder @H/4
        self.down_3 = _down(4 * c)
        self.decoder_level3_0 = stage(8 * c, nb[2])  # encoder @H/8
        self.latent = FFAB(8 * c) if cfg.ffab else nn.Identity()
        self.up3_2 = _up(8 * c)
        self.decoder_level2_1 = stage(4 * c, nb[1])
        self.up2_1 = _up(4 * c)
        self.decoder_level1_1 = stage(2 * c, nb[0])
        self.up2_0 = _up(2 * c)
        self.sim = stage(c, nb[0])  # full-resolution refinement (decoder only)
        self.coefficient_3_2 = nn.Parameter(torch.ones(2, 4 * c), requires_grad=cfg.attention)
        self.coefficient_2_1 = nn.Parameter(torch.ones(2, 2 * c), requires_grad=cfg.attention)
        self.coefficient_1_0 = nn.Parameter(torch.ones(2, c), requires_grad=cfg.attention)
        self.skip_3_2 = nn.Conv2d(4 * c, 4 * c, 1, bias=cfg.bias)
        self.skip_1_0 = nn.Conv2d(2 * c, 2 * c, 1, bias=cfg.bias)  # used after the H/2 fusion (released code)
        self.output = nn.Conv2d(c, cfg.out_channels, 3, 1, 1, bias=cfg.bias)
        # (the released class also defines ``coefficient``, ``patch_embed_mask`` and ``skip_2_1`` and never uses them)

    @staticmethod
    def _fuse(coef: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return coef[0][None, :, None, None] * a + coef[1][None, :, None, None] * b

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1] != self.config.in_channels:
            raise ValueError(f"input must be [B, {self.config.in_channels}, H, W], got {tuple(img.shape)}")
        if img.shape[-2] % 16 or img.shape[-1] % 16:
            raise ValueError(f"H and W must be multiples of 16 (use walmafa.pad_to_multiple), got {tuple(img.shape)}")
        _, illu_map = self.estimator(img)
        lit = img * illu_map + img
        e0 = self.patch_embed(lit)
        e1 = self.decoder_level1_0(self.down_1(e0))
        e2 = self.decoder_level2_0(self.down_2(e1))
        e3 = self.decoder_level3_0(self.down_3(e2))
        d3 = self.up3_2(self.latent(e3))
        d2 = self.decoder_level2_1(self.skip_3_2(self._fuse(self.coefficient_3_2, e2, d3)))
        d1 = self.decoder_level1_1(self.skip_1_0(self._fuse(self.coefficient_2_1, e1, self.up2_1(d2))))
        d0 = self.up2_0(d1)
        out = self.output(self._fuse(self.coefficient_1_0, self.sim(d0), d0))
        return out + lit if self.config.skip else out

    @classmethod
    def from_released_state_dict(cls, state_dict: dict, **config) -> WalMaFa:
        """Build a model from a state dict in the released layout and load it strictly.

        Accepts a raw state dict or the released checkpoint dict with a ``"state_dict"`` entry, with or without a
        ``module.`` prefix. The parameters the released model defines but never uses are dropped by
        :func:`checkpoint_filter_fn`; every other key must match, so the model saves and reloads like any other
        ``walmafa`` model. Configuration fields not given are inferred from the tensors
        (:func:`released_config_from_state_dict`)."""
        raw = _unwrap_released(state_dict)
        model = cls(WalMaFaConfig(**{**released_config_from_state_dict(raw), **config}))
        load_strict(model, checkpoint_filter_fn(raw), "the released-layout state dict")
        return model


def load_strict(model: nn.Module, state: dict, what: str) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch becomes one ValueError line that counts the missing,
    unexpected and mis-shaped entries and names the first of each (instead of PyTorch's list of every key)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    if missing or unexpected or shaped:
        parts = [f"{name}: {len(v)}, first {v[0]!r}" for name, v in
                 (("missing", missing), ("unexpected", unexpected), ("another shape", shaped)) if v]
        raise ValueError(f"{what} does not fit the model (" + "; ".join(parts) + ")")
    model.load_state_dict(state, strict=True)


# parameters the released ``Walmafa`` defines but never uses in ``forward``
_UNUSED_RELEASED = re.compile(r"^(coefficient|patch_embed_mask\..+|skip_2_1\..+|.+\.mb\.model2\..+"
                              r"|.+\.illu\.conv2\..+)$")


def _unwrap_released(state_dict: dict) -> dict:
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def checkpoint_filter_fn(state_dict: dict) -> dict:
    """Released WalMaFa checkpoint (or one of this package written before issue 26) → this package's layout.

    Unwraps a ``{"state_dict": ...}`` checkpoint, strips a ``module.`` (DataParallel) prefix and drops the entries the
    released model defines but never uses: ``coefficient``, ``patch_embed_mask.*``, ``skip_2_1.*``, every WMB's
    expand-9 ``mb.model2.*`` and every WMB's ``illu.conv2.*`` (the map the released block discards; the top-level
    ``estimator.conv2`` is used and kept). Every other key and tensor is kept unchanged (the names already match)."""
    return {k: v for k, v in _unwrap_released(state_dict).items() if not _UNUSED_RELEASED.match(k)}


def released_config_from_state_dict(state_dict: dict) -> dict:
    """The :class:`WalMaFaConfig` fields a released-layout state dict determines: ``dim`` (``patch_embed``),
    ``num_blocks`` (encoder stage lengths), ``d_state``/``d_conv``/``expand`` (the first Mamba), ``bias`` and
    ``mamba_on`` (``high_conv`` present → ``"low"``). The FFN expansion (2.66) and token layout are not recorded in the
    tensors and keep their released defaults."""
    sd = _unwrap_released(state_dict)
    if "patch_embed.proj.weight" not in sd:
        raise ValueError("not a WalMaFa state dict in the released layout (no 'patch_embed.proj.weight')")
    dim = int(sd["patch_embed.proj.weight"].shape[0])

    def count(stage: str) -> int:
        return len({k.split(".")[1] for k in sd if k.startswith(stage + ".")})

    nb = (count("decoder_level1_0"), count("decoder_level2_0"), count("decoder_level3_0"))
    needed = ("decoder_level1_0.0.mb.model1.A_log", "decoder_level1_0.0.mb.model1.conv1d.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(f"incomplete WalMaFa state dict in the released layout: no {missing[0]!r}")
    a_log = sd[needed[0]]
    cfg = {"dim": dim, "num_blocks": nb, "d_state": int(a_log.shape[1]), "expand": int(a_log.shape[0]) // (2 * dim),
           "d_conv": int(sd[needed[1]].shape[-1]),
           "bias": "patch_embed.proj.bias" in sd,
           "mamba_on": "low" if "decoder_level1_0.0.high_conv.weight" in sd else "high"}
    return cfg


def _load_error(exc: Exception) -> str:
    """The informative part of ``torch.load``'s (multi-line) error, on one line."""
    text = str(exc)
    i = text.find("WeightsUnpickler error:")
    if i >= 0:
        rest = text[i + len("WeightsUnpickler error:"):].strip()
        first = rest.split("\n")[0].split(". ")[0].strip()
        if first:
            return first
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def load_released_checkpoint(path: str | os.PathLike, **config) -> WalMaFa:
    """Load an official WalMaFa checkpoint file (``.pth``/``.pt`` through ``torch.load(weights_only=True)``, which
    refuses pickled code; or ``.safetensors``) into a ``walmafa`` model via :func:`checkpoint_filter_fn`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights must be an existing file, got {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - one clear line instead of the unpickler's traceback
            raise ValueError(f"could not read {str(path)!r} as a weights-only PyTorch checkpoint: "
                             f"{_load_error(exc)}") from exc
    return WalMaFa.from_released_state_dict(state, **config)

"""What an integer layer is: :class:`IntLinearSpec` (its static description, the JSON ``save_converted`` records) and
the three objects :meth:`~vqcore.convert.QLinearInt.build` builds one from — :class:`IntWeights` (weight codes and
their scales), :class:`ActQuant` (how the input is quantized) and :class:`LayerExtras` (bias, smoothing, side branch,
convolution geometry). Each validates itself on construction, so a bad argument fails with one line naming it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MIXED_LAYOUTS", "ActQuant", "IntLinearSpec", "IntWeights", "LayerExtras"]

MIXED_LAYOUTS = ("split", "padded")


@dataclass
class IntLinearSpec:
    """Static description of a :class:`QLinearInt` / :class:`QConv2dInt` (what :func:`load_converted` needs).

    ``w_bits`` is the weight *container* width (≤ 4: packed int4, else int8); ``split_rows`` extra GEMM rows hold the
    high digits of channels one bit wider than the container (mixed-width layers). ``a_static``: static per-tensor
    activation quantization with stored ``(Δ, zp)``; ``timesteps`` rows of them (0: one row) — the field name is the
    one :class:`~vqcore.methods.timerange.StepTableSelector` looks for. ``kernel_size`` non-empty: a 2-D convolution
    (``in_features = in_channels·kh·kw``)."""

    in_features: int
    out_features: int
    w_bits: int
    a_bits: int = 8
    a_symmetric: bool = True
    group_size: int = 0
    weight_zero_point: bool = False
    bias: bool = True
    smooth: bool = False
    rank: int = 0
    side_on_quantized: bool = False
    a_shared: bool = False
    dtype: str = "float32"
    side_row_period: int = 0
    a_static: bool = False
    timesteps: int = 0
    split_rows: int = 0
    kernel_size: tuple = ()
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    in_channels: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.w_bits <= 8:
            raise ValueError(f"w_bits must be in [2, 8], got {self.w_bits}")
        if not 2 <= self.a_bits <= 8:
            raise ValueError(f"a_bits must be in [2, 8], got {self.a_bits}")
        if self.group_size:
            step = 64 if self.w_bits <= 4 else 128
            if self.group_size < 0 or self.group_size % step:
                raise ValueError(f"group_size must be 0 (per channel) or a multiple of {step} at w_bits={self.w_bits}, "
                                 f"got {self.group_size}")  # fmt: skip
            if self.weight_zero_point:
                raise ValueError("asymmetric (zero-point) weights are supported with per-channel scales only")
        if not 0 <= self.rank <= 64:
            raise ValueError(f"side-branch rank must be in [0, 64], got {self.rank}")
        if not isinstance(self.timesteps, int) or self.timesteps < 0:
            raise ValueError(f"timesteps must be a non-negative int, got {self.timesteps!r}")
        if self.timesteps and not self.a_static:
            raise ValueError("timesteps (a per-step activation table) needs a_static=True")
        if self.a_static and self.a_shared:
            raise ValueError("a_static and a_shared exclude each other (static vs dynamic activation ranges)")
        if not 0 <= self.split_rows <= self.out_features:
            raise ValueError(f"split_rows must be in [0, out_features={self.out_features}], got {self.split_rows}")
        if self.split_rows and self.group_size:
            raise ValueError("split rows (mixed-width channels) need per-channel weight scales (group_size=0)")
        self.kernel_size = tuple(int(v) for v in self.kernel_size)
        self.stride, self.padding, self.dilation = (tuple(int(v) for v in t) for t in (self.stride, self.padding,
                                                                                          self.dilation))  # fmt: skip
        if self.kernel_size:
            kh, kw = self.kernel_size if len(self.kernel_size) == 2 else (0, 0)
            if min(self.kernel_size) < 1 or self.in_channels * kh * kw != self.in_features:
                raise ValueError(f"a conv spec needs kernel_size (kh, kw) with in_channels·kh·kw == in_features, "
                                 f"got {self.kernel_size}, in_channels={self.in_channels}, "
                                 f"in={self.in_features}")  # fmt: skip
            if any(len(t) != 2 for t in (self.stride, self.padding, self.dilation)):
                raise ValueError("stride, padding and dilation must be pairs")
            if not self.a_static or self.rank:
                raise ValueError("integer convolutions need static activations and no side branch")

    @property
    def packed(self) -> bool:
        return self.w_bits <= 4

    @property
    def rows(self) -> int:
        """Output rows of the GEMM (``out_features`` + the split high-digit rows)."""
        return self.out_features + self.split_rows

    @property
    def is_conv(self) -> bool:
        return bool(self.kernel_size)


@dataclass
class IntWeights:
    """Integer weight codes ``[N, K]`` and their scale/zero point (the dequantized weight is ``(codes − zero_point)·
    scale``).

    ``codes`` are either signed (symmetric quantizer: values in [−2^(b−1), 2^(b−1)−1], ``zero_point`` None or all
    zero) or unsigned (asymmetric: values in [0, 2^b − 1] with ``zero_point``). ``scale``/``zero_point``: ``[N]`` (or
    ``[N, 1]``) per channel, or ``[N, G]`` per group of ``group_size`` input columns (zero points must then be all
    zero). ``channel_bits [N]``: the width of each channel (mixed-width layers; ``bits`` is then ignored), stored as
    ``layout`` says (``"split"`` / ``"padded"``, see :mod:`vqcore.convert`)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None = None
    bits: int = 8
    group_size: int = 0
    channel_bits: torch.Tensor | None = None
    layout: str = "split"

    def __post_init__(self) -> None:
        if self.codes.dim() != 2:
            raise ValueError(f"codes must be [N, K], got {tuple(self.codes.shape)}")
        n, k = self.codes.shape
        self.codes = torch.round(self.codes.float())
        self.scale = self.scale.detach().float().reshape(n, -1)
        if self.group_size == 0 and self.scale.shape[1] != 1:
            raise ValueError(f"per-channel scale must have {n} elements, got {tuple(self.scale.shape)}")
        if self.group_size and self.scale.shape[1] != -(-k // self.group_size):
            raise ValueError(f"per-group scale must be [{n}, {-(-k // self.group_size)}], got "
                             f"{tuple(self.scale.shape)}")  # fmt: skip
        if self.channel_bits is not None and self.group_size:
            raise ValueError("mixed-width (channel_bits) weights need per-channel scales (group_size=0)")


@dataclass
class ActQuant:
    """Activation quantization of the layer's input: ``bits``, ``symmetric``; dynamic per token (``shared``: one
    range per token position shared across the batch, ``per_token_shared``), or static per tensor when ``scale`` is
    given — the ``UniformQuantizer``'s Δ and *unsigned* ``zero_point``, ``[max(timesteps, 1)]`` rows (a per-step
    table when ``timesteps > 0``)."""

    bits: int = 8
    symmetric: bool = True
    shared: bool = False
    scale: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None
    timesteps: int = 0

    @property
    def static(self) -> bool:
        return self.scale is not None

    def __post_init__(self) -> None:
        if not self.static:
            if self.timesteps:
                raise ValueError("act_timesteps needs act_scale (a static activation table)")
            return
        t = max(int(self.timesteps), 1)
        a_sc = self.scale.detach().float().reshape(-1)
        a_zp = (self.zero_point if self.zero_point is not None else torch.zeros_like(a_sc)).detach().float()
        a_zp = a_zp.reshape(-1)
        if a_sc.numel() != t or a_zp.numel() != t:
            raise ValueError(f"static activation scale/zero point must have {t} rows, got {a_sc.numel()} and "
                             f"{a_zp.numel()}")  # fmt: skip
        if not bool((a_sc > 0).all()) or not bool(torch.isfinite(a_sc).all()):
            raise ValueError("static activation scales must be positive and finite")
        if not bool((a_zp == torch.round(a_zp)).all()):
            raise ValueError("static activation zero points must be integers (a learned fractional zero point "
                             "has no integer form)")  # fmt: skip
        b = self.bits
        lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if self.symmetric else (0, 2**b - 1)
        if self.symmetric and bool((a_zp != 0).any()):
            raise ValueError("a symmetric static activation quantizer must have zero points 0")
        if bool((a_zp < min(lo, 0)).any()) or bool((a_zp > hi).any()):
            raise ValueError(f"static activation zero points outside [0, {hi}] for {b}-bit activations")
        self.scale, self.zero_point = a_sc, a_zp


@dataclass
class LayerExtras:
    """The rest of a layer: ``bias [N]``, smoothing vector ``smooth_scale`` (the input is ``x / s``), low-rank side
    branch ``up(down(·))`` (``down [r, K]``, ``up [N, r]``; on x̂ when ``side_on_quantized``, else on ``x / s``; rows
    scaled by a periodic ``row_gain [P]``), the float ``dtype``, and ``conv`` — ``{kernel_size, stride, padding,
    dilation, in_channels}`` for a :class:`~vqcore.convert.QConv2dInt` (the codes are then the conv weight flattened
    to ``[O, C·kh·kw]``)."""

    bias: torch.Tensor | None = None
    smooth_scale: torch.Tensor | None = None
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    side_on_quantized: bool = False
    row_gain: torch.Tensor | None = None
    dtype: torch.dtype = torch.float32
    conv: dict | None = None

    def check(self, n: int, k: int) -> None:
        """The side branch's shapes against a weight ``[n, k]``."""
        if self.down is not None and (self.up is None or self.down.shape[1] != k
                                      or self.up.shape != (n, self.down.shape[0])):  # fmt: skip
            raise ValueError(f"side branch needs down [r, {k}] and up [{n}, r]")

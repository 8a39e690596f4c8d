"""The zoo's architectures: real diffusers classes wrapped with a class condition, and two small evaluators.

* :class:`MovingDigitsDiT` — a class-conditional video DiT: diffusers' ``LatteTransformer3DModel`` (Latte, Ma et al.
  2024: alternating spatial and temporal transformer blocks, adaLN-single timestep conditioning, cross-attention to a
  caption sequence) in pixel space. The class condition enters through the caption input: a learned embedding table
  maps each digit label to one "caption token" of ``caption_channels`` dims, which Latte's own ``caption_projection``
  (PixArt-α text projection) lifts to the model width and the spatial blocks cross-attend to. Index ``num_classes``
  is the null token used for classifier-free guidance. The spatial/temporal split matches the STDiT layout that
  ViDiT-Q / Q-VDiT quantize (spatial ``attn1``, cross ``attn2``, temporal blocks, MLP ``ff``).
* :class:`DigitsUNet` — a class-conditional image diffusion model: diffusers' ``UNet2DModel`` with its own class
  embedding table (``num_class_embeds = num_classes + 1``, the extra index again the null class).
* :class:`DigitClassifier`, :class:`VideoClassifier` — small CNNs (2-D and 3-D) trained on real digits / real
  moving-digit videos; their penultimate features give the FID-like / FVD-like Fréchet distances. They are NOT
  Inception-v3 / I3D networks and their numbers are not comparable with published FID/FVD values.

All diffusion models predict ε (DDPM training), data live in [-1, 1]; classifiers take data in [0, 1].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "VideoDiTConfig", "MovingDigitsDiT", "DigitsUNetConfig", "DigitsUNet", "ClassifierConfig", "DigitClassifier",
    "VideoClassifier",
]


def _check_positive_ints(obj, names):
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_schedule(obj):
    if obj.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        raise ValueError(f"beta_schedule must be linear, scaled_linear or squaredcos_cap_v2, got {obj.beta_schedule!r}")


@dataclass
class VideoDiTConfig:
    """Geometry and width of :class:`MovingDigitsDiT` (defaults = the shipped ``moving-digits-dit``)."""

    num_frames: int = 8
    size: int = 16
    channels: int = 1
    patch_size: int = 2
    num_heads: int = 4
    head_dim: int = 32
    num_layers: int = 4
    caption_channels: int = 64
    num_classes: int = 10
    num_digits: int = 1
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self):
        _check_positive_ints(self, ["num_frames", "size", "channels", "patch_size", "num_heads", "head_dim",
                                    "num_layers", "caption_channels", "num_classes", "num_digits",
                                    "num_train_timesteps"])
        if self.size % self.patch_size:
            raise ValueError(f"size ({self.size}) must be divisible by patch_size ({self.patch_size})")
        _check_schedule(self)


class _LabelMixin:
    num_classes: int

    def _check_labels(self, labels: torch.Tensor, num_digits: int = 1) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
            raise TypeError("labels must be an integer torch tensor")
        if labels.min() < 0 or labels.max() > self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}] ({self.num_classes} = null class)")
        return labels.long()


class MovingDigitsDiT(nn.Module, _LabelMixin):
    """Class-conditional Latte video DiT; ``forward(x [B,C,F,H,W], t [B], labels [B] or [B,num_digits]) -> ε``."""

    def __init__(self, config: VideoDiTConfig | None = None):
        super().__init__()
        from diffusers import LatteTransformer3DModel

        self.config = config or VideoDiTConfig()
        c = self.config
        self.num_classes = c.num_classes
        self.transformer = LatteTransformer3DModel(
            num_attention_heads=c.num_heads, attention_head_dim=c.head_dim, in_channels=c.channels,
            out_channels=c.channels, num_layers=c.num_layers, cross_attention_dim=c.num_heads * c.head_dim,
            attention_bias=True, sample_size=c.size, patch_size=c.patch_size, activation_fn="gelu-approximate",
            num_embeds_ada_norm=c.num_train_timesteps, norm_type="ada_norm_single", norm_elementwise_affine=False,
            norm_eps=1e-6, caption_channels=c.caption_channels, video_length=c.num_frames)
        self.class_embedding = nn.Embedding(c.num_classes + 1, c.caption_channels)
        nn.init.normal_(self.class_embedding.weight, std=1.0)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.channels, c.num_frames, c.size, c.size)

    def condition(self, labels: torch.Tensor) -> torch.Tensor:
        """Caption tokens ``[B, num_digits, caption_channels]`` for the labels (null class = ``num_classes``)."""
        labels = self._check_labels(labels)
        if labels.ndim == 1:
            labels = labels[:, None]
        return self.class_embedding(labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.transformer(x, timestep=t, encoder_hidden_states=self.condition(labels), return_dict=False)[0]


@dataclass
class DigitsUNetConfig:
    """Geometry and width of :class:`DigitsUNet` (defaults = the shipped ``digits-unet``)."""

    size: int = 16
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_levels: tuple[bool, ...] = (False, True, False)
    attention_head_dim: int = 32
    num_classes: int = 10
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self):
        self.block_out_channels = tuple(int(b) for b in self.block_out_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        _check_positive_ints(self, ["size", "channels", "layers_per_block", "attention_head_dim", "num_classes",
                                    "num_train_timesteps"])
        if len(self.block_out_channels) != len(self.attention_levels) or not self.block_out_channels:
            raise ValueError("block_out_channels and attention_levels must be non-empty and of the same length")
        if self.size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError(f"size ({self.size}) must be divisible by 2**(levels-1)")
        _check_schedule(self)


class DigitsUNet(nn.Module, _LabelMixin):
    """Class-conditional diffusers ``UNet2DModel``; ``forward(x [B,C,H,W], t [B], labels [B]) -> ε``."""

    def __init__(self, config: DigitsUNetConfig | None = None):
        super().__init__()
        from diffusers import UNet2DModel

        self.config = config or DigitsUNetConfig()
        c = self.config
        self.num_classes = c.num_classes
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in c.attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c.attention_levels))
        self.unet = UNet2DModel(
            sample_size=c.size, in_channels=c.channels, out_channels=c.channels, down_block_types=down,
            up_block_types=up, block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
            norm_num_groups=8, attention_head_dim=c.attention_head_dim, num_class_embeds=c.num_classes + 1)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.channels, c.size, c.size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = self._check_labels(labels)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.unet(x, t, class_labels=labels, return_dict=False)[0]


@dataclass
class ClassifierConfig:
    """A small CNN evaluator: ``video=False`` → 2-D on ``[B,1,size,size]``; ``True`` → 3-D on ``[B,1,F,size,size]``."""

    video: bool = False
    size: int = 16
    num_frames: int = 8
    widths: tuple[int, ...] = field(default=(32, 64, 128))
    feature_dim: int = 64
    num_classes: int = 10

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        _check_positive_ints(self, ["size", "num_frames", "feature_dim", "num_classes"])
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths!r}")


class _CNNClassifier(nn.Module):
    expects_video: bool = False

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig(video=self.expects_video)
        c = self.config
        if c.video != self.expects_video:
            raise ValueError(f"{type(self).__name__} needs ClassifierConfig(video={self.expects_video})")
        conv = nn.Conv3d if c.video else nn.Conv2d
        layers, cin = [], 1
        for i, w in enumerate(c.widths):
            stride = 1 if i == 0 else ((1, 2, 2) if c.video and i == 1 else 2)
            layers += [conv(cin, w, 3, stride=stride, padding=1), nn.GroupNorm(8, w), nn.SiLU()]
            cin = w
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1) if c.video else nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(cin, c.feature_dim), nn.SiLU())
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        want = 5 if self.config.video else 4
        if not isinstance(x, torch.Tensor) or x.ndim != want or x.shape[1] != 1:
            raise ValueError(f"x must be a [B,1,{'F,' if self.config.video else ''}H,W] tensor in [0, 1]")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, feature_dim]`` (what the Fréchet distances are computed on)."""
        return self.proj(self.pool(self.body(self._check(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DigitClassifier(_CNNClassifier):
    """2-D CNN digit classifier on ``[B,1,H,W]`` images in [0, 1]."""

    expects_video = False


class VideoClassifier(_CNNClassifier):
    """3-D CNN classifier of the (single) digit in ``[B,1,F,H,W]`` moving-digit videos in [0, 1]."""

    expects_video = True


def config_to_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}

"""Paired low-light / normal-light images: LOL-style folders and an embedded synthetic default.

Folder formats read by :class:`PairedFolderDataset` (``low``-side and ``high``-side sub-folders with images paired by
file name; sub-folder names are matched case-insensitively: ``low``/``input``/``lq`` and
``high``/``normal``/``target``/``gt``):

* WalMaFa / BasicSR style: ``<root>/{train,test}/{low,high}/*.png`` (or ``input``/``target``);
* LOL-v1 as released: ``<root>/{our485,eval15}/{low,high}/*.png`` (485 train / 15 test pairs, 600×400);
* LOL-v2 as released: ``<root>/{Real_captured,Synthetic}/{Train,Test}/{Low,Normal}/*.png``; the real subset names
  its files ``lowXXXXX.png`` / ``normalXXXXX.png``, so a leading ``low``/``normal``/``high`` in the stem is ignored
  when pairing. Pass ``subset="real"`` or ``"synthetic"`` for a LOL-v2 root.

The embedded default, :class:`SyntheticLowLightDataset`, needs no download: it darkens the natural photos shipped by
scikit-image / scikit-learn (:func:`commons.data.sample_photos`) with :func:`degrade_low_light`, a seeded,
physically-motivated camera model (see its docstring). Photos are split by photo, never by crop, between train and
test.

All datasets return ``(low, high)`` float32 ``[3, H, W]`` tensors in [0, 1]. With ``patch_size`` they return random
crops (reflect-padded when the image is smaller) and, with ``augment``, one of the 8 flip/rotation variants (the
dihedral group of the square, as WalMaFa's training loader). Randomness is drawn from
``numpy.random.default_rng((seed, epoch, index))``: deterministic given the seed, different each epoch
(:meth:`set_epoch`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .folders import IMAGE_EXTENSIONS, read_image

__all__ = [
    "PairedFolderDataset",
    "SyntheticLowLightDataset",
    "degrade_low_light",
    "degrade_low_light_batch",
    "SyntheticLowLightCrops",
    "augment_pair",
    "random_crop_pair",
    "find_lol_split",
]

_LOW_NAMES = ("low", "input", "lq")
_HIGH_NAMES = ("high", "normal", "target", "gt")
_SPLIT_NAMES = {"train": ("train", "our485", "training"), "test": ("test", "eval15", "val", "eval", "testing")}
_SUBSETS = {"real": "real_captured", "synthetic": "synthetic"}


def augment_pair(low: torch.Tensor, high: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one of the 8 flip/rot90 variants (``mode`` in 0..7; 0 = identity) to both images."""
    if not 0 <= int(mode) < 8:
        raise ValueError(f"mode must be in 0..7, got {mode!r}")
    mode = int(mode)

    def f(t: torch.Tensor) -> torch.Tensor:
        if mode & 4:
            t = t.flip(-1)
        return torch.rot90(t, mode % 4, dims=(-2, -1))

    return f(low), f(high)


def random_crop_pair(low: torch.Tensor, high: torch.Tensor, size: int,
                     rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size×size`` crop of both images; reflect-pads (right/bottom) when an image is smaller."""
    h, w = low.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        low = F.pad(low[None], (0, pw, 0, ph), mode=mode)[0]
        high = F.pad(high[None], (0, pw, 0, ph), mode=mode)[0]
        h, w = low.shape[-2:]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return low[:, y:y + size, x:x + size], high[:, y:y + size, x:x + size]


class _PairedBase(Dataset):
    def __init__(self, patch_size: int | None, augment: bool, seed: int):
        if patch_size is not None and (not isinstance(patch_size, int) or patch_size < 1):
            raise ValueError(f"patch_size must be a positive int or None, got {patch_size!r}")
        self.patch_size, self.augment, self.seed, self.epoch = patch_size, bool(augment), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Change the crops/augmentations drawn (deterministically) for the next pass."""
        self.epoch = int(epoch)

    def _pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        index = index % len(self)
        low, high = self._pair(index)
        if self.patch_size is None and not self.augment:
            return low, high
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if self.patch_size is not None:
            low, high = random_crop_pair(low, high, self.patch_size, rng)
        if self.augment:
            low, high = augment_pair(low, high, int(rng.integers(0, 8)))
        return low.contiguous(), high.contiguous()


def _pick_child(parent: Path, names: tuple[str, ...]) -> Path | None:
    children = {c.name.lower(): c for c in parent.iterdir() if c.is_dir()}
    for name in names:
        if name in children:
            return children[name]
    return None


def find_lol_split(root: str | os.PathLike, split: str | None = None, subset: str | None = None) -> tuple[Path, Path]:
    """Locate the ``(low_dir, high_dir)`` pair for a LOL-style root (see the module docstring for layouts)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be an existing directory, got {str(root)!r}")
    base = root
    if subset is not None:
        if subset not in _SUBSETS:
            raise ValueError(f"subset must be one of {sorted(_SUBSETS)} or None, got {subset!r}")
        found = _pick_child(base, (_SUBSETS[subset],))
        if found is None:
            raise ValueError(f"{str(root)!r} has no {_SUBSETS[subset]!r} folder (LOL-v2 layout)")
        base = found
    low, high = _pick_child(base, _LOW_NAMES), _pick_child(base, _HIGH_NAMES)
    if low is None or high is None:
        if split is None:
            raise ValueError(f"{str(base)!r} has no low/high folders; pass split='train' or 'test'")
        if split not in _SPLIT_NAMES:
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        split_dir = _pick_child(base, _SPLIT_NAMES[split])
        if split_dir is None:
            raise ValueError(f"{str(base)!r} has no {split} folder (looked for {_SPLIT_NAMES[split]})")
        low, high = _pick_child(split_dir, _LOW_NAMES), _pick_child(split_dir, _HIGH_NAMES)
        if low is None or high is None:
            raise ValueError(f"{str(split_dir)!r} must contain a low-light folder {_LOW_NAMES} and a normal-light "
                             f"folder {_HIGH_NAMES}")
    return low, high


def _pair_key(path: Path) -> str:
    return re.sub(r"^(low|normal|high)[_-]?", "", path.stem.lower())


class PairedFolderDataset(_PairedBase):
    """Paired low/normal-light images from a LOL-style folder tree.

    Args:
        root: a folder holding ``low``/``high`` sub-folders, or a dataset root with split (and LOL-v2 subset) folders.
        split: ``"train"``, ``"test"`` or None (root already holds the pair folders).
        subset: for LOL-v2 roots, ``"real"`` or ``"synthetic"``.
        patch_size, augment, seed: random crops / 8-way flip-rotate augmentation (training), see module docstring.
        max_items: keep only the first ``max_items`` pairs (sorted by name).
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, subset: str | None = None,
                 patch_size: int | None = None, augment: bool = False, seed: int = 0, max_items: int | None = None):
        super().__init__(patch_size, augment, seed)
        self.low_dir, self.high_dir = find_lol_split(root, split, subset)

        def listing(d: Path) -> dict[str, Path]:
            return {_pair_key(p): p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}

        lows, highs = listing(self.low_dir), listing(self.high_dir)
        if not lows:
            raise ValueError(f"no images found in {str(self.low_dir)!r}")
        missing = sorted(set(lows) ^ set(highs))
        if missing:
            raise ValueError(f"{len(missing)} images have no partner between {str(self.low_dir)!r} and "
                             f"{str(self.high_dir)!r} (e.g. {missing[:3]})")
        keys = sorted(lows)
        if max_items is not None:
            keys = keys[:max_items]
        self.pairs = [(lows[k], highs[k]) for k in keys]
        self.names = [lows[k].name for k in keys]

    def __len__(self) -> int:
        return len(self.pairs)

    def _pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        lp, hp = self.pairs[index]
        low, high = read_image(lp), read_image(hp)
        if low.shape != high.shape:
            raise ValueError(f"pair {lp.name} has different sizes: {tuple(low.shape)} vs {tuple(high.shape)}")
        return low, high


def degrade_low_light(image: np.ndarray | torch.Tensor, rng: np.random.Generator, exposure: tuple = (0.03, 0.2),
                      gamma: tuple = (2.0, 2.6), shot_noise: tuple = (2e-4, 3e-3), read_noise: tuple = (1e-3, 1e-2),
                      colour_shift: float = 0.15) -> torch.Tensor:
    """Turn a well-exposed sRGB image into a plausible low-light capture of the same scene.

    A simple camera model (the usual pipeline of synthetic low-light generators, e.g. Lv et al. 2021 "Attention
    guided low-light image enhancement", and the Poisson–Gaussian noise of Foi et al. 2008):

    1. **Linearise**: ``x_lin = x ** g`` with a random display gamma ``g ~ U(gamma)`` (inverse camera response).
    2. **Exposure**: ``x_lin *= k`` with ``k ~ logU(exposure)`` (fewer photons: shorter exposure / less light).
    3. **Colour shift**: per-channel gains ``c ~ U(1 ± colour_shift)``, normalised to mean 1 (white-balance error of a
       dim, tinted illuminant).
    4. **Shot + read noise** (Poisson–Gaussian, heteroscedastic Gaussian approximation): ``y = x_lin + n`` with
       ``n ~ N(0, a·x_lin + b²)``, ``a ~ logU(shot_noise)``, ``b ~ logU(read_noise)``, clipped at 0.
    5. **Back to display**: ``y ** (1/g)``, clipped to [0, 1] and quantised to 8 bits.

    Args:
        image: ``uint8 [H, W, 3]`` array or float ``[3, H, W]`` tensor in [0, 1].
        rng: the numpy generator every random draw comes from.
    Returns: float32 ``[3, H, W]`` in [0, 1].
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must be [H, W, 3], got {image.shape}")
        x = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor must be [3, H, W], got {tuple(image.shape)}")
        x = image.detach().cpu().double().permute(1, 2, 0).numpy()
    else:
        raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")

    def log_uniform(lo_hi: tuple) -> float:
        lo, hi = lo_hi
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    g = float(rng.uniform(*gamma))
    k = log_uniform(exposure)
    gains = rng.uniform(1 - colour_shift, 1 + colour_shift, size=3)
    gains = gains / gains.mean()
    a, b = log_uniform(shot_noise), log_uniform(read_noise)
    lin = np.clip(x, 0, 1) ** g * k * gains
    noisy = np.clip(lin + rng.standard_normal(lin.shape) * np.sqrt(a * lin + b * b), 0, None)
    out = np.round(np.clip(noisy ** (1 / g), 0, 1) * 255) / 255
    return torch.from_numpy(out.astype(np.float32)).permute(2, 0, 1).contiguous()


def _log_uniform_t(lo_hi: tuple, n: int, generator: torch.Generator | None) -> torch.Tensor:
    lo, hi = (float(v) for v in lo_hi)
    if not 0 < lo <= hi:
        raise ValueError(f"a log-uniform range must satisfy 0 < lo <= hi, got {lo_hi!r}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))


def degrade_low_light_batch(images: torch.Tensor, generator: torch.Generator | None = None,
                            noise_generator: torch.Generator | None = None, exposure: tuple = (0.03, 0.2),
                            gamma: tuple = (2.0, 2.6), shot_noise: tuple = (2e-4, 3e-3),
                            read_noise: tuple = (1e-3, 1e-2), colour_shift: float = 0.15) -> torch.Tensor:
    """:func:`degrade_low_light` for a batch ``[B, 3, H, W]`` in [0, 1], vectorised on the images' device.

    The same five-step camera model with the same parameter ranges; each image draws its own gamma, exposure,
    white-balance gains and noise levels (so one batch spans several exposure and noise levels). The per-image
    parameters come from ``generator`` (a CPU generator; None = the global one) and the noise from
    ``noise_generator`` (on the images' device). Computed in float32 (the numpy version uses float64; after 8-bit
    quantisation the two differ by at most one grey level where a value sits on a rounding boundary).
    Returns float32 ``[B, 3, H, W]`` in [0, 1], quantised to multiples of 1/255.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if not 0 <= colour_shift < 1:
        raise ValueError(f"colour_shift must be in [0, 1), got {colour_shift}")
    n, dev = images.shape[0], images.device
    g = gamma[0] + torch.rand(n, generator=generator, dtype=torch.float64) * (gamma[1] - gamma[0])
    k = _log_uniform_t(exposure, n, generator)
    gains = 1 - colour_shift + torch.rand(n, 3, generator=generator, dtype=torch.float64) * (2 * colour_shift)
    gains = gains / gains.mean(dim=1, keepdim=True)
    a, b = _log_uniform_t(shot_noise, n, generator), _log_uniform_t(read_noise, n, generator)
    g, k, a, b = (t.float().to(dev).view(n, 1, 1, 1) for t in (g, k, a, b))
    gains = gains.float().to(dev).view(n, 3, 1, 1)
    lin = images.float().clamp(0, 1) ** g * k * gains
    noise = torch.randn(lin.shape, generator=noise_generator, device=dev, dtype=torch.float32)
    noisy = (lin + noise * torch.sqrt(a * lin + b * b)).clamp_min(0)
    return torch.round((noisy ** (1 / g)).clamp(0, 1) * 255) / 255


class SyntheticLowLightCrops:
    """Endless random training crops of the embedded photos, darkened on the fly (the bigger, more varied version
    of :class:`SyntheticLowLightDataset` for training).

    Each photo of the split (same photo split as :class:`SyntheticLowLightDataset`: ``test_photos`` held out) is
    resized so its short side is ``min(short, max_short)`` and kept at the relative ``scales`` (each at least
    ``crop`` on its short side), as tensors on ``device``. :meth:`batch` draws, per sample, a photo (uniformly), a
    scale, a ``crop×crop`` position and one of the 8 flip/rotations from ``generator``, then darkens the batch with
    :func:`degrade_low_light_batch` (fresh exposure, gamma, colour and noise per sample). So every step sees new
    crops and new degradations of every training photo. Deterministic given the two generators.
    """

    def __init__(self, split: str = "train", crop: int = 128, scales: tuple[float, ...] = (1.0, 0.75, 0.5),
                 max_short: int = 512, device: str | torch.device = "cpu",
                 test_photos: tuple[str, ...] = ("coffee", "flower"), **degrade_kwargs):
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if not isinstance(crop, int) or crop < 16:
            raise ValueError(f"crop must be an int >= 16, got {crop!r}")
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive, got {scales!r}")
        from .samples import sample_photos

        photos = sample_photos()
        names = sorted(photos)
        held = [n for n in names if n in test_photos] or names[-1:]
        self.names = names if split == "all" else [n for n in names if (n in held) == (split == "test")]
        self.crop, self.device, self.degrade_kwargs = crop, torch.device(device), degrade_kwargs
        self.images: list[torch.Tensor] = []  # one entry per (photo, scale)
        self.sources: list[tuple[str, float]] = []
        self.by_photo: list[list[int]] = []
        for name in self.names:
            t = torch.from_numpy(photos[name]).permute(2, 0, 1).float().div(255)[None]
            short = min(t.shape[-2:])
            idx = []
            for s in scales:
                target = min(short, max_short) * s
                if target < crop:
                    continue
                size = (max(crop, round(t.shape[-2] * target / short)), max(crop, round(t.shape[-1] * target / short)))
                img = F.interpolate(t, size=size, mode="area")[0].clamp(0, 1)
                idx.append(len(self.images))
                self.images.append(img.to(self.device))
                self.sources.append((name, float(s)))
            if not idx:  # a photo smaller than the crop: keep it once, crops are reflect-padded
                idx.append(len(self.images))
                self.images.append(t[0].to(self.device))
                self.sources.append((name, 1.0))
            self.by_photo.append(idx)

    def __repr__(self) -> str:
        return (f"SyntheticLowLightCrops(photos={self.names}, crop={self.crop}, "
                f"images={[tuple(i.shape[-2:]) for i in self.images]})")

    def batch(self, batch_size: int, generator: torch.Generator | None = None,
              noise_generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)``, each ``[batch_size, 3, crop, crop]`` float32 on the device."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        highs = []
        for _ in range(batch_size):
            photo = self.by_photo[int(torch.randint(len(self.by_photo), (1,), generator=generator))]
            img = self.images[photo[int(torch.randint(len(photo), (1,), generator=generator))]]
            h, w = img.shape[-2:]
            if h < self.crop or w < self.crop:
                img = F.pad(img[None], (0, max(0, self.crop - w), 0, max(0, self.crop - h)), mode="replicate")[0]
                h, w = img.shape[-2:]
            y = int(torch.randint(h - self.crop + 1, (1,), generator=generator))
            x = int(torch.randint(w - self.crop + 1, (1,), generator=generator))
            mode = int(torch.randint(8, (1,), generator=generator))
            patch = img[:, y:y + self.crop, x:x + self.crop]
            highs.append(augment_pair(patch, patch, mode)[0])
        high = torch.stack(highs)
        return degrade_low_light_batch(high, generator, noise_generator, **self.degrade_kwargs), high


def _resize_center(img: np.ndarray, short: int, max_aspect: float = 1.5, multiple: int = 16) -> torch.Tensor:
    t = torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]
    h, w = t.shape[-2:]
    s = short / min(h, w)
    nh, nw = max(short, round(h * s)), max(short, round(w * s))
    t = F.interpolate(t, size=(nh, nw), mode="area")[0]
    th = min(nh, int(short * max_aspect)) // multiple * multiple
    tw = min(nw, int(short * max_aspect)) // multiple * multiple
    y, x = (nh - th) // 2, (nw - tw) // 2
    return t[:, y:y + th, x:x + tw].clamp(0, 1).contiguous()


class SyntheticLowLightDataset(_PairedBase):
    """Embedded default: synthetic low-light pairs from scikit-image / scikit-learn sample photos.

    Each photo from :func:`commons.data.sample_photos` is resized (short side ``size``, aspect capped at 1.5, sides
    multiples of 16) to give the normal-light target; ``variants`` low-light versions per photo are made with
    :func:`degrade_low_light` from ``numpy.random.default_rng((seed, photo_index, variant))``. The split is by
    photo: ``test_photos`` (default: ``coffee`` and ``flower``, when available) are held out for ``split="test"``.

    Provenance: photos from scikit-image ``skimage.data`` and scikit-learn ``load_sample_images`` (public-domain /
    CC-licensed images shipped with those packages); degradation documented in :func:`degrade_low_light`.
    """

    def __init__(self, split: str = "train", size: int = 128, variants: int = 4, seed: int = 0,
                 patch_size: int | None = None, augment: bool = False,
                 test_photos: tuple[str, ...] = ("coffee", "flower")):
        super().__init__(patch_size, augment, seed)
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if not isinstance(size, int) or size < 16:
            raise ValueError(f"size must be an int >= 16, got {size!r}")
        if not isinstance(variants, int) or variants < 1:
            raise ValueError(f"variants must be a positive int, got {variants!r}")
        from .samples import sample_photos

        photos = sample_photos()
        names = sorted(photos)
        held = [n for n in names if n in test_photos] or names[-1:]
        chosen = names if split == "all" else [n for n in names if (n in held) == (split == "test")]
        self.names: list[str] = []
        self.lows: list[torch.Tensor] = []
        self.highs: list[torch.Tensor] = []
        for name in chosen:
            high = _resize_center(photos[name], size)
            for v in range(variants):
                rng = np.random.default_rng((int(seed), names.index(name), v))
                self.lows.append(degrade_low_light(high, rng))
                self.highs.append(high)
                self.names.append(f"{name}_{v}")

    def __len__(self) -> int:
        return len(self.lows)

    def _pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lows[index], self.highs[index]

"""Tensor-level train augmentation for the rehearsal benchmarks (batched, runs on the data's device, seeded).

mammoth's Split CIFAR-10/100 and Split Tiny-ImageNet train transform is ``RandomCrop(size, padding=4)`` +
``RandomHorizontalFlip()`` + ``Normalize`` on PIL images; the rehearsal methods apply it to the current batch and to
every replayed buffer sample, while the buffer stores the *non-augmented* image (``not_aug_inputs``). Here the
images are already normalised tensors, so the crop pads with the normalised value of a black pixel
(``-mean/std`` per channel — what torchvision's zero padding of the PIL image becomes after ``Normalize``).

CLFD replays encoded maps and uses its own map transform (notes §1.5): ``RandomCrop(H/2, padding=2)`` + flip, with
the padded pixels set to the encoder output of a black image. The official code finds padded pixels with
``buf == 0`` and a fill tensor of fixed batch size (pitfalls noted in §1.8); here the crop writes the fill value
into an explicit padding region, so genuine zeros are untouched and any batch size works.
"""

from __future__ import annotations

import torch


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, fill: float | torch.Tensor = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop of ``x`` (N, C, H, W) padded by ``padding`` pixels of ``fill`` (a scalar or a (C,)
    tensor), then a horizontal flip with probability 1/2 when ``flip``. Output has the input's shape."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    n, c, h, w = x.shape
    out = x
    if padding and n:
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
        if fill_t.numel() not in (1, c):
            raise ValueError(f"fill must be a scalar or have {c} values (one per channel), got {fill_t.numel()}")
        p = padding
        xp = fill_t.reshape(1, -1, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
        xp[:, :, p:p + h, p:p + w] = x
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = ox[:, None] + torch.arange(w, device=x.device)  # (n, w)
        nidx = torch.arange(n, device=x.device)[:, None, None]
        out = xp[nidx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()  # (n,h,w,c)→NCHW
    if flip and n:
        f = torch.rand(n, generator=generator, device=x.device) < 0.5
        out = torch.where(f[:, None, None, None], out.flip(-1), out)
    return out


class Augment:
    """Seeded batch augmentation ``aug(x, fill=None)``: random crop with ``padding`` and optional flip.

    ``fill`` (scalar or per-channel values) is the padding value; a call may override it (CLFD passes the encoder's
    black-image output, which changes while the encoder trains). The generator lives on the data's device and is
    created on first use from ``seed``; :meth:`state_dict` / :meth:`load_state_dict` make resumed runs repeat the
    same draws.
    """

    def __init__(self, padding: int = 4, flip: bool = True, fill: float | torch.Tensor = 0.0, seed: int = 0):
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")
        self.padding, self.flip, self.fill, self.seed = padding, bool(flip), fill, int(seed)
        self._gen: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending_state is not None:
                self._gen.set_state(self._pending_state)
                self._pending_state = None
        return self._gen

    def __call__(self, x: torch.Tensor, fill: float | torch.Tensor | None = None) -> torch.Tensor:
        return random_crop_flip(x, self.padding, self.flip, self.fill if fill is None else fill,
                                self._generator(x.device))

    def state_dict(self) -> dict:
        return {"gen": self._gen.get_state() if self._gen is not None else None}

    def load_state_dict(self, s: dict) -> None:
        self._pending_state = s.get("gen")
        self._gen = None

    def __repr__(self) -> str:
        return f"Augment(padding={self.padding}, flip={self.flip})"

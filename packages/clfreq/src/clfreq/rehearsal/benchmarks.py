"""Split Fractals: the many-class embedded benchmark (no download) for the rehearsal methods.

``commons.data.fractal_classes`` draws 100 procedural shape classes (one random IFS each) at 32×32; here they become
10 tasks × 10 classes in label order (the mammoth convention), normalised with the training mean/std per channel,
no train augmentation by default (a flip keeps an IFS's class, but the instances are already flipped, placed and
scaled at random). With 100 classes a buffer of 50 holds half an image per class, so — unlike Split Digits (10
classes) — forgetting and buffer size decide the result.
"""

from __future__ import annotations

from functools import lru_cache

from .core import Benchmark, _split

__all__ = ["split_fractals"]


@lru_cache(maxsize=2)
def _fractal_tensors(num_classes: int, train_per_class: int, test_per_class: int, size: int, data_seed: int):
    from commons.data import fractal_classes

    kw = dict(num_classes=num_classes, size=size, seed=data_seed, normalize=False)
    train = fractal_classes(per_class=train_per_class, train=True, **kw)
    test = fractal_classes(per_class=test_per_class, train=False, **kw)
    return train.images_float(), train.targets, test.images_float(), test.targets


def split_fractals(num_classes: int = 100, classes_per_task: int = 10, train_per_class: int = 100,
                   test_per_class: int = 20, size: int = 32, seed: int | None = None, data_seed: int = 0
                   ) -> Benchmark:
    """Split Fractals: ``num_classes`` fractal classes in tasks of ``classes_per_task`` (default 10 × 10).

    ``seed`` permutes the class order (``None``: label order); ``data_seed`` selects the classes and images (fixed
    by default so every run sees the same data). Rendering 12 000 images takes about 15 s on one core (cached).
    """
    if size % 2:
        raise ValueError(f"size must be even (the DWT halves it), got {size}")
    xtr, ytr, xte, yte = _fractal_tensors(num_classes, train_per_class, test_per_class, size, data_seed)
    mean, std = xtr.mean((0, 2, 3)), xtr.std((0, 2, 3))
    m, s = mean[:, None, None], std[:, None, None]
    stats = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return _split("split-fractals", (xtr - m) / s, ytr, (xte - m) / s, yte, classes_per_task, seed, stats=stats)

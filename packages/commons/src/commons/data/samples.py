"""Real photos and a real stereo pair that ship inside scikit-image and scikit-learn (no download)."""

from __future__ import annotations

import numpy as np

__all__ = ["sample_photos", "stereo_pair"]

# scikit-image's bundled natural RGB photos (data.<name>()) that need no download (pooch) step.
_SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry")


def sample_photos() -> dict[str, np.ndarray]:
    """Natural RGB photos as ``uint8 [H, W, 3]`` arrays, keyed by name.

    Sources: scikit-image ``skimage.data`` (astronaut, chelsea, coffee, rocket, retina, immunohistochemistry) and
    scikit-learn ``load_sample_images`` (china, flower). Entries whose package is missing are left out; if neither
    package is installed an ImportError says what to install.
    """
    photos: dict[str, np.ndarray] = {}
    try:
        from skimage import data as skdata
    except ImportError:
        skdata = None
    if skdata is not None:
        for name in _SKIMAGE_PHOTOS:
            try:
                img = getattr(skdata, name)()
            except Exception:  # noqa: BLE001 - a photo that needs a download is simply not offered
                continue
            if img.ndim == 3 and img.shape[2] == 3:
                photos[name] = np.ascontiguousarray(img.astype(np.uint8))
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        load_sample_images = None
    if load_sample_images is not None:
        bunch = load_sample_images()
        for fname, img in zip(bunch.filenames, bunch.images):
            photos[fname.rsplit("/", 1)[-1].rsplit(".", 1)[0]] = np.ascontiguousarray(img.astype(np.uint8))
    if not photos:
        raise ImportError("sample photos need scikit-image or scikit-learn: pip install 'paperlab-commons[data]'")
    return photos


def stereo_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Middlebury "motorcycle" pair shipped by scikit-image: ``(left, right, disparity)``.

    ``left``/``right`` are ``uint8 [H, W, 3]``; ``disparity`` is float32 ``[H, W]`` in pixels (left image
    coordinates; non-finite where unknown), from ``skimage.data.stereo_motorcycle``.
    """
    try:
        from skimage import data as skdata
    except ImportError:
        raise ImportError("the stereo pair needs scikit-image: pip install 'paperlab-commons[data]'") from None
    left, right, disp = skdata.stereo_motorcycle()
    return left.astype(np.uint8), right.astype(np.uint8), disp.astype(np.float32)

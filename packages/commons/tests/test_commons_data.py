import numpy as np
import pytest
import torch

from commons.data import (
    DigitsDataset,
    ImageFolderDataset,
    cifar,
    load_digits_arrays,
    sample_photos,
    split_by_classes,
    stereo_pair,
    stratified_split,
)


def test_digits_arrays_and_dataset():
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert sorted(np.unique(labels).tolist()) == list(range(10))
    ds = DigitsDataset(image_size=32, channels=3, normalize=True)
    x, y = ds[5]
    assert x.shape == (3, 32, 32) and x.min() >= -1.0 and x.max() <= 1.0
    assert y == labels[5]
    assert torch.equal(x[0], x[1])  # grey replicated


def test_digits_bad_inputs():
    with pytest.raises(ValueError, match="channels"):
        DigitsDataset(channels=2)
    with pytest.raises(ValueError, match="image_size"):
        DigitsDataset(image_size=2)
    with pytest.raises(ValueError, match="indices"):
        DigitsDataset(indices=[5000])


def test_stratified_split_keeps_class_proportions_and_is_deterministic():
    _, labels = load_digits_arrays()
    tr, te = stratified_split(labels, 0.25, seed=3)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(labels)
    for c in range(10):
        frac = np.mean(labels[te] == c) / np.mean(labels == c)
        assert 0.9 < frac < 1.1
    tr2, te2 = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(te, te2)
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(labels, 1.5)


def test_split_by_classes():
    targets = np.repeat(np.arange(10), 5)
    tasks = split_by_classes(targets, 2, seed=None)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert all(len(t.indices) == 10 for t in tasks)
    seeded = split_by_classes(targets, 5, seed=1)
    assert sorted(c for t in seeded for c in t.classes) == list(range(10))
    assert seeded[0].classes == split_by_classes(targets, 5, seed=1)[0].classes
    with pytest.raises(ValueError, match="cannot be split"):
        split_by_classes(targets, 3)
    with pytest.raises(ValueError, match="permutation"):
        split_by_classes(targets, 2, class_order=[0, 1])


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, color in (("cat", 255), ("dog", 0)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((6, 5, 3), color, np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    x, y = ds[0]
    assert x.shape == (3, 6, 5) and y == 0 and torch.allclose(x, torch.ones_like(x))
    with pytest.raises(ValueError, match="existing directory"):
        ImageFolderDataset(tmp_path / "nope")


def test_cifar_offline_error_is_actionable(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        cifar("cifar10", tmp_path)
    with pytest.raises(ValueError, match="cifar10"):
        cifar("mnist", tmp_path)


def test_sample_photos_and_stereo_pair():
    photos = sample_photos()
    assert {"astronaut", "china"} <= set(photos)
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos.values())
    left, right, disp = stereo_pair()
    assert left.shape == right.shape and disp.shape == left.shape[:2]
    finite = disp[np.isfinite(disp)]
    assert finite.size > 0.5 * disp.size and 0 < np.median(finite) < left.shape[1]
    # the disparity really maps left pixels onto the right image: warping right by it beats no shift
    h, w = disp.shape
    ys, xs = np.nonzero(np.isfinite(disp) & (disp > 0))
    sel = np.random.default_rng(0).choice(len(ys), 5000, replace=False)
    ys, xs = ys[sel], xs[sel]
    xr = np.clip(np.round(xs - disp[ys, xs]).astype(int), 0, w - 1)
    lg = left.mean(2)
    rg = right.mean(2)
    err_warp = np.abs(lg[ys, xs] - rg[ys, xr]).mean()
    err_none = np.abs(lg[ys, xs] - rg[ys, xs]).mean()
    assert err_warp < 0.7 * err_none

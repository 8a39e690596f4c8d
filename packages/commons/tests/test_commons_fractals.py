import numpy as np
import pytest

from commons.data.fractals import FractalDataset, render_ifs, sample_ifs_classes


def test_ifs_classes_pass_the_sigma_filter_and_are_deterministic():
    classes = sample_ifs_classes(5, seed=3)
    again = sample_ifs_classes(5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(classes, again))
    for maps in classes:
        assert maps.shape[1:] == (2, 3) and 2 <= len(maps) <= 4
        sigma = sum(np.linalg.svd(m[:, :2], compute_uv=False).sum() for m in maps)
        assert 3.5 <= sigma <= 4.5
    with pytest.raises(ValueError, match="sigma_range"):
        sample_ifs_classes(2, sigma_range=(4, 3))


def test_render_is_a_normalised_point_set_image():
    maps = sample_ifs_classes(1, seed=0)[0]
    img = render_ifs(maps, size=24, num_points=2000, rng=np.random.default_rng(0), batch=2)
    assert img.shape == (2, 24, 24) and img.dtype == np.float32
    assert img.min() == 0.0 and img.max() == 1.0
    assert (img > 0).mean() > 0.04  # min_fill filter guarantees a visible fractal


def test_fractal_dataset_instances_resemble_their_class():
    ds = FractalDataset(num_classes=4, per_class=6, size=16, num_points=1500, seed=1)
    assert len(ds) == 24 and ds.images.shape == (24, 3, 16, 16)
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    x = ds.images[:, 0].flatten(1)
    y = ds.targets
    # nearest-centroid on raw pixels (flip-invariant by symmetrising) beats chance: instances share their IFS
    sym = x.view(-1, 16, 16)
    sym = (sym + sym.flip(2)).flatten(1)
    centroids = np.stack([sym[y == c].mean(0).numpy() for c in range(4)])
    pred = np.argmin(((sym.numpy()[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y.numpy()).mean() > 0.5
    with pytest.raises(ValueError, match="per_class"):
        FractalDataset(per_class=0)

import numpy as np
import pytest
import torch

from commons.data import fractal_classes, split_by_classes
from commons.data.fractal_classes import render_instances, sample_class_ifs
from commons.data.fractals import sample_ifs_classes


def test_classes_are_a_seeded_prefix_and_disjoint_from_the_pretraining_stream():
    small, large = sample_class_ifs(3, seed=0), sample_class_ifs(6, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(small, large))
    assert not np.array_equal(sample_class_ifs(1, seed=1)[0], small[0])
    pretraining = sample_ifs_classes(20, seed=0)  # the clfreq ViT's pre-training classes (seed 0)
    assert not any(a.shape == b.shape and np.allclose(a, b) for a in large for b in pretraining)
    for maps in large:
        sigma = sum(np.linalg.svd(m[:, :2], compute_uv=False).sum() for m in maps)
        assert 3.5 <= sigma <= 4.5 and 2 <= len(maps) <= 4


def test_dataset_layout_determinism_and_independent_splits():
    train = fractal_classes(num_classes=4, per_class=5, size=16, seed=2, num_points=300)
    again = fractal_classes(num_classes=4, per_class=5, size=16, seed=2, num_points=300)
    test = fractal_classes(num_classes=4, per_class=5, size=16, seed=2, num_points=300, train=False)
    assert train.images.shape == (20, 3, 16, 16) and train.images.dtype == torch.uint8
    assert torch.equal(train.images, again.images)
    assert torch.equal(train.targets, torch.arange(4).repeat_interleave(5))
    assert not torch.equal(train.images, test.images)
    assert all(np.array_equal(a, b) for a, b in zip(train.ifs, test.ifs))  # same classes, other images
    x, y = train[7]
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16) and y == 1
    assert x.min() >= -1 and x.max() <= 1 and torch.equal(train.images_float()[7], x)
    grey = fractal_classes(num_classes=2, per_class=2, size=16, channels=1, normalize=False, num_points=300)
    assert grey[0][0].shape == (1, 16, 16) and grey[0][0].min() >= 0
    tasks = split_by_classes(train.targets, classes_per_task=2, seed=0)
    assert [len(t.indices) for t in tasks] == [10, 10]


def test_renderer_places_the_shape_inside_the_frame_with_a_visible_fill():
    maps = np.zeros((3, 4, 2, 3))
    first = sample_class_ifs(1, seed=0)[0]
    maps[:, :len(first)] = first
    img = render_instances(maps, size=24, num_points=800, rng=np.random.default_rng(0))
    assert img.shape == (3, 24, 24) and img.dtype == np.float32
    assert img.min() == 0.0 and img.max() == 1.0 and ((img > 0).mean(axis=(1, 2)) > 0.01).all()


def test_test_images_are_recognised_from_train_images_of_their_class():
    """Shape is the class cue: a nearest-class-mean on binarised shapes beats chance (1/8) on the test split by far."""
    kw = dict(num_classes=8, per_class=30, size=24, seed=0, channels=1, num_points=800, normalize=False)
    train, test = fractal_classes(**kw), fractal_classes(**{**kw, "per_class": 10}, train=False)

    def feat(ds):  # flip- and shift-tolerant: sorted row/column occupancy profiles of the thresholded shape
        fg = (ds.images_float()[:, 0] > 0.45).float()
        rows, cols = fg.mean(2).sort(1).values, fg.mean(1).sort(1).values
        return torch.cat([rows, cols, fg.mean((1, 2))[:, None]], 1)

    xs, xt = feat(train), feat(test)
    centroids = torch.stack([xs[train.targets == c].mean(0) for c in range(8)])
    acc = (torch.cdist(xt, centroids).argmin(1) == test.targets).float().mean().item()
    assert acc > 3 / 8  # chance is 1/8


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_classes"):
        fractal_classes(num_classes=0)
    with pytest.raises(ValueError, match="per_class"):
        fractal_classes(num_classes=2, per_class=0)
    with pytest.raises(ValueError, match="channels"):
        fractal_classes(num_classes=2, per_class=2, channels=2)
    with pytest.raises(ValueError, match="seed"):
        fractal_classes(num_classes=2, per_class=2, seed=-1)

import numpy as np
import pytest
import torch

from commons.data import load_digits_arrays, stratified_split
from commons.data.moving_digits import MovingDigitsDataset, bouncing_trajectory, make_moving_digits


def test_deterministic_given_seed_and_differs_across_seeds():
    a, la = make_moving_digits(6, seed=3)
    b, lb = make_moving_digits(6, seed=3)
    c, _ = make_moving_digits(6, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    # video i depends only on (seed, i): a longer dataset starts with the same videos
    d, ld = make_moving_digits(9, seed=3)
    assert np.array_equal(d[:6], a) and np.array_equal(ld[:6], la)


def test_shapes_range_and_the_digit_is_the_labelled_glyph():
    videos, labels = make_moving_digits(5, num_frames=7, size=20, digit_size=8, seed=0)
    assert videos.shape == (5, 7, 20, 20) and videos.dtype == np.float32
    assert labels.shape == (5, 1) and labels.dtype == np.int64
    assert videos.min() >= 0 and videos.max() <= 1
    images, glyph_labels = load_digits_arrays()

    def contains(frame, glyph):
        return any(np.array_equal(frame[y:y + 8, x:x + 8], glyph) for y in range(13) for x in range(13))

    # every frame shows one unchanged glyph of the labelled class (the same glyph in all frames)
    for v, lab in zip(videos, labels[:, 0]):
        matches = [g for g in images[glyph_labels == lab] if contains(v[0], g)]
        assert matches, "first frame holds no glyph of the labelled class"
        assert any(all(contains(frame, g) for frame in v) for g in matches)


def test_digits_move_and_stay_on_canvas():
    videos, _ = make_moving_digits(20, num_frames=8, seed=1, speed=(1.5, 2.0))
    mass = videos.reshape(20, 8, -1).sum(-1)
    # the glyph is never clipped: its mass is constant over frames
    assert np.allclose(mass, mass[:, :1], rtol=1e-5)
    moved = [not np.array_equal(v[0], v[-1]) for v in videos]
    assert sum(moved) >= 18


def test_bouncing_trajectory_reflects():
    traj = bouncing_trajectory([0.0, 7.0], [1.0, 1.5], 6, limit=8.0)
    assert traj.min() >= 0 and traj.max() <= 8
    assert traj[1, 1] == pytest.approx(7.5) and traj[2, 1] == pytest.approx(6.0)  # 8.5 reflects to 7.5, then back
    assert np.allclose(np.diff(traj[:, 0]), 1.0)


def test_two_digits_and_index_restriction():
    _, labels = load_digits_arrays()
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    videos, labs = make_moving_digits(10, num_digits=2, seed=2, digit_indices=test_idx)
    assert labs.shape == (10, 2)
    ds = MovingDigitsDataset(num_videos=10, num_digits=2, seed=2, digit_indices=test_idx, normalize=True)
    x, y = ds[0]
    assert x.shape == (1, 8, 16, 16) and y.shape == (2,)
    assert torch.allclose(ds.videos[:, 0], torch.from_numpy(videos) * 2 - 1)
    assert x.min() >= -1 and x.max() <= 1


def test_dataset_single_digit_targets_and_len():
    ds = MovingDigitsDataset(num_videos=4, seed=0)
    assert len(ds) == 4 and ds.targets.shape == (4,)
    x, y = ds[3]
    assert x.shape == (1, 8, 16, 16) and int(y) == int(ds.targets[3])


@pytest.mark.parametrize("kwargs", [dict(num_videos=0), dict(num_digits=3), dict(digit_size=20),
                                    dict(speed=(2.0, 1.0)), dict(digit_indices=[5000])])
def test_bad_arguments_raise(kwargs):
    args = dict(num_videos=2)
    args.update(kwargs)
    with pytest.raises(ValueError):
        make_moving_digits(**args)

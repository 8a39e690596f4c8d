"""LOL-style paired folders (v1, v2 real/synthetic, WalMaFa layouts) and the synthetic low-light default."""

import numpy as np
import pytest
import torch
from PIL import Image

from commons.data.lol import (
    PairedFolderDataset,
    SyntheticLowLightDataset,
    augment_pair,
    degrade_low_light,
    random_crop_pair,
)


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _images(rng, n, h=20, w=24):
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("layout", ["walmafa", "lolv1", "lolv2_real", "lolv2_syn"])
def test_paired_folder_layouts_pair_by_name(tmp_path, layout):
    rng = np.random.default_rng(0)
    lows, highs = _images(rng, 3), _images(rng, 3)
    for i in range(3):
        if layout == "walmafa":
            lp, hp = tmp_path / "test/low" / f"{i}.png", tmp_path / "test/high" / f"{i}.png"
        elif layout == "lolv1":
            lp, hp = tmp_path / "eval15/low" / f"{i}.png", tmp_path / "eval15/high" / f"{i}.png"
        elif layout == "lolv2_real":
            lp = tmp_path / "Real_captured/Test/Low" / f"low{i:05d}.png"
            hp = tmp_path / "Real_captured/Test/Normal" / f"normal{i:05d}.png"
        else:
            lp, hp = tmp_path / "Synthetic/Test/Low" / f"r{i}.png", tmp_path / "Synthetic/Test/Normal" / f"r{i}.png"
        _write(lp, lows[i])
        _write(hp, highs[i])
    subset = {"lolv2_real": "real", "lolv2_syn": "synthetic"}.get(layout)
    ds = PairedFolderDataset(tmp_path, split="test", subset=subset)
    assert len(ds) == 3
    for i in range(3):
        low, high = ds[i]
        assert low.shape == (3, 20, 24) and low.dtype == torch.float32
        np.testing.assert_allclose(low.permute(1, 2, 0).numpy() * 255, lows[i], atol=1e-3)
        np.testing.assert_allclose(high.permute(1, 2, 0).numpy() * 255, highs[i], atol=1e-3)


def test_paired_folder_errors(tmp_path):
    rng = np.random.default_rng(1)
    (a,) = _images(rng, 1)
    _write(tmp_path / "low/a.png", a)
    _write(tmp_path / "high/b.png", a)
    with pytest.raises(ValueError, match="no partner"):
        PairedFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="existing directory"):
        PairedFolderDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="split"):
        PairedFolderDataset(tmp_path / "low")


def test_crops_and_augmentations_are_seeded_and_consistent(tmp_path):
    rng = np.random.default_rng(2)
    img = _images(rng, 1, 40, 50)[0]
    _write(tmp_path / "low/x.png", img)
    _write(tmp_path / "high/x.png", img)
    ds = PairedFolderDataset(tmp_path, patch_size=16, augment=True, seed=3)
    l1, h1 = ds[0]
    assert l1.shape == (3, 16, 16) and torch.equal(l1, h1)  # same crop and transform on both sides
    l2, _ = PairedFolderDataset(tmp_path, patch_size=16, augment=True, seed=3)[0]
    assert torch.equal(l1, l2)
    seen = set()
    for e in range(12):
        ds.set_epoch(e)
        seen.add(ds[0][0].numpy().tobytes())
    assert len(seen) > 3
    # padding when smaller than the patch
    small_l, small_h = random_crop_pair(torch.rand(3, 5, 7), torch.rand(3, 5, 7), 8, np.random.default_rng(0))
    assert small_l.shape == small_h.shape == (3, 8, 8)


def test_eight_augmentations_are_the_dihedral_group():
    x = torch.arange(12.0).reshape(1, 3, 4)
    outs = {augment_pair(x, x, m)[0].numpy().tobytes() for m in range(8)}
    assert len(outs) == 8
    with pytest.raises(ValueError):
        augment_pair(x, x, 8)


def test_degradation_darkens_adds_noise_and_is_seeded():
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 180, np.uint8)
    a = degrade_low_light(img, np.random.default_rng(5))
    b = degrade_low_light(img, np.random.default_rng(5))
    c = degrade_low_light(img, np.random.default_rng(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert a.mean() < 180 / 255 * 0.8  # darker
    assert a.std(dim=(1, 2)).mean() > 0  # noise on a flat image
    assert rng is not None


def test_synthetic_default_splits_by_photo():
    tr = SyntheticLowLightDataset("train", size=32, variants=2, seed=0)
    te = SyntheticLowLightDataset("test", size=32, variants=2, seed=0)
    assert len(tr) > 0 and len(te) > 0
    assert not {n.rsplit("_", 1)[0] for n in tr.names} & {n.rsplit("_", 1)[0] for n in te.names}
    low, high = tr[0]
    assert low.shape == high.shape and low.shape[1] % 16 == 0 and low.shape[2] % 16 == 0
    assert low.mean() < high.mean()
    again = SyntheticLowLightDataset("train", size=32, variants=2, seed=0)
    assert torch.equal(again[1][0], tr[1][0])
    patches = SyntheticLowLightDataset("train", size=32, variants=1, patch_size=16, augment=True)
    assert patches[0][0].shape == (3, 16, 16)

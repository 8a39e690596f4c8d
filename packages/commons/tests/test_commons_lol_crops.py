"""The batched low-light camera model and the on-the-fly training crops (commons.data.lol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from commons.data.lol import SyntheticLowLightCrops, degrade_low_light, degrade_low_light_batch

TINY = (1e-12, 1e-12)  # noise levels whose effect is far below one 8-bit grey level


def test_batch_camera_model_matches_formula_and_numpy_version():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    k, g = 0.1, 2.2
    kw = dict(exposure=(k, k), gamma=(g, g), colour_shift=0.0, shot_noise=TINY, read_noise=TINY)
    out = degrade_low_light_batch(x, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2), **kw)
    # without noise and colour shift the model is (x^g · k)^(1/g) = x · k^(1/g), quantised to 8 bits
    expect = x * k ** (1 / g)
    assert torch.allclose(out, torch.round(expect * 255) / 255, atol=1.01 / 255)
    assert torch.equal(torch.round(out * 255), out * 255)
    ref = degrade_low_light(x[0], np.random.default_rng(0), **kw)
    assert (out[0] - ref).abs().max() <= 1.01 / 255  # float32 vs float64 rounding: at most one grey level


def test_batch_draws_parameters_per_image_and_is_seeded():
    x = torch.full((8, 3, 8, 8), 0.5)
    a = degrade_low_light_batch(x, torch.Generator().manual_seed(3), torch.Generator().manual_seed(4))
    b = degrade_low_light_batch(x, torch.Generator().manual_seed(3), torch.Generator().manual_seed(4))
    c = degrade_low_light_batch(x, torch.Generator().manual_seed(5), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    means = a.mean(dim=(1, 2, 3))
    assert means.max() > 1.3 * means.min()  # exposures differ across the batch (log-uniform over 0.03-0.2)
    assert (a <= 0.5).float().mean() > 0.95  # darker than the input


def test_crops_hold_out_test_photos_and_are_deterministic():
    crops = SyntheticLowLightCrops("train", crop=32, scales=(0.5,), max_short=128)
    assert "coffee" not in crops.names and "flower" not in crops.names and len(crops.names) >= 1
    low, high = crops.batch(4, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert low.shape == high.shape == (4, 3, 32, 32)
    assert low.mean() < high.mean()
    low2, high2 = crops.batch(4, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert torch.equal(low, low2) and torch.equal(high, high2)
    with pytest.raises(ValueError, match="batch_size"):
        crops.batch(0)

import math

import pytest
import torch

from commons.metrics.video import motion_smoothness, per_frame_psnr, per_frame_ssim, temporal_flicker


def test_flicker_is_mean_abs_frame_difference():
    v = torch.zeros(4, 1, 5, 5)
    v[1] = 1.0  # frames 0,1,2,3 = 0,1,0,0 -> diffs 1,1,0
    assert temporal_flicker(v) == pytest.approx(2 / 3)
    assert temporal_flicker(torch.ones(6, 8, 8)) == 0.0
    batch = torch.stack([v, torch.zeros_like(v)])
    assert temporal_flicker(batch) == pytest.approx(1 / 3)


def test_motion_smoothness_linear_fade_is_perfect_and_flicker_is_not():
    ramp = torch.linspace(0, 1, 6)[:, None, None, None].expand(6, 1, 4, 4)
    assert motion_smoothness(ramp) == pytest.approx(1.0)
    flick = torch.tensor([0.0, 1.0, 0.0, 1.0])[:, None, None, None].expand(4, 1, 4, 4)
    assert motion_smoothness(flick) == pytest.approx(0.0)
    assert motion_smoothness(flick * 255, data_range=255) == pytest.approx(0.0)
    noisy = ramp + 0.1 * torch.randn_like(ramp)
    assert 0 < motion_smoothness(noisy) < 1


def test_per_frame_fidelity():
    torch.manual_seed(0)
    x = torch.rand(3, 5, 1, 16, 16)
    y = x.clone()
    y[:, 2] = (y[:, 2] + 0.1).clamp(0, 1)
    p = per_frame_psnr(x, y)
    s = per_frame_ssim(x, y)
    assert len(p) == len(s) == 5
    assert math.isinf(p[0]) and p[2] < 30
    assert s[0] == pytest.approx(1.0) and s[2] < 1.0


def test_errors():
    with pytest.raises(ValueError):
        temporal_flicker(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError):
        motion_smoothness(torch.zeros(2, 4, 4))
    with pytest.raises(TypeError):
        temporal_flicker([[0.0]])
    with pytest.raises(ValueError):
        per_frame_psnr(torch.zeros(2, 4, 4), torch.zeros(3, 4, 4))

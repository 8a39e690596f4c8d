"""Model stages of StreamDSGN at the tiny size: shapes, cost volume vs a naive reference, feature flow and the
pseudo-next warp, history identity, gradients, configuration errors."""

import math

import pytest
import torch

from streamdsgn import StreamDSGNConfig, StreamDSGNModel, create_model, list_models
from streamdsgn.models import (
    FeatureAlignment,
    build_dps_cost_volume,
    feature_similarity,
    flow_from_similarity,
    plane_channel_offsets,
    warp_bev,
)


def _calib(h, w):
    f = w * 0.58
    p2 = torch.tensor([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    p3 = p2.clone()
    p3[0, 3] = -f * 0.54
    tr = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27]])
    return {"P2": p2[None], "P3": p3[None], "R_rect": torch.eye(3)[None], "Tr_velo_cam": tr[None]}, f * 0.54


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return StreamDSGNModel(StreamDSGNConfig.tiny())


def test_shapes_through_every_stage(tiny):
    cfg = tiny.config
    h, w = cfg.image_size
    g = torch.Generator().manual_seed(1)
    left, right = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)
    calib, fb = _calib(h, w)
    tiny.eval()
    with torch.no_grad():
        feats = tiny.backbone(torch.cat([left, right]))
        assert feats.shape == (2, cfg.stereo_channels, h, w)
        vol = tiny.stereo_volume(left, right, torch.tensor([fb]))
        assert vol.shape == (1, cfg.volume_channels, cfg.num_planes, h // 4, w // 4)
        grid, valid = tiny.voxel_grid(calib, (h, w), (h // 4, w // 4))
        nx, ny, nz = cfg.grid_size
        assert grid.shape == (1, nz, ny, nx, 3) and valid.shape == (1, 1, nz, ny, nx)
        assert 0.1 < valid.float().mean() < 0.95  # the camera frustum covers part of the grid
        bev, vox = tiny.geometry_volume(vol, calib, (h, w), return_voxels=True)
        assert bev.shape == (1, cfg.bev_channels, ny, nx)
        assert vox.shape == (1, cfg.volume_channels, nz, ny, nx)
        depth = tiny.depth_logits(vol, calib, vox)  # released: the geometry volume sampled back onto the PSV grid
        assert depth.shape == (1, cfg.num_planes * cfg.depth_upsample, h, w)
        stereo_depth = StreamDSGNModel(StreamDSGNConfig.tiny(depth_from="stereo")).eval().depth_logits(vol)
        assert stereo_depth.shape == depth.shape
        fused = tiny.fusion(bev, bev.roll(1, -1))
        assert fused.shape == bev.shape
        bev_out = tiny.bev_backbone(fused)
        assert bev_out.shape == (1, cfg.bev_out, ny, nx)
        out = tiny(left, right, calib, fb, prev_bev=bev)
    a = cfg.num_anchors_per_cell * ny * nx
    assert out["cls"].shape == (1, a, 3) and out["box"].shape == (1, a, 7) and out["dir"].shape == (1, a, 2)
    assert torch.isfinite(out["cls"]).all() and torch.isfinite(out["box"]).all()


def test_psv_grid_inverts_the_voxel_projection(tiny):
    """A plane-sweep cell back-projected by psv_grid and projected again with P2 lands on the same (u, v, depth)."""
    from streamdsgn.models.streamdsgn import lidar_to_image_matrices

    cfg = tiny.config
    h, w = cfg.image_size
    calib, _ = _calib(h, w)
    calib["P2"][0, 2, 3] = 0.01  # a non-zero P2[2, 3] must be handled too
    grid = tiny.psv_grid(calib, (h // 4, w // 4))
    assert grid.shape == (1, cfg.num_planes, h // 4, w // 4, 3)
    pcr, vs = cfg.point_cloud_range, cfg.voxel_size
    pts = torch.stack([(grid[..., k] + 1) / 2 * ((pcr[k + 3] - pcr[k]) - vs[k]) + pcr[k] + vs[k] / 2
                       for k in range(3)], -1)
    cam_from_lidar, p2 = lidar_to_image_matrices(calib)
    cam = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ cam_from_lidar[0].T
    img = cam @ p2[0].T
    u, v = img[..., 0] / img[..., 2], img[..., 1] / img[..., 2]
    assert torch.allclose(cam[0, :, 0, 0, 2], tiny.plane_depths, atol=1e-3)
    assert torch.allclose(u[0, 5, 3, :], torch.arange(w // 4, dtype=torch.float32) * 4, atol=1e-2)
    assert torch.allclose(v[0, 5, :, 7], torch.arange(h // 4, dtype=torch.float32) * 4, atol=1e-2)


def test_kitti_preset_sizes():
    cfg = StreamDSGNConfig.kitti()
    assert cfg.image_size == (320, 1248) and cfg.num_planes == 64 and cfg.stereo_channels == 96
    assert cfg.bev_channels == 96 and cfg.grid_size == (256, 288, 12) and cfg.num_anchors_per_cell == 6
    assert cfg.voxel_size[0] == pytest.approx(0.2) and cfg.voxel_size[1] == pytest.approx(0.2)
    assert cfg.plane_depths[0] == pytest.approx(2.4) and cfg.plane_depths[1] - cfg.plane_depths[0] == pytest.approx(0.8)
    assert set(list_models()) >= {"streamdsgn_kitti", "streamdsgn_tiny", "streamdsgn_tiny_baseline"}


def _naive_cost_volume(left, right, disp, offsets, c, stride):
    b, _, h, w = left.shape
    d = disp.shape[1]
    h4, w4 = h // stride, w // stride
    out = torch.zeros(b, 2 * c, d, h4, w4)
    for bi in range(b):
        for i in range(d):
            o = int(offsets[i])
            for y in range(h4):
                for x in range(w4):
                    out[bi, :c, i, y, x] = left[bi, o:o + c, y * stride, x * stride]
                    u = x * stride - float(disp[bi, i])
                    u0 = math.floor(u)
                    f = u - u0
                    val = torch.zeros(c)
                    if 0 <= u0 < w:
                        val += (1 - f) * right[bi, o:o + c, y * stride, u0]
                    if 0 <= u0 + 1 < w:
                        val += f * right[bi, o:o + c, y * stride, u0 + 1]
                    out[bi, c:, i, y, x] = val
    return out


def test_cost_volume_equals_naive_per_plane_reference():
    g = torch.Generator().manual_seed(2)
    left, right = torch.randn(2, 6, 8, 24, generator=g), torch.randn(2, 6, 8, 24, generator=g)
    disp = torch.tensor([[9.3, 4.6, 1.2, 0.3], [7.1, 3.55, 0.95, 0.25]])
    offsets = plane_channel_offsets(disp[0], 6, 3)
    assert offsets[0] == 0 and offsets[-1] == 3 and (offsets[1:] >= offsets[:-1]).all()
    fast = build_dps_cost_volume(left, right, disp, offsets, 3, 4)
    ref = _naive_cost_volume(left, right, disp, offsets, 3, 4)
    assert fast.shape == (2, 6, 4, 2, 6)
    assert torch.allclose(fast, ref, atol=1e-5)


def test_feature_flow_recovers_a_known_shift_and_warp_extrapolates_it():
    g = torch.Generator().manual_seed(3)
    # zero-mean features constant on 2x2 blocks, so that max-pooling keeps them zero-mean and the cosine
    # similarity of wrong offsets stays near 0 (post-ReLU features make the softmax flat; see flow threshold)
    prev = torch.nn.functional.interpolate(torch.randn(1, 12, 16, 16, generator=g), scale_factor=2)
    dy, dx = 2, -4  # content moves by (dy, dx) cells from t-1 to t (even: exact after 2x max-pooling)
    cur = torch.zeros_like(prev)
    cur[:, :, dy:, :dx] = prev[:, :, :-dy, -dx:]
    fa = FeatureAlignment(12, pool=2, radius=3)
    flow = fa.flow(prev, cur)
    assert flow.shape == (1, 2, 32, 32)
    inner = flow[0, :, 8:24, 8:24]
    assert (inner[0] == dx).all() and (inner[1] == dy).all()
    nxt = warp_bev(cur, flow)
    expected = torch.zeros_like(cur)
    expected[:, :, dy:, :dx] = cur[:, :, :-dy, -dx:]  # one more step of the same motion
    assert torch.allclose(nxt[..., 10:22, 10:22], expected[..., 10:22, 10:22], atol=1e-5)
    # similarity: the true offset has cosine similarity 1 in the interior
    sim = feature_similarity(F_pool(prev), F_pool(cur), 3)
    k = (dy // 2 + 3) * 7 + (dx // 2 + 3)
    assert torch.allclose(sim[0, k, 4:12, 4:12], torch.ones(8, 8), atol=1e-5)


def F_pool(x):
    return torch.nn.functional.max_pool2d(x, 2)


def test_flow_below_threshold_is_zero():
    sim = torch.zeros(1, 49, 4, 4)  # uniform softmax: no offset exceeds 1/(49*0.8)
    flow = flow_from_similarity(sim, 3, 0.8)
    assert (flow == 0).all()


def test_history_identity_on_first_frame(tiny):
    tiny.eval()
    bev = torch.randn(1, tiny.config.bev_channels, 64, 64)
    assert tiny.fusion(bev, None) is bev
    with torch.no_grad():
        a = tiny.forward_bev(bev, None)["cls"]
        fused = tiny.forward_bev(bev, bev.flip(-1))["cls"]
        mixed = tiny.fusion(torch.cat([bev, bev]), torch.cat([bev.flip(-1), bev.flip(-1)]),
                            torch.tensor([False, True]))
    assert not torch.allclose(a, fused)
    assert torch.equal(mixed[0], bev[0]) and not torch.allclose(mixed[1], bev[0])
    base = StreamDSGNModel(StreamDSGNConfig.tiny(baseline=True)).eval()
    assert not base.streaming
    with torch.no_grad():
        assert torch.equal(base.forward_bev(bev, bev.flip(-1))["cls"], base.forward_bev(bev, None)["cls"])


def test_gradients_reach_the_extractor_and_history_pass():
    torch.manual_seed(0)
    m = create_model("streamdsgn_tiny", up_dims=(8, 4), slice_channels=4, volume_channels=4, van_dim=16,
                     van_stem=12, bev_out=16, head_channels=16)
    h, w = m.config.image_size
    calib, fb = _calib(h, w)
    left, right = torch.rand(1, 3, h, w), torch.rand(1, 3, h, w)
    out = m(left, right, calib, fb, prev_left=left.roll(2, -1), prev_right=right.roll(2, -1), with_depth=True)
    (out["cls"].sum() + out["box"].square().mean() + out["depth_logits"].mean()).backward()
    g = m.backbone.conv1.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert m.fusion.reduce[0].weight.grad.abs().sum() > 0  # the fusion conv is used and trained
    m.zero_grad()
    out = m(left, right, calib, fb, with_depth=True)
    out["depth_logits"].square().mean().backward()  # the depth loss alone reaches the 3D hourglass (released design)
    assert m.hourglass.conv1[0].weight.grad.abs().sum() > 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="image_size"):
        StreamDSGNConfig.tiny(image_size=(90, 320))
    with pytest.raises(ValueError, match="grid_size"):
        StreamDSGNConfig.tiny(grid_size=(62, 64, 12))
    with pytest.raises(ValueError, match="depth_range"):
        StreamDSGNConfig.tiny(depth_range=(5.0, 2.0))
    with pytest.raises(ValueError, match="lka_kernel"):
        StreamDSGNConfig.tiny(lka_kernel=9)
    with pytest.raises(ValueError, match="unknown"):
        StreamDSGNConfig.from_dict({"nope": 1})
    with pytest.raises(TypeError):
        StreamDSGNModel("tiny")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("dsgn")
    m = StreamDSGNModel(StreamDSGNConfig.tiny())
    calib, fb = _calib(96, 320)
    with pytest.raises(ValueError, match="left must be"):
        m(torch.rand(1, 3, 64, 320), torch.rand(1, 3, 64, 320), calib, fb)
    with pytest.raises(ValueError, match="left must be"):
        m(torch.rand(3, 96, 320), torch.rand(3, 96, 320), calib, fb)
    with pytest.raises(FileNotFoundError):
        StreamDSGNModel(StreamDSGNConfig.tiny(pretrained="/nonexistent/resnet18.pth"))


def test_pretrained_loads_matching_torchvision_tensors(tmp_path):
    from torchvision.models import resnet18

    tv = resnet18()  # random weights saved locally: the loader never downloads
    path = tmp_path / "r18.pth"
    torch.save(tv.state_dict(), path)
    m = StreamDSGNModel(StreamDSGNConfig.kitti(pretrained=str(path), grid_size=(32, 32, 12)))
    assert torch.equal(m.backbone.conv1.weight, tv.conv1.weight)
    assert torch.equal(m.backbone.layer1[0].conv1.weight, tv.layer1[0].conv1.weight)

import numpy as np
import pytest
import torch

from commons.data.kitti_tracking import lidar_depth_map, read_calib, read_labels, read_velodyne
from commons.data.synthetic_stereo import (
    CLASS_SIZES_HWL,
    depth_to_disparity,
    disparity_to_depth,
    fu_baseline_from_calib,
    kitti_like_calib,
    render_kitti_tracking,
    warp_right_to_left,
)

PIL = pytest.importorskip("PIL.Image")  # the renderer writes PNGs with pillow (commons[data])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("kt")
    render_kitti_tracking(root, num_sequences=2, frames_per_sequence=12, image_size=(96, 320), seed=3)
    return root / "training"


def _img(path):
    return np.asarray(PIL.open(path), dtype=np.float64) / 255.0


def test_layout_and_calib(rendered):
    for seq in ("0000", "0001"):
        assert len(list((rendered / "image_02" / seq).glob("*.png"))) == 12
        assert len(list((rendered / "image_03" / seq).glob("*.png"))) == 12
        assert len(list((rendered / "velodyne" / seq).glob("*.bin"))) == 12
        assert (rendered / "label_02" / f"{seq}.txt").is_file()
    cal = read_calib(rendered / "calib" / "0000.txt")
    f = cal["P2"][0, 0]
    assert f == pytest.approx(721.5377 * 320 / 1248, rel=1e-6)
    assert cal["P3"][0, 3] == pytest.approx(-f * 0.54, rel=1e-6)  # KITTI convention P3[0,3] = -f*b
    assert fu_baseline_from_calib(cal) == pytest.approx(f * 0.54, rel=1e-6)
    np.testing.assert_allclose(cal["R_rect"], np.eye(3))
    # LiDAR x forward is camera z, LiDAR y left is camera -x, LiDAR z up is camera -y
    rot = cal["Tr_velo_cam"][:, :3]
    np.testing.assert_allclose(rot @ [1, 0, 0], [0, 0, 1])
    np.testing.assert_allclose(rot @ [0, 1, 0], [-1, 0, 0])
    np.testing.assert_allclose(rot @ [0, 0, 1], [0, -1, 0])
    assert _img(rendered / "image_02" / "0000" / "000000.png").shape == (96, 320, 3)


def test_deterministic_under_seed(tmp_path):
    a = render_kitti_tracking(tmp_path / "a", num_sequences=1, frames_per_sequence=3, seed=5)
    b = render_kitti_tracking(tmp_path / "b", num_sequences=1, frames_per_sequence=3, seed=5)
    c = render_kitti_tracking(tmp_path / "c", num_sequences=1, frames_per_sequence=3, seed=6)
    rel = "training/image_03/0000/000002.png"
    assert (a / rel).read_bytes() == (b / rel).read_bytes() != (c / rel).read_bytes()
    lab = "training/label_02/0000.txt"
    assert (a / lab).read_text() == (b / lab).read_text()
    with pytest.raises(ValueError, match="image_size"):
        render_kitti_tracking(tmp_path / "d", image_size=(100, 320))


def test_stereo_is_photometrically_consistent(rendered):
    """Right image sampled at u - f*b/depth equals the left image (depth from the LiDAR points)."""
    cal = read_calib(rendered / "calib" / "0000.txt")
    fub = fu_baseline_from_calib(cal)
    errs, errs_wrong, n = [], [], 0
    for seq in ("0000", "0001"):
        for fr in (0, 7, 11):
            left = _img(rendered / "image_02" / seq / f"{fr:06d}.png")
            right = _img(rendered / "image_03" / seq / f"{fr:06d}.png")
            depth = lidar_depth_map(read_velodyne(rendered / "velodyne" / seq / f"{fr:06d}.bin"), cal, (96, 320))
            disp = depth_to_disparity(depth, fub)
            has = depth > 0
            n += has.sum()
            disp = np.where(has, disp, np.nan)
            warped = warp_right_to_left(right, disp)
            ok = np.isfinite(warped).all(-1)
            errs.append(np.abs(warped - left)[ok].mean(-1))
            wrong = warp_right_to_left(right, disp + 2.0)  # a 2 px disparity error must show
            ok2 = np.isfinite(wrong).all(-1)
            errs_wrong.append(np.abs(wrong - left)[ok2].mean(-1))
    e, ew = np.concatenate(errs), np.concatenate(errs_wrong)
    assert n > 5000
    # most pixels are non-occluded in the right view and match to quantisation + bilinear error
    assert np.median(e) < 0.01
    assert np.mean(e < 0.03) > 0.85
    assert np.median(ew) > 3 * np.median(e)


def test_labels_are_geometrically_consistent(rendered):
    cal = read_calib(rendered / "calib" / "0000.txt")
    p2 = cal["P2"]
    objs = [(seq, lab) for seq in ("0000", "0001")
            for frame in read_labels(rendered / "label_02" / f"{seq}.txt").values() for lab in frame
            if lab.cls != "DontCare"]
    assert len(objs) > 20
    seen_occ, seen_classes, by_id = set(), set(), {}
    for seq, lab in objs:
        h, w, l = lab.dims_hwl
        ref = CLASS_SIZES_HWL[lab.cls]
        assert np.allclose([h, w, l], ref, rtol=0.09)
        x1, y1, x2, y2 = lab.bbox
        assert 0 <= x1 <= x2 <= 319 and 0 <= y1 <= y2 <= 95
        assert lab.location[1] == pytest.approx(1.65)  # on the ground plane
        expect_alpha = np.angle(np.exp(1j * (lab.rotation_y - np.arctan2(lab.location[0], lab.location[2]))))
        assert lab.alpha == pytest.approx(expect_alpha, abs=2e-5)
        if lab.truncated == 0:  # projected 3D centre inside the 2D box
            c = np.array(lab.location) - [0, h / 2, 0]
            u, v, z = p2 @ np.append(c, 1.0)
            assert x1 - 1 <= u / z <= x2 + 1 and y1 - 1 <= v / z <= y2 + 1
        assert lab.truncated in (0, 1, 2) and lab.occluded in (0, 1, 2)
        seen_occ.add(lab.occluded)
        seen_classes.add(lab.cls)
        by_id.setdefault((seq, lab.track_id), set()).add((lab.cls, lab.dims_hwl))
    assert {0, 1, 2} <= seen_occ or len(seen_occ) >= 2
    assert {"Car", "Pedestrian"} <= seen_classes
    assert all(len(v) == 1 for v in by_id.values())  # a track id keeps its class and size


def test_lidar_points_lie_on_the_rendered_surfaces(rendered):
    cal = read_calib(rendered / "calib" / "0000.txt")
    pts = read_velodyne(rendered / "velodyne" / "0000" / "000004.bin")
    assert pts.dtype == np.float32 and pts.shape[1] == 4 and len(pts) > 1000
    assert (pts[:, 0] > 0).all()  # all in front (LiDAR x forward)
    # the ground plane (camera height 1.65 m, LiDAR 8 cm above the camera) is the lowest surface
    ground = np.abs(pts[:, 2] + 1.73) < 0.02
    assert ground.mean() > 0.2
    assert pts[:, 2].min() > -1.74
    # projecting the points back gives depths on the pixel grid equal to their camera z
    depth = lidar_depth_map(pts, cal, (96, 320))
    assert (depth > 0).sum() > 0.9 * len(pts)


def test_depth_disparity_helpers_on_the_middlebury_pair():
    from commons.data import stereo_pair

    left, right, disp = stereo_pair()
    fub = 1000.0
    depth = disparity_to_depth(disp, fub)
    ok = np.isfinite(disp) & (disp > 0)
    assert np.isinf(depth[~ok]).all()
    np.testing.assert_allclose(depth_to_disparity(depth, fub)[ok], disp[ok], rtol=1e-6)
    # torch and numpy agree
    td = disparity_to_depth(torch.from_numpy(np.where(ok, disp, 0).astype(np.float32)), fub)
    np.testing.assert_allclose(td.numpy()[ok], depth[ok], rtol=1e-5)
    # the same warping convention as the renderer: right sampled at u - disparity matches the left
    lg = left.astype(np.float64).mean(-1) / 255
    rg = right.astype(np.float64).mean(-1) / 255
    warped = warp_right_to_left(rg, np.where(ok, disp, np.nan))
    zero = warp_right_to_left(rg, np.where(ok, 0.0, np.nan))
    m = np.isfinite(warped) & np.isfinite(zero)
    e_w, e_0 = np.median(np.abs(warped - lg)[m]), np.median(np.abs(zero - lg)[m])
    assert e_w < 0.5 * e_0
    with pytest.raises(ValueError):
        depth_to_disparity(depth, 0.0)


def test_kitti_like_calib_scales_with_width():
    full = kitti_like_calib((320, 1248))
    assert full["P2"][0, 0] == pytest.approx(721.5377) and full["P2"][1, 2] == pytest.approx(117.854)
    small = kitti_like_calib((96, 320))
    assert small["P2"][0, 0] / full["P2"][0, 0] == pytest.approx(320 / 1248)


def test_objects_never_interpenetrate(rendered):
    from commons.data.kitti_tracking import camera_to_lidar_boxes
    from commons.metrics.detection import iou_bev

    cal = read_calib(rendered / "calib" / "0000.txt")
    frames = 0
    for seq in ("0000", "0001"):
        for rows in read_labels(rendered / "label_02" / f"{seq}.txt").values():
            rows = [r for r in rows if r.cls != "DontCare"]
            cam = np.array([[*r.location, *r.dims_hwl, r.rotation_y] for r in rows]).reshape(-1, 7)
            b = camera_to_lidar_boxes(cam, cal)
            iou = iou_bev(b, b)
            np.fill_diagonal(iou, 0.0)
            assert iou.max(initial=0.0) == 0.0
            frames += len(rows) > 1
    assert frames > 10


def _block_match(left, right, max_disp=40, r=3):
    """Winner-take-all SAD block matching (7x7) on grey images: the simplest stereo matcher."""
    lg, rg = left.mean(-1), right.mean(-1)
    h, w = lg.shape
    k = 2 * r + 1
    cost = np.empty((max_disp, h, w))
    for d in range(max_disp):
        diff = np.ones((h, w))
        diff[:, d:] = np.abs(lg[:, d:] - rg[:, :w - d])
        cs = np.pad(np.pad(diff, r, mode="edge").cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        cost[d] = cs[k:, k:] - cs[:-k, k:] - cs[k:, :-k] + cs[:-k, :-k]
    return cost.argmin(0)


def test_textures_make_stereo_matching_work(rendered):
    """A plain 7x7 SAD block matcher recovers the true disparity (from the LiDAR depth) on most pixels."""
    cal = read_calib(rendered / "calib" / "0000.txt")
    fub = fu_baseline_from_calib(cal)
    errs = []
    for seq, fr in (("0000", 3), ("0001", 9)):
        left = _img(rendered / "image_02" / seq / f"{fr:06d}.png")
        right = _img(rendered / "image_03" / seq / f"{fr:06d}.png")
        depth = lidar_depth_map(read_velodyne(rendered / "velodyne" / seq / f"{fr:06d}.bin"), cal, (96, 320))
        gt = depth_to_disparity(depth, fub)
        est = _block_match(left, right)
        m = (depth > 0) & (gt < 39) & (np.arange(320)[None] >= 40)
        errs.append(np.abs(est - gt)[m])
    e = np.concatenate(errs)
    assert len(e) > 3000
    assert np.mean(e < 1.0) > 0.75  # about 0.9 on the default sequences


def test_rerender_removes_stale_files_and_protects_foreign_folders(tmp_path):
    from commons.data.kitti_tracking import KittiTrackingStream

    render_kitti_tracking(tmp_path / "r", num_sequences=2, frames_per_sequence=4, image_size=(32, 64))
    render_kitti_tracking(tmp_path / "r", num_sequences=1, frames_per_sequence=3, image_size=(32, 64))
    tr = tmp_path / "r" / "training"
    assert sorted(p.name for p in (tr / "image_02").iterdir()) == ["0000"]
    assert len(list((tr / "velodyne" / "0000").iterdir())) == 3 and not (tr / "label_02" / "0001.txt").exists()
    assert len(KittiTrackingStream(tmp_path / "r", split="all")) == 3
    foreign = tmp_path / "kitti" / "training"
    (foreign / "calib").mkdir(parents=True)
    p2 = " ".join(map(str, [721.5, 0, 609.6, 44.9, 0, 721.5, 172.9, 0.2, 0, 0, 1, 0.003]))
    p0 = " ".join(map(str, [721.5, 0, 609.6, 0, 0, 721.5, 172.9, 0, 0, 0, 1, 0]))
    (foreign / "calib" / "0000.txt").write_text(f"P0: {p0}\nP1: {p0}\nP2: {p2}\nP3: {p2}\n")  # a real-KITTI-like calib
    with pytest.raises(ValueError, match="overwrite=True"):
        render_kitti_tracking(tmp_path / "kitti", num_sequences=1, frames_per_sequence=2, image_size=(32, 64))
    render_kitti_tracking(tmp_path / "kitti", num_sequences=1, frames_per_sequence=2, image_size=(32, 64),
                          overwrite=True)


def test_workers_do_not_change_the_output(tmp_path):
    a = render_kitti_tracking(tmp_path / "a", num_sequences=2, frames_per_sequence=2, image_size=(32, 64), seed=2)
    b = render_kitti_tracking(tmp_path / "b", num_sequences=2, frames_per_sequence=2, image_size=(32, 64), seed=2,
                              workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 10 and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f

import numpy as np
import pytest
import torch

from commons.data.kitti_tracking import (
    KittiTrackingStream,
    camera_to_lidar_boxes,
    find_training_dir,
    lidar_depth_map,
    lidar_to_camera_boxes,
    read_calib,
    read_labels,
    split_clips,
    split_frame_ids,
)


def test_read_labels_and_calib(tmp_path):
    lab = tmp_path / "0000.txt"
    lab.write_text(
        "0 1 Car 0 0 -1.5 10 20 110 80 1.5 1.6 3.9 2.0 1.7 15.0 0.1\n"
        "0 -1 DontCare -1 -1 -10 0 0 5 5 -1 -1 -1 -1000 -1000 -1000 -10\n"
        "1 1 Car 0 1 -1.5 12 20 112 80 1.5 1.6 3.9 2.1 1.7 14.0 0.12\n"
    )
    labels = read_labels(lab)
    assert sorted(labels) == [0, 1]
    assert labels[0][0].track_id == 1 and labels[0][0].location == (2.0, 1.7, 15.0)
    assert labels[0][1].cls == "DontCare" and labels[1][0].occluded == 1
    cal = tmp_path / "c.txt"
    p2 = np.arange(12.0)
    cal.write_text(f"P2: {' '.join(map(str, p2))}\nP3: {' '.join(map(str, p2 + 1))}\nR_rect {' '.join(['1'] * 9)}\n")
    mats = read_calib(cal)
    assert mats["P2"].shape == (3, 4) and mats["P3"][0, 0] == 1.0 and mats["R_rect"].shape == (3, 3)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 Car 0 0\n")
    with pytest.raises(ValueError):
        read_labels(bad)


def test_split_clips_even_train_odd_val():
    # StreamDSGN gen_split_kitti_tracking: 40-frame clips, the last one absorbs the remainder
    s = split_clips(130)
    assert [c.start for c in s["train"]] == [0, 80] and [c.start for c in s["val"]] == [40]
    assert len(s["train"][1]) == 50
    assert [len(c) for c in split_frame_ids(range(120))] == [40, 40, 40]
    # an exact multiple of 40 keeps its last clip (the official script drops it; documented deviation)
    assert [len(c) for c in split_frame_ids(range(80))] == [40, 40]
    assert [len(c) for c in split_frame_ids(range(79))] == [39, 40]  # fewer than 80 frames: two halves
    # frame ids need not be contiguous (KITTI sequence 0001 lacks frames 177-180)
    ids = [f for f in range(200) if not 177 <= f <= 180]
    clips = split_frame_ids(ids)
    assert sum(len(c) for c in clips) == 196 and clips[-1][-1] == 199 and 177 not in clips[-1]
    with pytest.raises(ValueError):
        split_clips(10, 0)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    pytest.importorskip("PIL")
    from commons.data.synthetic_stereo import render_kitti_tracking

    return render_kitti_tracking(tmp_path_factory.mktemp("kts"), num_sequences=2, frames_per_sequence=24,
                                 image_size=(64, 256), seed=1)


def test_stream_samples_tags_and_clips(rendered):
    ds = KittiTrackingStream(rendered, split="train", clip_len=10)
    val = KittiTrackingStream(rendered / "training", split="val", clip_len=10, with_depth=False)
    every = KittiTrackingStream(rendered, split="all", clip_len=10, frame_tags=("prev", "token"))
    assert ds.scenes == ["0000_0", "0001_0"] and val.scenes == ["0000_1", "0001_1"]
    assert len(ds) == 20 and len(val) == 28 and len(every) == 48  # 24 frames -> clips of 10 and 14
    assert len(KittiTrackingStream(rendered, split="train", with_depth=False)) == 24  # clip_len 40: two halves
    idx = ds.clip_frames("0001_0")
    assert [ds[i]["frame"] for i in idx[:3]] == [0, 1, 2] and len(idx) == 10
    s = val[val.clip_frames("0000_1")[0]]
    assert s["scene"] == "0000_1" and s["seq"] == 0 and s["frame"] == 10 and s["timestamp"] == pytest.approx(1.0)
    assert s["frames"]["prev"] is None and s["frames"]["prev2"] is None and s["frames"]["next"] is not None
    last = val[val.clip_frames("0000_1")[-1]]
    assert last["frame"] == 23 and last["frames"]["next"] is None and last["frames"]["prev2"] is not None
    assert set(every[5]["frames"]) == {"prev", "token"}
    cached = KittiTrackingStream(rendered, split="train", clip_len=10, cache_frames=True)
    for i in (4, 5, 4):
        a, b = cached[i]["frames"], ds[i]["frames"]
        for tag in ("prev", "token", "next"):
            assert torch.equal(a[tag]["left"], b[tag]["left"]) and torch.equal(a[tag]["boxes"], b[tag]["boxes"])
        a["token"]["left"].zero_()  # modifying a returned sample must not corrupt the cache
    assert torch.equal(cached[4]["frames"]["token"]["left"], ds[4]["frames"]["token"]["left"])
    tok = ds[10]["frames"]["token"]
    assert tok["left"].shape == (3, 64, 256) and tok["right"].shape == (3, 64, 256)
    assert float(tok["left"].min()) >= 0.0 and float(tok["left"].max()) <= 1.0
    n = len(tok["boxes"])
    assert tok["boxes"].shape == (n, 7) and tok["labels"].shape == (n,) and tok["track_ids"].shape == (n,)
    assert tok["bbox2d"].shape == (n, 4)
    assert tok["occluded"].dtype == torch.long and tok["truncated"].dtype == torch.long
    assert tok["depth"].shape == (64, 256) and (tok["depth"] > 0).float().mean() > 0.1
    assert "depth" not in val[0]["frames"]["token"]
    assert s["fu_baseline"] == pytest.approx(float(s["calib"]["P2"][0, 0]) * 0.54, rel=1e-5)
    assert set(s["calib"]) == {"P2", "P3", "R_rect", "Tr_velo_cam"}
    with pytest.raises(KeyError):
        ds.clip_frames("0000_1")


def test_stream_boxes_follow_labels_and_class_mapping(rendered):
    ds = KittiTrackingStream(rendered, split="all", with_depth=False)
    cars = KittiTrackingStream(rendered, split="all", classes=("Car",), with_depth=False)
    labels = read_labels(rendered / "training" / "label_02" / "0000.txt")
    calib = read_calib(rendered / "training" / "calib" / "0000.txt")
    for i in (3, 11, 20):
        s, sc = ds[i], cars[i]
        tok = s["frames"]["token"]
        rows = [lab for lab in labels.get(s["frame"], []) if lab.cls != "DontCare"]
        assert len(tok["boxes"]) == len(rows)
        for k, lab in enumerate(rows):
            cls = {"Car": 0, "Van": 0, "Pedestrian": 1, "Cyclist": 2}[lab.cls]
            assert int(tok["labels"][k]) == cls and tok["names"][k] == lab.cls
            assert int(tok["track_ids"][k]) == lab.track_id
            back = lidar_to_camera_boxes(tok["boxes"][k:k + 1].double().numpy(), calib)[0]
            np.testing.assert_allclose(back[:3], lab.location, atol=1e-4)
            np.testing.assert_allclose(back[3:6], lab.dims_hwl, atol=1e-4)
            assert np.cos(back[6] - lab.rotation_y) == pytest.approx(1.0, abs=1e-6)
        ncar = sum(lab.cls in ("Car", "Van") for lab in rows)
        assert len(sc["frames"]["token"]["boxes"]) == ncar and (sc["frames"]["token"]["labels"] == 0).all()
    # the LiDAR-style box of a car sits on the ground: centre z = -1.73 (ground) + h/2; heading along x for ry=-pi/2
    box = camera_to_lidar_boxes(np.array([[0.0, 1.65, 10.0, 1.5, 1.6, 3.9, -np.pi / 2]]), calib)[0]
    np.testing.assert_allclose(box, [10.27, 0.0, -1.73 + 0.75, 3.9, 1.6, 1.5, 0.0], atol=1e-6)
    tb = camera_to_lidar_boxes(torch.tensor([[0.0, 1.65, 10.0, 1.5, 1.6, 3.9, 0.3]]), calib)
    assert isinstance(tb, torch.Tensor) and tb[0, 6].item() == pytest.approx(-(np.pi / 2 + 0.3))


def test_stream_crop_and_depth_projection(rendered):
    full = KittiTrackingStream(rendered, split="train", clip_len=10)
    crop = KittiTrackingStream(rendered, split="train", clip_len=10, image_size=(48, 192))
    a, b = full[12], crop[12]
    fa, fb = a["frames"]["token"], b["frames"]["token"]
    # bottom crop, centred horizontally: x0 = (256 - 192) / 2 = 32, y0 = 64 - 48 = 16
    assert torch.equal(fb["left"], fa["left"][:, 16:, 32:224])
    assert torch.equal(fb["depth"], fa["depth"][16:, 32:224])
    p2a, p2b = a["calib"]["P2"], b["calib"]["P2"]
    assert p2b[0, 2] == pytest.approx(float(p2a[0, 2]) - 32) and p2b[1, 2] == pytest.approx(float(p2a[1, 2]) - 16)
    assert b["fu_baseline"] == pytest.approx(a["fu_baseline"])
    pad = KittiTrackingStream(rendered, split="train", clip_len=10, image_size=(80, 288), with_depth=False)
    fp = pad[12]["frames"]["token"]["left"]  # larger than the image: zero padding, bottom-aligned, centred
    assert fp.shape == (3, 80, 288) and torch.equal(fp[:, 16:, 16:272], fa["left"]) and fp[:, :16].abs().sum() == 0


def test_lidar_depth_map_nearest_point_wins():
    calib = {"P2": np.array([[100.0, 0, 10, 0], [0, 100, 5, 0], [0, 0, 1, 0]]),
             "Tr_velo_cam": np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]]), "R_rect": np.eye(3)}
    pts = np.array([[10.0, 0, 0, 1], [5.0, 0, 0, 1], [4.0, 0.4, 0.2, 1], [-3.0, 0, 0, 1]], np.float32)
    d = lidar_depth_map(pts, calib, (10, 20))
    assert d[5, 10] == pytest.approx(5.0)  # 10 m and 5 m on the same pixel: nearest wins
    assert d[0, 0] == pytest.approx(4.0)  # u = 10 - 100*0.4/4 = 0, v = 5 - 100*0.2/4 = 0
    assert (d > 0).sum() == 2  # the point behind the camera is dropped


def test_wrong_layout_names_the_missing_folder(tmp_path):
    (tmp_path / "training" / "image_02").mkdir(parents=True)
    (tmp_path / "training" / "calib").mkdir()
    with pytest.raises(FileNotFoundError, match="image_03, label_02"):
        KittiTrackingStream(tmp_path, with_depth=False)
    with pytest.raises(FileNotFoundError, match="velodyne"):
        find_training_dir(tmp_path, with_velodyne=True)
    for d in ("image_03", "label_02"):
        (tmp_path / "training" / d).mkdir()
    with pytest.raises(FileNotFoundError, match="missing velodyne.*with_depth=False"):
        KittiTrackingStream(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        KittiTrackingStream(tmp_path / "nope")
    with pytest.raises(ValueError, match="split"):
        KittiTrackingStream(tmp_path, split="test")


def test_real_kitti_layout_with_kitti_calib_and_missing_lidar(tmp_path):
    """A tiny folder shaped like real KITTI tracking (375x1242 images, KITTI calib text, a missing .bin)."""
    from PIL import Image

    tr = tmp_path / "training"
    for d in ("image_02/0001", "image_03/0001", "velodyne/0001", "label_02", "calib"):
        (tr / d).mkdir(parents=True)
    for f in range(4):
        arr = np.full((375, 1242, 3), 10 * f, np.uint8)
        Image.fromarray(arr).save(tr / "image_02" / "0001" / f"{f:06d}.png")
        Image.fromarray(arr).save(tr / "image_03" / "0001" / f"{f:06d}.png")
    np.array([[10.0, 1.0, -1.0, 0.3]], np.float32).tofile(tr / "velodyne" / "0001" / "000001.bin")
    (tr / "calib" / "0001.txt").write_text(KITTI_CALIB)
    (tr / "label_02" / "0001.txt").write_text(
        "1 0 Van 0 0 -1.793451 296.744956 161.752147 455.226042 292.372804 2.000000 1.823255 4.433886 -4.552284 "
        "1.858523 13.410495 -2.115488\n"
        "1 -1 DontCare -1 -1 -10.000000 219.310000 188.490000 245.500000 218.560000 -1000.000000 -1000.000000 "
        "-1000.000000 -10.000000 -1.000000 -1.000000 -1.000000\n"
        "1 2 Tram 0 0 -1.0 0 0 10 10 3 2.5 15 5 2 30 0.1\n")
    ds = KittiTrackingStream(tmp_path, split="all", image_size=(320, 1248))
    assert ds.scenes == ["0001_0", "0001_1"] and len(ds) == 4  # 4 frames -> two halves
    s = ds[1]
    tok = s["frames"]["token"]
    assert tok["left"].shape == (3, 320, 1248) and s["frames"]["next"] is None
    assert tok["names"] == ["Van"] and tok["labels"].tolist() == [0] and tok["dontcare_bbox2d"].shape == (1, 4)
    assert s["fu_baseline"] == pytest.approx(4.485728e01 + 3.395242e02, rel=1e-6)
    # bbox shifted by the crop: x0 = (1242 - 1248) // 2 = -3 (padding), y0 = 375 - 320 = 55
    np.testing.assert_allclose(tok["bbox2d"][0].numpy(), [299.744956, 106.752147, 458.226042, 237.372804], atol=1e-3)
    assert (tok["depth"] > 0).sum() == 1
    assert ds[0]["frames"]["token"]["depth"].abs().sum() == 0  # no .bin for frame 0 -> empty depth
    # the box goes to the LiDAR frame through the real (non-permutation) Tr_velo_cam and comes back
    calib = read_calib(tr / "calib" / "0001.txt")
    back = lidar_to_camera_boxes(tok["boxes"].double().numpy(), calib)[0]
    np.testing.assert_allclose(back[:6], [-4.552284, 1.858523, 13.410495, 2.0, 1.823255, 4.433886], atol=1e-4)


KITTI_CALIB = """P0: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
P1: 7.215377e+02 0.000000e+00 6.095593e+02 -3.875744e+02 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
P2: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
P3: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
R_rect 9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01
Tr_velo_cam 7.533745e-03 -9.999714e-01 -6.166020e-04 -4.069766e-03 1.480249e-02 7.280733e-04 -9.998902e-01 -7.631618e-02 9.998621e-01 7.523790e-03 1.480755e-02 -2.717806e-01
Tr_imu_velo 9.999976e-01 7.553071e-04 -2.035826e-03 -8.086759e-01 -7.854027e-04 9.998898e-01 -1.482298e-02 3.195559e-01 2.024406e-03 1.482454e-02 9.998881e-01 -7.997231e-01
"""  # noqa: E501  (KITTI tracking calib/0000.txt, as published)

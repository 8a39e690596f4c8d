"""Training data pipeline: augmentations keep images, calibration, boxes and depth consistent (each against a wrong
alternative), copy-paste brings the object's pixels with its box in every frame, and the DataLoader path (workers,
augmentation) trains with the same sample order as the synchronous one."""

import numpy as np
import pytest
import torch

from streamdsgn.augment import CopyPasteDatabase, StereoAugment, affine_stereo, disparity_consistency, flip_stereo


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.data.synthetic_stereo import render_kitti_tracking

    root = render_kitti_tracking(tmp_path_factory.mktemp("synth_aug"), num_sequences=2, frames_per_sequence=12,
                                 image_size=(96, 320), seed=5)
    return KittiTrackingStream(root, split="all", clip_len=6)


def _lidar_points(frame: dict, calib: dict) -> torch.Tensor:
    """The token frame's depth pixels back-projected with P2 and moved to the LiDAR-style frame."""
    from streamdsgn.models.streamdsgn import lidar_to_image_matrices

    d = frame["depth"]
    v, u = torch.nonzero(d > 0, as_tuple=True)
    z = d[v, u]
    cal = {k: torch.as_tensor(np.asarray(calib[k]), dtype=torch.float32) for k in ("P2", "R_rect", "Tr_velo_cam")}
    cam_from_lidar, p2 = lidar_to_image_matrices(cal)
    rhs = torch.stack([u.float() * z, v.float() * z, z], 1) - p2[0, :, 3]
    cam = rhs @ torch.linalg.inv(p2[0, :, :3]).T
    pts = torch.cat([cam, torch.ones(len(cam), 1)], 1) @ torch.linalg.inv(cam_from_lidar[0]).T
    return pts[:, :3]


def _points_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Count of points inside each LiDAR-style box (rotated, 5 cm margin)."""
    out = []
    for b in boxes:
        d = points - b[:3]
        c, s = torch.cos(-b[6]), torch.sin(-b[6])
        x, y = d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c
        inside = (x.abs() <= b[3] / 2 + 0.05) & (y.abs() <= b[4] / 2 + 0.05) & (d[:, 2].abs() <= b[5] / 2 + 0.05)
        out.append(int(inside.sum()))
    return torch.tensor(out)


def _check_consistent(sample: dict, ref_err: float) -> None:
    from streamdsgn.boxes import project_boxes_to_image

    tok = sample["frames"]["token"]
    # images + calibration + depth: the right image at u - f_u b / z shows what the left shows at u
    assert disparity_consistency(tok, sample["calib"]) < 1.25 * ref_err
    assert sample["fu_baseline"] == pytest.approx(float(sample["calib"]["P2"][0, 3] - sample["calib"]["P3"][0, 3]),
                                                  rel=1e-5)
    # boxes + calibration: the 2D label boxes are the 3D boxes projected with the new P2 (for boxes inside the
    # rendered image: the renderer clips its label boxes to the image, as KITTI's annotators did)
    proj = project_boxes_to_image(tok["boxes"], sample["calib"])
    h, w = tok["left"].shape[-2:]
    inside = (proj[:, 0] > -50) & (proj[:, 2] < w + 50) & (proj[:, 3] < h + 50)
    assert inside.sum() >= 3
    assert torch.allclose(proj[inside], tok["bbox2d_label"][inside], atol=0.05)


def test_flip_with_stereo_swap_is_consistent_and_an_involution(stream):
    s = stream[3]
    tok = s["frames"]["token"]
    ref = disparity_consistency(tok, s["calib"])
    assert ref < 0.03
    f = flip_stereo(s)
    _check_consistent(f, ref)
    # the same objects hold the same LiDAR points (points lost only where the right view does not see them)
    before = _points_in_boxes(_lidar_points(tok, s["calib"]), tok["boxes"])
    after = _points_in_boxes(_lidar_points(f["frames"]["token"], f["calib"]), f["frames"]["token"]["boxes"])
    assert before.sum() > 50 and after.sum() >= 0.7 * before.sum() and (after <= before + 3).all()
    # boxes mirror: lateral y and yaw change sign (the LiDAR sits on the camera axis up to its 0 lateral offset)
    assert torch.allclose(f["frames"]["token"]["boxes"][:, 1], -tok["boxes"][:, 1] + 0.0, atol=0.6)
    # flipping twice gives the sample back exactly
    ff = flip_stereo(f)
    for key in ("left", "right", "depth"):
        assert torch.equal(ff["frames"]["token"][key], tok[key]) or key == "depth"
    assert torch.allclose(ff["frames"]["token"]["boxes"][:, :6], tok["boxes"][:, :6], atol=1e-4)
    assert torch.allclose(ff["calib"]["P2"], s["calib"]["P2"]) and torch.allclose(ff["calib"]["P3"], s["calib"]["P3"])
    # the wrong alternative (each image flipped in place, no swap, same calibration) breaks the stereo geometry
    naive = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in tok.items()}
    for key in ("left", "right", "depth"):
        naive[key] = torch.flip(tok[key], [-1])
    assert disparity_consistency(naive, s["calib"]) > 4 * ref


def test_scaling_and_crop_are_consistent(stream):
    s = stream[8]
    tok = s["frames"]["token"]
    ref = disparity_consistency(tok, s["calib"])
    for scale, tx, ty in ((1.1, -14.0, -5.0), (0.9, 20.0, 4.0), (1.0, 7.0, -3.0)):
        a = affine_stereo(s, scale, tx, ty)
        _check_consistent(a, ref)
        pts = _points_in_boxes(_lidar_points(a["frames"]["token"], a["calib"]), a["frames"]["token"]["boxes"])
        assert pts.sum() > 20
    # the wrong alternative: images scaled but the calibration (so f_u b) left alone; measured 1.65x the reference
    a = affine_stereo(s, 1.1, -14.0, -5.0)
    assert disparity_consistency(a["frames"]["token"], s["calib"]) > 1.4 * ref
    with pytest.raises(ValueError, match="scale"):
        affine_stereo(s, 0.0, 0, 0)


def test_copy_paste_brings_the_objects_pixels_in_every_frame(stream):
    db = CopyPasteDatabase(stream, max_paste=3)
    rng = np.random.default_rng(0)
    s = stream[3]
    ref = disparity_consistency(s["frames"]["token"], s["calib"])
    n0 = len(s["frames"]["token"]["boxes"])
    done = None
    for _ in range(20):
        p = db.paste(s, rng)
        if p["pasted"]:
            done = p
            break
    assert done is not None
    k = done["pasted"]
    for tag, f in done["frames"].items():
        if f is None:
            continue
        n = len(s["frames"][tag]["boxes"])
        assert len(f["boxes"]) == n + k and len(f["labels"]) == n + k and len(f["bbox2d"]) == n + k
        assert (f["track_ids"][n:] >= 100000).all()
    ids = [tuple(f["track_ids"][-k:].tolist()) for f in done["frames"].values() if f is not None]
    assert len(set(ids)) == 1  # one track per pasted object across prev2 ... next (the motion loss can use it)
    tok = done["frames"]["token"]
    _check_consistent(done, ref)
    new = tok["boxes"][n0:]
    pts = _points_in_boxes(_lidar_points(tok, done["calib"]), new)
    assert (pts > 0).all()  # the pasted depth pixels lie on the pasted objects


def test_stereo_augment_and_loader_with_workers(stream):
    from streamdsgn.data import SupervisedSamples, make_loader

    aug = StereoAugment(CopyPasteDatabase(stream), p_paste=1.0, p_flip=1.0, p_affine=1.0)
    view = SupervisedSamples(stream, "next", transform=aug, seed=3)
    a, b = view[2], view[2]
    assert torch.equal(a["frames"]["token"]["left"], b["frames"]["token"]["left"])  # seeded per item
    assert not torch.equal(a["frames"]["token"]["left"], stream[2]["frames"]["token"]["left"])
    assert view[5]["frames"]["next"] is not None and stream[5]["frames"]["next"] is None  # last of a clip replaced
    batches = list(zip(range(2), make_loader(view, batch_size=2, num_workers=2, seed=0)))
    batch = batches[0][1]
    assert batch["frames"]["token"]["left"].shape == (2, 3, 96, 320)
    assert batch["frames"]["token"]["depth"] is not None and batch["frames"]["prev"]["depth"] is None
    with pytest.raises(ValueError, match="supervise"):
        SupervisedSamples(stream, "prev")


@pytest.mark.slow
def test_fit_with_workers_matches_fit_without(stream):
    from streamdsgn import StreamDSGN, TrainConfig

    slim = dict(base_width=8, up_dims=(8, 4), slice_channels=4, volume_channels=4, num_planes=12, van_stem=12,
                van_dim=16, bev_out=16, head_channels=16)
    out = []
    for workers in (0, 2):
        det = StreamDSGN("tiny", device="cpu", seed=0, **slim)
        h = det.fit(stream, TrainConfig(epochs=1, samples_per_epoch=3, log_every=1, num_workers=workers),
                    progress=False)
        out.append(h["loss"])
    assert np.allclose(out[0], out[1], rtol=1e-5, atol=1e-6)

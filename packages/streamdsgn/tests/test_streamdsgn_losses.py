"""Box coding, target assignment, post-processing and the losses against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from streamdsgn import ResidualCoder, StreamDSGNConfig, assign_targets, make_anchors, one_cycle
from streamdsgn.boxes import decode_boxes, decode_predictions, direction_targets
from streamdsgn.losses import (
    boxes_iou3d_aligned,
    depth_loss,
    iou3d_loss,
    motion_consistency_loss,
    sigmoid_focal_loss,
    smooth_l1,
)


def test_box_coder_round_trip():
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.randn(50, 3, generator=g) * 10, torch.rand(50, 3, generator=g) * 3 + 0.5,
                         torch.rand(50, 1, generator=g) * 3], 1)
    boxes = torch.cat([torch.randn(50, 3, generator=g) * 10, torch.rand(50, 3, generator=g) * 3 + 0.5,
                       torch.rand(50, 1, generator=g) * 6 - 3], 1)
    codes = ResidualCoder.encode(boxes, anchors)
    assert torch.allclose(ResidualCoder.decode(codes, anchors), boxes, atol=1e-4)
    # div_by_diagonal: a shift of one anchor diagonal in x encodes as 1
    a = torch.tensor([[10.0, 0, -1, 3.0, 4.0, 1.5, 0]])
    assert ResidualCoder.encode(a + torch.tensor([[5.0, 0, 0, 0, 0, 0, 0]]), a)[0, 0] == pytest.approx(1.0)


def test_direction_classifier_recovers_heading():
    cfg = StreamDSGNConfig.tiny()
    anchors = torch.tensor([[10.0, 0, -1, 3.9, 1.6, 1.56, 0.0]] * 4)
    yaws = torch.tensor([0.3, 0.3 + math.pi, -2.0, 2.5])
    gt = anchors.clone()
    gt[:, 6] = yaws
    codes = ResidualCoder.encode(gt, anchors)
    bins = direction_targets(anchors, codes, cfg.dir_offset, cfg.num_dir_bins)
    # a regression that only knows the yaw modulo pi + the right bin gives the full heading back
    codes_pi = codes.clone()
    codes_pi[:, 6] = torch.remainder(codes[:, 6], math.pi)
    dec = decode_boxes(codes_pi, torch.nn.functional.one_hot(bins, 2).float(), anchors, cfg)
    assert torch.allclose(torch.remainder(dec[:, 6] - yaws + math.pi, 2 * math.pi) - math.pi,
                          torch.zeros(4), atol=1e-4)


def test_anchor_assignment_axis_aligned_thresholds():
    cfg = StreamDSGNConfig.tiny()
    anchors, cls = make_anchors(cfg)
    nx, ny, _ = cfg.grid_size
    assert anchors.shape == (ny * nx * 6, 7)
    # anchor order (y, x, class, rot): cell (iy, ix) = (10, 20), class Car, rot 0
    k = (10 * nx + 20) * 6
    assert cls[k] == 0 and cls[k + 2] == 1 and anchors[k + 1, 6] == pytest.approx(math.pi / 2)
    gt = anchors[k:k + 1].clone()
    out = assign_targets(anchors, cls, gt, torch.tensor([0]), cfg)
    assert out["labels"][k] == 1 and out["gt_index"][k] == 0
    assert torch.allclose(out["box_targets"][k], torch.zeros(7), atol=1e-6)
    assert out["labels"][k + 1] == 0  # the rotated Car anchor: BEV IoU 1.6/3.9-ish < 0.45 -> background
    assert (out["labels"][cls != 0] == 0).all()  # no Pedestrian/Cyclist GT: their anchors are background
    far = (anchors[:, 0] - gt[0, 0]).abs() > 10
    assert (out["labels"][far] == 0).all()
    ign = (out["labels"] == -1).sum()
    assert ign > 0  # anchors with IoU between 0.45 and 0.6 are ignored


def test_decode_predictions_nms_and_threshold():
    cfg = StreamDSGNConfig.tiny()
    anchors, _ = make_anchors(cfg)
    n = anchors.shape[0]
    cls = torch.full((1, n, 3), -10.0)
    cls[0, 100, 0] = 3.0
    cls[0, 101, 0] = 2.0  # same cell, rotated anchor: overlaps the first -> suppressed... or kept if IoU < 0.25
    cls[0, 5000, 1] = 1.0
    preds = {"cls": cls, "box": torch.zeros(1, n, 7), "dir": torch.zeros(1, n, 2)}
    det = decode_predictions(preds, anchors, cfg)[0]
    assert det["scores"][0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert set(det["labels"].tolist()) == {0, 1}
    assert torch.allclose(det["boxes"][0, :6], anchors[100, :6])
    assert len(decode_predictions(preds, anchors, cfg, score_threshold=0.9)[0]["scores"]) == 1


def test_focal_loss_hand_computed():
    logits = torch.tensor([[[0.0, 2.0, -1.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[2, 0, -1]])  # positive of class 1, background, ignored

    def fl(x, t, a=0.25, g=2.0):
        p = 1 / (1 + math.exp(-x))
        return (a * (1 - p) ** g * -math.log(p)) if t else ((1 - a) * p ** g * -math.log(1 - p))

    expected = (fl(0, 0) + fl(2, 1) + fl(-1, 0) + fl(1, 0) + fl(0, 0) + fl(0, 0)) / 10.0  # normaliser max(1, 10)
    assert sigmoid_focal_loss(logits, labels, 3).item() == pytest.approx(expected, rel=1e-5)
    assert sigmoid_focal_loss(logits, labels, 3, pos_normalizer_min=1.0).item() == pytest.approx(expected * 10,
                                                                                                rel=1e-5)
    with pytest.raises(ValueError):
        sigmoid_focal_loss(logits, labels[:, :2], 3)


def test_depth_loss_two_bin_targets():
    bins = torch.tensor([2.1, 2.3, 2.5, 2.7])
    uniform = torch.zeros(1, 4, 1, 3)
    gt = torch.tensor([[[2.3, 2.36, 0.0]]])  # on a bin centre; 30% between bins; no LiDAR point (ignored)
    # uniform logits: -sum p_i log(1/4) = log 4 * sum p_i, and sum p_i = 1 for both valid pixels
    assert depth_loss(uniform, gt, bins).item() == pytest.approx(math.log(4), rel=1e-5)
    logits = torch.tensor([0.0, 1.0, 2.0, 0.5]).view(1, 4, 1, 1)
    lsm = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0, 0.5]), 0)
    # gt 2.36: p(2.3) = 1 - 0.06/0.2 = 0.7, p(2.5) = 0.3
    expected = -(0.7 * lsm[1] + 0.3 * lsm[2]).item()
    assert depth_loss(logits, torch.tensor([[[2.36]]]), bins).item() == pytest.approx(expected, rel=1e-4)
    assert depth_loss(logits, torch.tensor([[[0.0]]]), bins).item() == 0.0


def test_motion_consistency_loss_hand_computed():
    v = torch.tensor([1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.1])
    g_tm2 = torch.tensor([[10.0, 2.0, -1.0, 3.9, 1.6, 1.5, 0.0]])
    g_tm1, g_t = g_tm2 + v, g_tm2 + 2 * v
    perfect = g_t + v
    assert motion_consistency_loss(perfect, g_t, g_tm1, g_tm2, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    off = perfect + torch.tensor([[1.0, 0, 0, 0, 0, 0, 0]])
    # velocity: SmoothL1(1) = 1 - 1/18; acceleration: the same error once more, weighted 0.2
    expected = (1 - 1 / 18) * 1.2 / 10.0
    assert motion_consistency_loss(off, g_t, g_tm1, g_tm2, 10.0).item() == pytest.approx(expected, rel=1e-5)
    assert smooth_l1(torch.tensor(0.05)).item() == pytest.approx(0.5 * 0.05 ** 2 * 9)


def test_iou3d_matches_polygon_reference_and_has_gradients():
    from commons.metrics.detection import iou_3d

    g = torch.Generator().manual_seed(4)
    a = torch.cat([torch.randn(40, 2, generator=g), torch.randn(40, 1, generator=g) * 0.3,
                   torch.rand(40, 3, generator=g) * 3 + 0.5, torch.rand(40, 1, generator=g) * 6], 1)
    b = a + torch.cat([torch.randn(40, 3, generator=g) * 0.7, torch.randn(40, 3, generator=g) * 0.2,
                       torch.randn(40, 1, generator=g)], 1)
    b[:, 3:6] = b[:, 3:6].clamp_min(0.3)
    ours = boxes_iou3d_aligned(a, b)
    ref = np.diag(iou_3d(a.double().numpy(), b.double().numpy()))
    assert np.allclose(ours.numpy(), ref, atol=1e-4)
    assert boxes_iou3d_aligned(a[:1], a[:1]).item() == pytest.approx(1.0, abs=1e-5)
    p = b.clone().requires_grad_()
    iou3d_loss(p, a, 1.0).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_one_cycle_schedule():
    lr0, mom0 = one_cycle(0, 100, 1e-3)
    assert lr0 == pytest.approx(1e-4) and mom0 == pytest.approx(0.95)
    lr_peak, mom_peak = one_cycle(40, 100, 1e-3)
    assert lr_peak == pytest.approx(1e-3) and mom_peak == pytest.approx(0.85)
    lr_end, _ = one_cycle(100, 100, 1e-3)
    assert lr_end == pytest.approx(1e-8)


def test_rotated_nms_keeps_crossing_boxes_that_axis_aligned_nms_merges():
    from torchvision.ops import batched_nms

    from streamdsgn.boxes import nearest_bev_boxes, rotated_nms

    # two long thin boxes crossing in an X: their axis-aligned footprints overlap a lot, the rotated ones barely
    boxes = torch.tensor([[10.0, 0, -1, 6.0, 0.5, 1.5, math.pi / 4], [10.0, 0, -1, 6.0, 0.5, 1.5, -math.pi / 4 + 1e-3],
                          [10.2, 0.1, -1, 6.0, 0.5, 1.5, math.pi / 4],  # a near duplicate of the first
                          [30.0, 5, -1, 3.9, 1.6, 1.5, 0.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.zeros(4, dtype=torch.long)
    keep = rotated_nms(boxes, scores, labels, 0.25)
    assert keep.tolist() == [0, 1, 3]
    aligned = batched_nms(nearest_bev_boxes(boxes), scores, labels, 0.25)
    assert 1 not in aligned.tolist()  # the axis-aligned approximation suppresses the crossing box
    # different classes never suppress each other
    assert rotated_nms(boxes[:3], scores[:3], torch.tensor([0, 1, 1]), 0.25).tolist() == [0, 1, 2]
    cfg = StreamDSGNConfig.tiny(nms_rotated=True)
    anchors, _ = make_anchors(cfg)
    n = anchors.shape[0]
    cls = torch.full((1, n, 3), -10.0)
    cls[0, 100, 0], cls[0, 101, 0] = 3.0, 2.0
    det = decode_predictions({"cls": cls, "box": torch.zeros(1, n, 7), "dir": torch.zeros(1, n, 2)}, anchors, cfg)[0]
    assert len(det["scores"]) >= 1 and det["scores"][0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())

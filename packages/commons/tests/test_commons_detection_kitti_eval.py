import time

import numpy as np
import pytest

from commons.metrics.detection import kitti_eval


def _car(x, y=0.0):
    return [x, y, -0.8, 3.9, 1.6, 1.5, 0.0]


def _gt(boxes, labels=None, height=50.0, occ=0, trunc=0, names=None):
    n = len(boxes)
    g = {"boxes": np.array(boxes, dtype=np.float64).reshape(-1, 7),
         "labels": np.zeros(n, np.int64) if labels is None else np.array(labels),
         "bbox_height": np.full(n, height) if np.ndim(height) == 0 else np.array(height, dtype=float),
         "occluded": np.full(n, occ), "truncated": np.full(n, trunc)}
    if names is not None:
        g["names"] = names
    return g


def _det(boxes, scores, labels=None, **kw):
    n = len(boxes)
    d = {"boxes": np.array(boxes, dtype=np.float64).reshape(-1, 7), "scores": np.array(scores, dtype=np.float64),
         "labels": np.zeros(n, np.int64) if labels is None else np.array(labels)}
    d.update(kw)
    return d


def test_devkit_quirk_exactly_40_gt():
    # the devkit's recall sampling never reaches its 41st slot with exactly 40 GT: perfect detection -> 97.5
    gts = [_gt([_car(10)]) for _ in range(40)]
    assert kitti_eval(gts, [_det(g["boxes"], [0.9]) for g in gts], classes=("Car",))["Car"]["bev_R40"]["easy"] == \
        pytest.approx(97.5)


def test_perfect_detections_and_missing_class():
    gts = [_gt([_car(10 + i % 7)]) for i in range(45)]
    dets = [_det(g["boxes"], [0.9]) for g in gts]
    res = kitti_eval(gts, dets)
    for key in ("bev_R40", "bev_R11", "3d_R40", "3d_R11", "3d_R40_loose"):
        assert res["Car"][key]["moderate"] == pytest.approx(100.0)
    assert res["Car"]["num_gt"] == {"easy": 45, "moderate": 45, "hard": 45}
    assert np.isnan(res["Pedestrian"]["3d_R40"]["moderate"])  # no counted GT


def test_devkit_recall_sampling_hand_computed():
    # 40 GT, 20 found with high scores, 20 false positives below every true positive:
    # one threshold per TP (20), precision 1 at each -> R40 = 19/40 (slots 1..19), R11 = 5/11 (slots 0,4,..,16)
    gts = [_gt([_car(10)]) for _ in range(40)]
    dets = [_det([_car(10)], [0.99 - i * 0.01]) if i < 20 else _det([_car(30)], [0.1]) for i in range(40)]
    r = kitti_eval(gts, dets, classes=("Car",))["Car"]
    assert r["bev_R40"]["easy"] == pytest.approx(100 * 19 / 40)
    assert r["bev_R11"]["easy"] == pytest.approx(100 * 5 / 11)
    # 10 false positives ABOVE the true positives: precision at the k-th TP is (k+1)/(k+11), max-interpolated 2/3
    dets = [_det([_car(10)], [0.5 - i * 0.01]) if i < 20 else _det([_car(30)], [0.9]) for i in range(40)]
    dets = dets[:30]
    r = kitti_eval(gts[:30], dets, classes=("Car",))["Car"]  # 30 GT: 20 found; 10 frames with only an FP
    # recall thresholds with 30 GT: every TP kept (20) -> slots 1..19 at 2/3, slots 0,4,..,16 at 2/3
    assert r["3d_R40"]["easy"] == pytest.approx(100 * 19 * (2 / 3) / 40)
    assert r["3d_R11"]["easy"] == pytest.approx(100 * 5 * (2 / 3) / 11)


def test_ignored_ground_truth_is_neither_tp_nor_fp():
    # 50 GT: enough for the devkit's 41 recall slots (with exactly 40 perfectly found GT it reports 97.5)
    base_g = [_gt([_car(10)]) for _ in range(50)]
    base_d = [_det([_car(10)], [0.8]) for _ in range(50)]
    # a Van (named) detected as a Car with the top score: ignored for Car, AP stays 100
    g = base_g + [_gt([_car(20)], names=["Van"])]
    d = base_d + [_det([_car(20)], [0.95])]
    assert kitti_eval(g, d, classes=("Car",))["Car"]["bev_R40"]["moderate"] == pytest.approx(100.0)
    # the same detection on a DontCare-free empty frame is a false positive at the top: AP drops
    g_fp = base_g + [_gt([])]
    res_fp = kitti_eval(g_fp, d, classes=("Car",))["Car"]["bev_R40"]["moderate"]
    assert res_fp < 99.0
    # a GT too small for 'easy' (30 px) but fine for 'moderate': detected with the top score
    g = base_g + [_gt([_car(20)], height=30.0)]
    r = kitti_eval(g, d, classes=("Car",))["Car"]
    assert r["num_gt"]["easy"] == 50 and r["num_gt"]["moderate"] == 51
    assert r["bev_R40"]["easy"] == pytest.approx(100.0) and r["bev_R40"]["moderate"] == pytest.approx(100.0)
    # tracking-style integer truncation 1 is ignored at every difficulty (KITTI tracking quirk, notes B7.6)
    g = base_g + [_gt([_car(20)], trunc=1)]
    assert kitti_eval(g, d, classes=("Car",))["Car"]["num_gt"]["hard"] == 50
    # a DontCare row (names) has no 3D box and is simply dropped
    g = base_g + [_gt([_car(20), [0, 0, 0, 0, 0, 0, 0]], labels=[0, -1], names=["Car", "DontCare"])]
    assert kitti_eval(g, base_d + [_det([_car(20)], [0.9])], classes=("Car",))["Car"]["num_gt"]["easy"] == 51


def test_small_detections_are_ignored_and_loose_threshold():
    g = [_gt([_car(10)]) for _ in range(50)] + [_gt([])]
    d = [_det([_car(10)], [0.8], bbox_height=np.array([50.0])) for _ in range(50)]
    d.append(_det([_car(30)], [0.95], bbox_height=np.array([20.0])))  # unmatched but lower than 25 px: ignored
    assert kitti_eval(g, d, classes=("Car",))["Car"]["bev_R40"]["moderate"] == pytest.approx(100.0)
    # a box shifted by 1.3 m along x: BEV IoU (3.9-1.3)/(3.9+1.3) = 0.5 -> fails 0.7, and fails 0.5 (strictly above)
    # shifted by 1.0 m: IoU 2.9/4.9 = 0.59 -> fails 0.7, passes the loose 0.5
    g = [_gt([_car(10)]) for _ in range(50)]
    d = [_det([_car(11.0)], [0.8]) for _ in range(50)]
    r = kitti_eval(g, d, classes=("Car",))["Car"]
    assert r["bev_R40"]["easy"] == 0.0 and r["bev_R40_loose"]["easy"] == pytest.approx(100.0)
    d = [_det([_car(11.3)], [0.8]) for _ in range(50)]
    assert kitti_eval(g, d, classes=("Car",))["Car"]["bev_R40_loose"]["easy"] == 0.0
    with pytest.raises(ValueError):
        kitti_eval(g, d[:3])


def test_kitti_eval_speed_400_frames():
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(400):
        n = 8
        boxes = np.column_stack([rng.uniform(2, 50, n), rng.uniform(-20, 20, n), np.full(n, -0.8),
                                 np.full(n, 3.9), np.full(n, 1.6), np.full(n, 1.5), rng.uniform(-3, 3, n)])
        gts.append(_gt(boxes, labels=rng.integers(0, 3, n), height=rng.uniform(10, 80, n)))
        noisy = boxes + rng.normal(0, 0.2, boxes.shape) * [1, 1, 0.3, 0.1, 0.1, 0.1, 0.1]
        extra = boxes[:4] + [5, 5, 0, 0, 0, 0, 0]
        dets.append(_det(np.concatenate([noisy, extra]), rng.uniform(0, 1, n + 4),
                         labels=np.concatenate([gts[-1]["labels"], rng.integers(0, 3, 4)])))
    t = time.perf_counter()
    res = kitti_eval(gts, dets)
    elapsed = time.perf_counter() - t
    assert 0 < res["Car"]["bev_R40_loose"]["moderate"] <= 100
    assert elapsed < 10, elapsed  # ~0.5 s CPU on the dev machine (1.2 s for 1000 frames)


def test_torch_inputs_give_the_same_result():
    import torch

    gts = [_gt([_car(10 + i % 5), _car(30, 5.0)], labels=[0, 1]) for i in range(45)]
    dets = [_det(g["boxes"] + 0.1, [0.9, 0.4], labels=[0, 1]) for g in gts]
    ref = kitti_eval(gts, dets)
    tg = [{k: torch.as_tensor(v) for k, v in g.items()} for g in gts]
    td = [{k: torch.as_tensor(v) for k, v in d.items()} for d in dets]
    out = kitti_eval(tg, td)
    assert out["Car"]["3d_R40"] == ref["Car"]["3d_R40"] and out["Pedestrian"]["bev_R11"] == ref["Pedestrian"]["bev_R11"]

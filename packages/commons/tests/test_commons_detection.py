import numpy as np
import pytest

from commons.metrics.detection import average_precision, iou_3d, iou_bev, match_detections


def test_iou_identical_and_disjoint():
    b = np.array([[0, 0, 0, 4, 2, 1.5, 0.3]])
    assert iou_bev(b, b)[0, 0] == pytest.approx(1.0)
    assert iou_3d(b, b)[0, 0] == pytest.approx(1.0)
    far = b.copy()
    far[0, 0] = 50
    assert iou_bev(b, far)[0, 0] == 0.0


def test_iou_hand_computed_shift_and_rotation():
    a = np.array([[0, 0, 0, 2, 2, 2, 0.0]])
    b = np.array([[1, 0, 0, 2, 2, 2, 0.0]])  # overlap 1x2 = 2, union 6
    assert iou_bev(a, b)[0, 0] == pytest.approx(2 / 6)
    c = np.array([[0, 0, 1, 2, 2, 2, 0.0]])  # height overlap 1 -> inter 4, union 12
    assert iou_3d(a, c)[0, 0] == pytest.approx(4 / 12)
    # unit square rotated 45 deg about its centre: intersection octagon area 2*(sqrt2-1)
    s = np.array([[0, 0, 0, 1, 1, 1, 0.0]])
    r = np.array([[0, 0, 0, 1, 1, 1, np.pi / 4]])
    inter = 2 * (np.sqrt(2) - 1)
    assert iou_bev(s, r)[0, 0] == pytest.approx(inter / (2 - inter), rel=1e-9)


def test_ap_hand_computed():
    # perfect detections -> 1
    assert average_precision([1, 1, 1, 1], 4) == pytest.approx(1.0)
    # TP, FP, TP with 2 GT: recall 0.5 at precision 1, recall 1 at precision 2/3
    ap40 = average_precision([1, 0, 1], 2, "R40")
    assert ap40 == pytest.approx((20 * 1.0 + 20 * (2 / 3)) / 40)
    ap11 = average_precision([1, 0, 1], 2, "R11")
    assert ap11 == pytest.approx((6 * 1.0 + 5 * (2 / 3)) / 11)
    # half the GT never found
    assert average_precision([1], 2, "R40") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        average_precision([1], 2, "R7")


def test_matching_one_gt_per_detection():
    ious = np.array([[0.9], [0.8]])
    tp, s = match_detections([0.5, 0.9], ious, 0.7)
    assert tp.tolist() == [True, False] and s.tolist() == [0.9, 0.5]


def test_kitti_difficulty_mask_nested_levels():
    from commons.metrics.detection import kitti_difficulty_mask

    h, occ, tr = [50, 30, 30, 20], [0, 1, 2, 0], [0.0, 0.2, 0.4, 0.0]
    assert kitti_difficulty_mask(h, occ, tr, "easy").tolist() == [True, False, False, False]
    assert kitti_difficulty_mask(h, occ, tr, "moderate").tolist() == [True, True, False, False]
    assert kitti_difficulty_mask(h, occ, tr, "hard").tolist() == [True, True, True, False]
    with pytest.raises(ValueError):
        kitti_difficulty_mask(h, occ, tr, "extreme")


def test_vectorised_bev_intersection_matches_polygon_clipping():
    from commons.metrics.detection import _bev_intersections, _inter_bev

    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(-3, 3, 60), rng.uniform(-3, 3, 60), np.zeros(60), rng.uniform(0.5, 5, 60),
                         rng.uniform(0.5, 3, 60), np.ones(60), rng.uniform(-np.pi, np.pi, 60)])
    a[:5, 6] = [0, np.pi / 2, np.pi / 4, 0, np.pi]  # axis-aligned and coincident edges
    b = a.copy()
    b[:30, :2] += rng.normal(0, 1, (30, 2))
    b[30:, 6] += rng.uniform(-0.5, 0.5, 30)
    b[3] = a[3]  # identical box
    got = _bev_intersections(a, b)
    ref = np.array([[_inter_bev(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, ref, atol=1e-9)
    assert got[3, 3] == pytest.approx(a[3, 3] * a[3, 4]) and (got > 0).mean() > 0.3

import numpy as np
import pytest

from commons.metrics.streaming import select_latest_outputs, streaming_ap


def _scene(n=20, speed=3.0, dt=0.1):
    # one car moving along x at `speed` cells/frame (3 m per 0.1 s frame -> disjoint after one frame)
    times = [i * dt for i in range(n)]
    boxes = [np.array([[i * speed, 0, 0, 2.0, 1.0, 1.5, 0.0]]) for i in range(n)]
    return times, boxes


def test_select_latest_outputs():
    assert select_latest_outputs([0.0, 0.1, 0.25], [0.05, 0.2]) == [None, 0, 1]


def test_streaming_ap_drops_with_known_lag():
    times, boxes = _scene()
    scores = [np.array([0.9]) for _ in boxes]
    ap0 = streaming_ap(boxes, times, boxes, scores, times)  # zero latency: perfect
    assert ap0 == pytest.approx(1.0)
    lagged = [t + 0.1 for t in times]  # one frame late: every output describes the previous frame
    ap1 = streaming_ap(boxes, times, boxes, scores, lagged)
    assert ap1 == pytest.approx(0.0)
    # a forecaster that predicts the next frame's box and is one frame late is perfect again (except frame 0)
    forecast = [b + np.array([3.0, 0, 0, 0, 0, 0, 0]) for b in boxes]
    ap_f = streaming_ap(boxes, times, forecast, scores, lagged)
    assert 0.9 < ap_f < 1.0

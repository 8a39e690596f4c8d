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


def test_simulate_stream_hand_schedules():
    from commons.metrics.streaming import simulate_stream

    times = [k * 0.1 for k in range(12)]  # 10 Hz
    # 150 ms: frame 0 done at .15 -> latest arrived is 1 (.1); done .30 -> 3 (arrives exactly at .3); .45 -> 4;
    # .60 -> 6; .75 -> 7; .90 -> 9; 1.05 -> 10; 1.20 -> 11 (last) -> done 1.35, stop
    p, f = simulate_stream(times, 0.15)
    assert p.tolist() == [0, 1, 3, 4, 6, 7, 9, 10, 11]
    np.testing.assert_allclose(f, [0.15 * (i + 1) for i in range(9)])
    # 250 ms: 0 -> .25 (frame 2) -> .50 (5) -> .75 (7) -> 1.00 (10) -> 1.25 (11 arrived at 1.1) -> 1.50
    p, f = simulate_stream(times, 0.25)
    assert p.tolist() == [0, 2, 5, 7, 10, 11] and f[-1] == pytest.approx(1.5)
    # faster than the frame rate: every frame, finishing latency after its arrival (idle in between)
    p, f = simulate_stream(times, 0.04)
    assert p.tolist() == list(range(12))
    np.testing.assert_allclose(f, np.array(times) + 0.04)
    # measured latencies used in order: 50 ms, 270 ms, 50 ms, ...
    # 0 -> .05 (nothing new: idle) -> 1 at .1 -> .37 (2 skipped) -> 3 -> .42 -> 4 -> .69 (5 skipped) -> 6 -> .74
    # -> 7 -> 1.01, nothing newer: stop
    p, f = simulate_stream(times[:8], [0.05, 0.27], draw="cycle")
    assert p.tolist() == [0, 1, 3, 4, 6, 7]
    np.testing.assert_allclose(f, [0.05, 0.37, 0.42, 0.69, 0.74, 1.01])


def test_simulate_stream_random_draws_are_seeded():
    from commons.metrics.streaming import simulate_stream

    times = [k * 0.1 for k in range(40)]
    a = simulate_stream(times, [0.05, 0.12, 0.3], seed=3)
    b = simulate_stream(times, [0.05, 0.12, 0.3], seed=3)
    assert a[0].tolist() == b[0].tolist()
    draws = np.diff(np.concatenate([[0.0], a[1]]))  # each gap is >= the latency drawn (idle adds to it)
    assert np.all(draws >= 0.05 - 1e-9)
    calls = []
    p, f = simulate_stream(times, lambda r: calls.append(1) or 0.15, seed=0)
    assert len(calls) == len(p) and np.all(np.diff(f) > 0) and np.all(np.diff(p) > 0)
    with pytest.raises(ValueError):
        simulate_stream(times, -0.1)
    with pytest.raises(ValueError):
        simulate_stream([0.2, 0.1], 0.1)


def test_streaming_pipeline_simulate_select_kitti_eval():
    """End to end: simulated latency -> latest finished output at each GT time -> devkit AP."""
    from commons.metrics.detection import kitti_eval
    from commons.metrics.streaming import simulate_stream

    n = 60
    times = [k * 0.1 for k in range(n)]

    def car(k):  # one car moving 3 m per frame: boxes one frame apart do not overlap enough (IoU 0.13)
        return np.array([[10.0 + 3.0 * k, 0.0, -0.8, 3.9, 1.6, 1.5, 0.0]])

    gts = [{"boxes": car(k), "labels": np.array([0]), "bbox_height": np.array([60.0]), "occluded": np.array([0]),
            "truncated": np.array([0])} for k in range(n)]
    empty = {"boxes": np.zeros((0, 7)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}

    def streamed(outputs, latency):
        processed, finish = simulate_stream(times, latency)
        chosen = select_latest_outputs(times, finish)
        return [outputs[processed[j]] if j is not None else empty for j in chosen]

    current = [{"boxes": car(k), "labels": np.array([0]), "scores": np.array([0.9])} for k in range(n)]
    forecast = [{"boxes": car(k + 1), "labels": np.array([0]), "scores": np.array([0.9])} for k in range(n)]
    ap = {}
    for name, outs in (("current", current), ("forecast", forecast)):
        for lat in (0.05, 0.15):
            ap[name, lat] = kitti_eval(gts, streamed(outs, lat), classes=("Car",))["Car"]["bev_R40_loose"]["easy"]
    offline = kitti_eval(gts, current, classes=("Car",))["Car"]["bev_R40"]["easy"]
    assert offline == pytest.approx(100.0)
    # 50 ms < one frame: the output of frame k-1 is scored at time k -> a non-forecasting detector finds nothing
    assert ap["current", 0.05] == 0.0
    # ... while a next-frame forecaster is right everywhere except frame 0 (no output yet): 59 of 60
    assert ap["forecast", 0.05] > 90.0
    # 150 ms: an output of frame j is available at j*0.1 + 0.15, so at GT time k it comes from j <= k - 2 and its
    # one-frame forecast is still a frame behind -> nothing matches (the notes' "latency must stay under 100 ms")
    assert ap["forecast", 0.15] == 0.0

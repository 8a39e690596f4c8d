"""The Kalman-filter forecaster (Li et al.'s streaming baseline): it recovers a constant velocity, keeps objects apart
by class and gate, and on constructed moving objects its forecasts score far above copying the last detections."""

import numpy as np
import pytest

from streamdsgn.forecast import KalmanBoxForecaster


def _frames(n=12, speeds=((15.0, 0.0), (-8.0, 1.0)), noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = 0.1 * k
        boxes = np.array([[10.0 + vx * t, -4.0 + 8.0 * i + vy * t, -0.9, 3.9, 1.6, 1.5, 0.0]
                          for i, (vx, vy) in enumerate(speeds)])
        det = boxes.copy()
        det[:, :2] += rng.normal(0, noise, (len(det), 2))
        out.append((t, {"boxes": boxes, "labels": np.zeros(len(boxes), np.int64)},
                    {"boxes": det, "scores": np.array([0.9, 0.8]), "labels": np.zeros(len(det), np.int64)}))
    return out


def test_kalman_recovers_constant_velocity_and_forecasts():
    kf = KalmanBoxForecaster()
    frames = _frames()
    for t, _, det in frames[:5]:
        kf.update(t, det)
    p = kf.predict(frames[4][0] + 0.3)
    truth = frames[4][1]["boxes"].copy()
    truth[:, 0] += np.array([15.0, -8.0]) * 0.3
    truth[:, 1] += np.array([0.0, 1.0]) * 0.3
    order = np.argsort(-p["scores"])
    assert np.abs(p["boxes"][order, :2] - truth[:, :2]).max() < 0.15  # 5 exact measurements: velocity ~exact
    assert np.allclose(p["boxes"][:, 2:], frames[4][2]["boxes"][order][:, 2:])
    # a detection of another class never joins the track; a far one starts a new track
    kf.update(0.5, {"boxes": frames[5][2]["boxes"][:1], "scores": np.array([0.9]), "labels": np.array([1])})
    assert sorted(kf.state()["label"].tolist()) == [1]
    with pytest.raises(ValueError):
        KalmanBoxForecaster(meas_std=0.0)


def test_kalman_forecast_beats_copy_on_moving_objects():
    """Scored against the next frame (100 ms later), the Kalman forecasts of noisy detections keep the cars at
    IoU 0.7 where copying the last detections (the cars moved 1.5 m / 0.8 m) fails."""
    from commons.metrics.detection import kitti_eval

    frames = _frames(n=60, noise=0.05)
    kf = KalmanBoxForecaster()
    gts, copy, fore = [], [], []
    for k in range(len(frames) - 1):
        t, _, det = frames[k]
        kf.update(t, det)
        gts.append(frames[k + 1][1])
        copy.append(det)
        fore.append(kf.predict(t + 0.1))
    ap_copy = kitti_eval(gts, copy)["Car"]["bev_R40"]["moderate"]
    ap_kf = kitti_eval(gts, fore)["Car"]["bev_R40"]["moderate"]
    assert ap_copy < 40.0 and ap_kf > ap_copy + 40.0, (ap_copy, ap_kf)


@pytest.mark.slow
def test_evaluate_with_forecaster_scores_the_same_stream(tmp_path):
    from commons.data.kitti_tracking import KittiTrackingStream
    from commons.data.synthetic_stereo import render_kitti_tracking
    from streamdsgn import StreamDSGN

    root = render_kitti_tracking(tmp_path, num_sequences=1, frames_per_sequence=12, image_size=(96, 320), seed=2)
    ds = KittiTrackingStream(root, split="all", clip_len=6, with_depth=False)
    det = StreamDSGN("tiny", device="cpu", seed=0, baseline=True, base_width=8, up_dims=(8, 4), slice_channels=4,
                     volume_channels=4, num_planes=12, van_stem=12, van_dim=16, bev_out=16, head_channels=16)
    res = det.evaluate(ds, latency=0.25, forecaster=KalmanBoxForecaster())
    assert set(res["kalman"]) == {"forecast", "streaming", "summary"}
    for mode in ("forecast", "streaming"):
        assert res["kalman"][mode]["Car"]["num_gt"] == res[mode]["Car"]["num_gt"]

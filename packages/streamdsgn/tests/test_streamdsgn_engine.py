"""Engine on the rendered synthetic default: training reduces the loss, evaluation (offline / forecast / streaming),
detect with history, checkpoint resume, save/load, CLI, bad inputs."""

import json

import numpy as np
import pytest
import torch

from streamdsgn import StreamDSGN, TrainConfig

SLIM = dict(base_width=8, up_dims=(8, 4), slice_channels=4, volume_channels=4, num_planes=12, van_stem=12,
            van_dim=16, bev_out=16, head_channels=16)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from commons.data.synthetic_stereo import render_kitti_tracking

    return render_kitti_tracking(tmp_path_factory.mktemp("synth"), num_sequences=1, frames_per_sequence=24,
                                 image_size=(96, 320), seed=0)


@pytest.fixture(scope="module")
def stream(root):
    from commons.data.kitti_tracking import KittiTrackingStream

    return KittiTrackingStream(root, split="all", clip_len=12)


@pytest.mark.slow
def test_training_reduces_the_loss_and_fits_its_frames_far_above_chance(stream):
    """60 steps on 4 frames: the loss falls and the detector finds the next-frame cars of those frames (Car 3D AP at
    IoU 0.7), which an untrained model does not — an end-to-end check that image geometry, voxel grid, anchors, box
    coding and labels agree."""
    from commons.metrics.detection import kitti_eval
    from streamdsgn.data import gt_frame

    idx = list(stream.clip_frames(list(stream.scenes)[0]))[4:8]

    class Four(torch.utils.data.Dataset):
        def __len__(self):
            return len(idx)

        def __getitem__(self, k):
            return stream[idx[k]]

    def car_ap(det):
        det.reset()
        gts, dets = [], []
        for i in idx:
            s = stream[i]
            dets.append(det.detect_sample(s))
            gts.append(gt_frame(s["frames"]["next"], det.config.point_cloud_range))
        return kitti_eval(gts, dets, height_scale=320 / 1242)["Car"]["3d_R40"]["moderate"]

    det = StreamDSGN("tiny", device="cpu", seed=0, **SLIM)
    chance = car_ap(det)
    hist = det.fit(Four(), TrainConfig(epochs=15, lr=5e-3, log_every=1, seed=0), progress=False)
    first, last = np.mean(hist["loss"][:4]), np.mean(hist["loss"][-4:])
    assert np.isfinite(hist["loss"]).all()
    assert last < 0.5 * first, (first, last)
    parts = hist["parts"][-1]
    assert {"cls", "loc", "dir", "iou", "mcl", "depth", "total"} <= set(parts)
    assert parts["depth"] > 0 and parts["mcl"] > 0  # LiDAR depth and 3-frame tracks are present
    fitted = car_ap(det)
    assert chance < 2.0 and fitted > 10.0, (chance, fitted)  # percent; measured ~0 and ~24 when written


def test_evaluate_detect_and_streaming_with_history(stream):
    det = StreamDSGN("tiny", device="cpu", seed=0, **SLIM)
    scene = list(stream.scenes)[0]
    res = det.evaluate(stream, latency=0.05, scenes=[scene], score_threshold=0.05)
    assert res["frames"] == len(list(stream.clip_frames(scene)))
    assert res["processed_fraction"] == 1.0  # 50 ms < the 100 ms frame interval
    for mode in ("offline", "forecast", "streaming"):
        assert "Car" in res[mode] and 0.0 <= res["summary"][mode]["Car"] <= 100.0  # percent
    assert 0.0 <= res["streaming_ap_all_gt"]["Car"] <= 100.0  # commons.metrics.streaming.streaming_ap cross-check
    slow = det.evaluate(stream, latency=0.25, scenes=[scene])
    # 250 ms per frame at 10 Hz: frames 0, 2, 5, 7, 10, 11 of the 12 are processed (the latest arrived one each time)
    assert slow["processed_fraction"] == pytest.approx(6 / 12)
    # history: kept along a clip, cleared at a clip change / first frame
    idx = list(stream.clip_frames(scene))
    det.reset()
    det.detect_sample(stream[idx[0]])
    assert det._history is not None and det._history_scene == scene
    h0 = det._history.clone()
    det.detect_sample(stream[idx[1]])
    assert not torch.equal(det._history, h0)
    a = det.detect_sample(stream[idx[0]], score_threshold=0.0)  # first frame of the clip: history cleared
    det.reset()
    b = det.detect_sample(stream[idx[0]], score_threshold=0.0)
    assert np.allclose(a["scores"], b["scores"], atol=1e-6)


@pytest.mark.slow
def test_checkpoint_resume_matches_uninterrupted_run(stream, tmp_path):
    cfg = TrainConfig(epochs=2, samples_per_epoch=2, log_every=1, seed=1)
    full = StreamDSGN("tiny", device="cpu", seed=0, **SLIM)
    h_full = full.fit(stream, cfg, run_dir=tmp_path / "full", progress=False)
    part = StreamDSGN("tiny", device="cpu", seed=0, **SLIM)
    part.fit(stream, cfg, run_dir=tmp_path / "part", progress=False, stop_after=1)
    assert (tmp_path / "part" / "state.pt").exists() and not (tmp_path / "part" / "final").exists()
    resumed = StreamDSGN("tiny", device="cpu", seed=5, **SLIM)  # a different init: the state must overwrite it
    h_res = resumed.fit(stream, cfg, run_dir=tmp_path / "part", resume=True, progress=False)
    assert (tmp_path / "part" / "final" / "model.safetensors").exists()
    assert len(h_res["epoch_loss"]) == 2
    # same process, same CPU kernels, same sample order: the resumed run is the uninterrupted one, bit for bit
    assert h_res["loss"] == h_full["loss"]
    sd_a, sd_b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    loaded = StreamDSGN.load(tmp_path / "part" / "final", device="cpu")
    assert loaded.config == resumed.config
    # a resume with another schedule or model is refused, naming the setting, before the state is loaded
    part2 = StreamDSGN("tiny", device="cpu", seed=0, **SLIM)
    part2.fit(stream, cfg, run_dir=tmp_path / "part2", progress=False, stop_after=1)
    other = TrainConfig(epochs=2, samples_per_epoch=2, log_every=1, seed=1, lr=2e-3)
    with pytest.raises(ValueError, match="train_config lr=0.001"):
        StreamDSGN("tiny", device="cpu", seed=0, **SLIM).fit(stream, other, run_dir=tmp_path / "part2", resume=True,
                                                             progress=False)
    with pytest.raises(ValueError, match="model_config baseline=False"):
        StreamDSGN("tiny", device="cpu", seed=0, baseline=True, **SLIM).fit(
            stream, cfg, run_dir=tmp_path / "part2", resume=True, progress=False)
    more_logs = TrainConfig(epochs=2, samples_per_epoch=2, log_every=3, seed=1)  # exempt: logging only
    StreamDSGN("tiny", device="cpu", seed=0, **SLIM).fit(stream, more_logs, run_dir=tmp_path / "part2", resume=True,
                                                         progress=False)


@pytest.mark.slow
def test_cli_train_eval_detect(root, tmp_path, capsys):
    from streamdsgn.cli import main

    kw = json.dumps(SLIM)
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--split", "all", "--config-kw", kw, "--epochs", "1",
                 "--samples-per-epoch", "2", "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    assert (run / "final" / "config.json").exists()
    assert main(["train", "--data", str(root), "--split", "all", "--config-kw", kw, "--epochs", "1",
                 "--samples-per-epoch", "2", "--out", str(run), "--no-progress", "--device", "cpu",
                 "--resume"]) == 0  # already finished: resumes and does nothing more
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run / "final"), "--data", str(root), "--split", "all",
                 "--latency", "0.05", "--json", str(out_json), "--no-progress", "--device", "cpu"]) == 0
    assert "streaming" in json.loads(out_json.read_text())
    dets = tmp_path / "d.json"
    assert main(["detect", "--checkpoint", str(run / "final"), "--data", str(root), "--split", "all",
                 "--out", str(dets), "--device", "cpu", "--score-threshold", "0.0"]) == 0
    clips = json.loads(dets.read_text())["clips"]
    assert clips and all(len(f["boxes"]) == len(f["scores"]) for c in clips.values() for f in c)
    assert "streaming" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    for bad in ("abc", "-1", "0"):  # one usage line naming the argument, before any model is loaded
        with pytest.raises(SystemExit) as err:
            main(["eval", "--checkpoint", str(tmp_path / "none"), "--data", str(root), "--latency", bad])
        assert err.value.code == 2 and "argument --latency: expected 'measured'" in capsys.readouterr().err


def test_engine_bad_inputs(stream, tmp_path):
    with pytest.raises(ValueError, match="config"):
        StreamDSGN("huge")
    with pytest.raises(TypeError):
        StreamDSGN(3)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="int8")
    det = StreamDSGN("tiny", device="cpu", **SLIM)
    with pytest.raises(ValueError, match="latency"):
        det.evaluate(stream, latency=-1.0)
    with pytest.raises(ValueError, match="latency"):
        det.evaluate(stream, latency="fast")
    with pytest.raises(ValueError, match="sample"):
        det.detect_sample({"left": torch.zeros(3, 96, 320)})
    with pytest.raises(TypeError):
        det.fit(stream, config={"epochs": 1})
    with pytest.raises(ValueError, match="empty"):
        det.fit([], TrainConfig(epochs=1))
    (tmp_path / "ck").mkdir()
    with pytest.raises(Exception):
        StreamDSGN.load(tmp_path / "ck")


def test_bf16_autocast_training_and_inference(stream):
    det = StreamDSGN("tiny", device="cpu", seed=0, **SLIM)
    hist = det.fit(stream, TrainConfig(epochs=1, samples_per_epoch=2, log_every=1, mixed_precision="bf16"),
                   progress=False)
    assert np.isfinite(hist["loss"]).all()
    idx = list(stream.clip_frames(list(stream.scenes)[0]))
    det.inference_dtype = "bf16"
    det.reset()
    a = det.detect_sample(stream[idx[0]], score_threshold=0.0)
    det.inference_dtype = "fp32"
    det.reset()
    b = det.detect_sample(stream[idx[0]], score_threshold=0.0)
    assert np.isfinite(a["scores"]).all() and len(a["scores"]) > 0
    # bf16 keeps ~3 significant digits: the top scores agree closely with fp32
    assert abs(float(a["scores"].max()) - float(b["scores"].max())) < 0.05


def test_batches_mix_items_with_and_without_history(stream, tmp_path):
    from streamdsgn.data import collate
    from streamdsgn.viz import plot_bev

    idx = list(stream.clip_frames(list(stream.scenes)[0]))
    batch = collate([stream[idx[0]], stream[idx[3]]])  # the first frame of a clip has no prev / prev2
    assert batch["frames"]["prev"]["valid"].tolist() == [False, True]
    assert batch["frames"]["token"]["left"].shape == (2, 3, 96, 320)
    det = StreamDSGN("tiny", device="cpu", seed=0, **SLIM)
    hist = det.fit(stream, TrainConfig(epochs=1, batch_size=2, samples_per_epoch=4, log_every=1), progress=False)
    assert len(hist["loss"]) == 2 and np.isfinite(hist["loss"]).all()
    s = stream[idx[3]]
    d = det.detect_sample(s, score_threshold=0.0)
    png = plot_bev(tmp_path / "bev.png", [{"title": "t", "det": d, "gt": {"boxes": s["frames"]["token"]["boxes"]}}],
                   det.config.point_cloud_range, min_score=0.2)
    assert png.exists() and png.stat().st_size > 1000
    with pytest.raises(ValueError, match="at least one"):
        collate([])

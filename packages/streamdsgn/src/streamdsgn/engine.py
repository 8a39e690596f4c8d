"""Training, evaluation and streaming inference: :class:`StreamDSGN` (``fit`` / ``evaluate`` / ``detect`` /
``save`` / ``load``), exported as ``streamdsgn.StreamDSGN``.

Training (notes B5–B6): one token frame per sample with its ``prev`` stereo pair (through the same extractor, with
gradients, for the feature-flow fusion), boxes supervised with the **next** frame's ground truth, the current frame's
LiDAR depth for the depth loss, and ``prev``/``prev2`` boxes (matched by track id) for the motion-consistency loss.
The baseline (``config.baseline=True``) drops fusion, supervises the current frame and has no MCL. A sample without
the supervision frame (the last frame of a clip) is replaced by the preceding one.
Optimiser: OpenPCDet ``adam_onecycle`` — Adam with decoupled weight decay 0.01 (``AdamW``), one-cycle
cosine LR from ``lr/div_factor`` up to ``lr`` over ``pct_start`` of the steps and down to ``lr/div_factor/1e4``,
β1 cycling 0.95 → 0.85 → 0.95, β2 0.99; gradient clipping at 10. Multi-GPU through
:class:`commons.device.TrainingBackend` (``accelerate launch``; each process takes every ``num_processes``-th sample
of the epoch's order, which is padded by wrapping around so that every process makes the same number of steps).
A resumable state (model, optimiser, epoch, history) is written atomically after every epoch.

Evaluation (B7): the detector runs over each clip in time order with its BEV history (cleared at a clip change).
``offline`` AP scores every frame's output against the same frame's ground truth (the released ``offline_3d``);
``forecast`` AP against the next frame's (what the streaming model is trained for); ``streaming`` AP simulates the
stream (:func:`commons.metrics.streaming.simulate_stream`) with measured or given latencies, runs the model only on the
frames it would have processed (history = the last processed frame), and scores each ground-truth timestamp with the
latest finished output (``copy``), all through :func:`commons.metrics.detection.kitti_eval`. Ground truth outside the
detection range (``point_cloud_range``) is dropped before scoring.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .boxes import (
    assign_targets,
    clip_to_window,
    decode_boxes,
    decode_predictions,
    default_height_scale,
    direction_targets,
    image_window,
    make_anchors,
    project_boxes_to_image,
)
from .data import collate, filter_boxes_in_range, gt_frame
from .losses import (
    LossWeights,
    box_regression_loss,
    depth_loss,
    direction_loss,
    iou3d_loss,
    motion_consistency_loss,
    sigmoid_focal_loss,
)
from .models import StreamDSGNConfig, StreamDSGNModel
from .training import FitLoop, TrainConfig, one_cycle

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "StreamDSGN", "one_cycle", "WEIGHTS_DIR", "DEFAULT_WEIGHTS"]

#: Folder of the shipped weights (``streamdsgn.safetensors`` + its model card ``streamdsgn.json``), written by
#: ``tools/streamdsgn_train.py``.
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "streamdsgn.safetensors"
#: post-processing fields: not part of the trained weights, so a loaded card takes the current defaults for them
_POSTPROCESS = ("score_threshold", "nms_iou", "nms_pre", "nms_post", "nms_rotated")


def _scene_list(dataset) -> list[str]:
    scenes = getattr(dataset, "scenes", None)
    if callable(scenes):
        scenes = scenes()
    if scenes is None:
        raise TypeError("dataset must provide .scenes and .clip_frames(scene) (commons KittiTrackingStream)")
    return list(scenes)


class StreamDSGN:
    """StreamDSGN with a small surface.

    Args:
        config: a :class:`StreamDSGNConfig`, a preset name (``"tiny"``, ``"kitti"``) or a dict of fields.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        seed: seeds the initialisation.
        **overrides: config fields overriding the preset (e.g. ``baseline=True``).
    """

    def __init__(self, config: StreamDSGNConfig | str | dict = "tiny", device: str = "auto", seed: int = 0,
                 **overrides):
        from commons.device import resolve_device, seed_everything

        if isinstance(config, str):
            if config not in ("tiny", "kitti"):
                raise ValueError(f"config must be 'tiny', 'kitti', a dict or a StreamDSGNConfig, got {config!r}")
            config = getattr(StreamDSGNConfig, config)(**overrides)
        elif isinstance(config, dict):
            config = StreamDSGNConfig.from_dict({**config, **overrides})
        elif isinstance(config, StreamDSGNConfig):
            if overrides:
                config = StreamDSGNConfig.from_dict({**config.to_dict(), **overrides})
        else:
            raise TypeError(f"config must be a StreamDSGNConfig, preset name or dict, got {type(config).__name__}")
        seed_everything(seed)
        self.config = config
        self.model = StreamDSGNModel(config)
        self.device = resolve_device(device)
        self.model.to(self.device)
        self._anchors: tuple | None = None
        self._history: torch.Tensor | None = None
        self._history_scene = None
        self.latencies: list[float] = []
        self.card: dict | None = None  # the model card of weights loaded with pretrained()
        self.inference_dtype: str = "fp32"  # "bf16"/"fp16": detect under autocast (the released code tests with AMP)

    # ------------------------------------------------------------------------------------------------ helpers
    def anchors(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        device = device or self.device
        if self._anchors is None or self._anchors[0].device != torch.device(device):
            self._anchors = make_anchors(self.config, device)
        return self._anchors

    def _targets(self, boxes: list, labels: list, device) -> dict:
        anchors, anchor_cls = self.anchors(device)
        outs = []
        for bx, lb in zip(boxes, labels):
            keep = filter_boxes_in_range(bx, self.config.point_cloud_range)
            outs.append(assign_targets(anchors, anchor_cls, bx[keep].to(device), lb[keep].to(device), self.config))
            outs[-1]["gt_boxes"] = bx[keep].to(device)
            outs[-1]["gt_keep"] = torch.nonzero(keep, as_tuple=True)[0]
        return {k: [o[k] for o in outs] for k in outs[0]}

    def compute_losses(self, preds: dict, batch: dict, weights: LossWeights) -> dict:
        """All losses of one batch (see :mod:`streamdsgn.losses`); ``total`` is the weighted sum."""
        cfg = self.config
        dev = preds["cls"].device
        streaming = not cfg.baseline
        sup_tag = "next" if streaming else "token"
        sup = batch["frames"][sup_tag]
        tg = self._targets(sup["boxes"], sup["labels"], dev)
        labels = torch.stack(tg["labels"])
        box_t = torch.stack(tg["box_targets"])
        anchors, _ = self.anchors(dev)
        out = {"cls": sigmoid_focal_loss(preds["cls"], labels, cfg.num_classes,
                                         pos_normalizer_min=weights.pos_normalizer_min),
               "loc": box_regression_loss(preds["box"], box_t, labels, pos_normalizer_min=weights.pos_normalizer_min)}
        dir_t = direction_targets(anchors[None].expand_as(box_t), box_t, cfg.dir_offset, cfg.num_dir_bins)
        out["dir"] = direction_loss(preds["dir"], dir_t, labels, pos_normalizer_min=weights.pos_normalizer_min)
        b = labels.shape[0]
        iou_terms, mcl_terms = [], []
        for i in range(b):
            pos = torch.nonzero(labels[i] > 0, as_tuple=True)[0]
            norm = max(float(len(pos)), weights.pos_normalizer_min)
            pred_boxes = decode_boxes(preds["box"][i][pos].float(), None, anchors[pos], cfg)
            gt_idx = tg["gt_index"][i][pos]
            if weights.iou > 0:
                iou_terms.append(iou3d_loss(pred_boxes, tg["gt_boxes"][i][gt_idx], norm))
            if streaming and weights.mcl > 0:
                mcl_terms.append(self._mcl(pred_boxes, gt_idx, tg["gt_keep"][i], batch, i, weights, norm))
        zero = preds["cls"].sum() * 0.0
        out["iou"] = torch.stack(iou_terms).sum() / b if iou_terms else zero
        out["mcl"] = torch.stack(mcl_terms).sum() / b if mcl_terms else zero
        depth = preds.get("depth_logits")
        tok = batch["frames"]["token"]
        if depth is not None and tok.get("depth") is not None:
            out["depth"] = depth_loss(depth, tok["depth"].to(dev), self.model.depth_bins())
        else:
            out["depth"] = zero
        out["total"] = (weights.cls * out["cls"] + weights.loc * out["loc"] + weights.dir * out["dir"]
                        + weights.iou * out["iou"] + weights.mcl * out["mcl"] + weights.depth * out["depth"])
        return out

    def _mcl(self, pred_boxes, gt_idx, gt_keep, batch, i, weights: LossWeights, norm: float) -> torch.Tensor:
        """Motion-consistency loss of item ``i``: positives whose next-frame target's track id also exists in the
        token, prev and prev2 frames (matched by id; the released code matches by IoU because its targets lost the
        id)."""
        frames = batch["frames"]
        zero = pred_boxes.sum() * 0.0
        if any(frames.get(t) is None or not bool(frames[t]["valid"][i]) for t in ("token", "prev", "prev2")):
            return zero
        ids_next = frames["next"]["track_ids"][i][gt_keep].to(gt_idx.device)[gt_idx]
        found = []
        for tag in ("token", "prev", "prev2"):
            tids = frames[tag]["track_ids"][i].to(gt_idx.device)
            eq = ids_next[:, None] == tids[None]
            found.append((eq.any(1), eq.float().argmax(1), frames[tag]["boxes"][i].to(pred_boxes.device)))
        ok = found[0][0] & found[1][0] & found[2][0] & (ids_next >= 0)
        if not ok.any():
            return zero
        g = [f[2][f[1][ok]] for f in found]
        return motion_consistency_loss(pred_boxes[ok], g[0], g[1], g[2], norm, weights.mcl_acc)

    # ------------------------------------------------------------------------------------------------ training
    def fit(self, dataset, config: TrainConfig | None = None, run_dir: str | os.PathLike | None = None,
            resume: bool = False, progress: bool = True, backend=None, stop_after: int | None = None,
            transform=None) -> dict:
        """Train on a :class:`KittiTrackingStream`-like dataset (``ds[i]`` → sample). With ``run_dir`` a resumable
        state is saved after every epoch (``run_dir/state.pt``) and the final weights to ``run_dir/final``;
        ``resume=True`` continues from the last finished epoch; ``stop_after`` ends this call after that many epochs.
        Samples are read (and augmented by ``transform``, e.g. :class:`streamdsgn.augment.StereoAugment`, called as
        ``transform(sample, rng)`` with a generator seeded by seed, epoch and index) in ``config.num_workers``
        DataLoader workers (:class:`streamdsgn.data.SupervisedSamples`); the sample order does not depend on the
        number of workers.
        Returns the history (per-step losses, per-epoch means). The loop's phases (resume, epoch, step,
        checkpoint) are :class:`streamdsgn.training.FitLoop`'s methods."""
        from tqdm.auto import tqdm

        from commons.device import TrainingBackend, seed_everything

        config = config or TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        n = len(dataset)
        if n == 0:
            raise ValueError("dataset is empty")
        seed_everything(config.seed)
        own_backend = backend is None
        if backend is None:
            backend = TrainingBackend(mixed_precision=config.mixed_precision, cpu=self.device.type == "cpu",
                                      device=self.device, use_accelerate=False)
        run = backend.open_run_dir(run_dir, resume)  # opened once, attached by the others
        loop = FitLoop(self, config, backend, run, n)
        if resume:
            loop.resume()
        loop.prepare()
        end_epoch = config.epochs if stop_after is None else min(config.epochs, loop.epoch + int(stop_after))
        bar = tqdm(total=loop.total, initial=loop.step_count,
                   desc="train " + ("baseline" if self.config.baseline else "streamdsgn"),
                   disable=not progress or not backend.is_main_process)
        while loop.epoch < end_epoch:
            t_start = time.perf_counter()
            batches = loop.epoch_batches(dataset, transform)
            losses = []
            for s in range(loop.steps_per_epoch):
                parts, lr = loop.step(batches, bar)
                losses.append(parts["total"])
                loop.log(parts, lr, s == loop.steps_per_epoch - 1, bar)
            loop.end_epoch(losses, time.perf_counter() - t_start)
        bar.close()
        history = loop.finish()
        if own_backend:
            backend.close()
        return history

    # ------------------------------------------------------------------------------------------------ inference
    def reset(self) -> None:
        """Forget the BEV history (a new clip)."""
        self._history, self._history_scene = None, None

    @torch.no_grad()
    def detect_sample(self, sample: dict, score_threshold: float | None = None) -> dict:
        """Detections ``{"boxes" [K, 7], "scores", "labels", "bbox" [K, 4], "bbox_height" [K]}`` (numpy) for one
        sample's token frame, using and updating the BEV history (cleared when the scene changes or the sample has no
        ``prev`` frame, as the released ``prev_sample_idx == ''`` rule). ``bbox`` is each 3D box projected into the
        left image, clipped to the original image (:func:`streamdsgn.boxes.image_window`; in input-crop pixels), the
        2D box the KITTI devkit's minimum-height rule reads. The latency of the call
        (CUDA-synchronised, including the 2D projection) is appended to ``self.latencies``."""
        if not isinstance(sample, dict) or "frames" not in sample:
            raise ValueError("sample must be a KittiTrackingStream sample dict")
        self.model.eval()
        scene = sample.get("scene")
        if scene != self._history_scene or sample["frames"].get("prev", "missing") is None:
            self.reset()
        batch = collate([sample])
        tok = batch["frames"]["token"]
        dev = self.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        calib = {k: v.to(dev) for k, v in batch["calib"].items()}
        from commons.device import autocast

        with autocast(dev, self.inference_dtype):
            out = self.model(tok["left"].to(dev), tok["right"].to(dev), calib, batch["fu_baseline"].to(dev),
                             prev_bev=self._history if self.model.streaming else None)
        det = decode_predictions(out, self.anchors(dev)[0], self.config, score_threshold)[0]
        # the 2D image box of every detection, for the devkit's minimum-height rule (as the released evaluation),
        # clipped to the original image (crop coordinates: negative above / left of a crop)
        det["bbox"] = clip_to_window(project_boxes_to_image(det["boxes"], {k: v[0] for k, v in batch["calib"].items()}),
                                     image_window(sample, self.config.image_size))
        det["bbox_height"] = det["bbox"][:, 3] - det["bbox"][:, 1]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.latencies.append(time.perf_counter() - t0)
        self._history, self._history_scene = out["bev"], scene
        return {k: v.numpy() for k, v in det.items()}

    def detect(self, samples, progress: bool = False) -> list[dict]:
        """Per-frame detections ``{"boxes" [K, 7], "scores" [K], "labels" [K]}`` (numpy) for samples in time order
        (a clip: a list of samples, or ``(dataset, indices)``). History is kept along the clip and cleared at a clip
        change."""
        from tqdm.auto import tqdm

        if isinstance(samples, tuple) and len(samples) == 2:
            ds, idx = samples
            samples = (ds[int(i)] for i in idx)
            total = len(idx)
        else:
            total = len(samples) if hasattr(samples, "__len__") else None
        return [self.detect_sample(s) for s in tqdm(samples, total=total, desc="detect", disable=not progress)]

    def measure_latency(self, sample: dict, frames: int = 30, warmup: int = 5) -> dict:
        """Median / mean / p90 seconds per frame over ``frames`` calls on one sample (history on), after warm-up."""
        self.reset()
        for _ in range(warmup):
            self.detect_sample(sample)
        self.latencies = []
        for _ in range(frames):
            self.detect_sample(sample)
        lat = np.asarray(self.latencies)
        return {"median_s": float(np.median(lat)), "mean_s": float(lat.mean()), "p90_s": float(np.quantile(lat, 0.9)),
                "frames": frames}

    def evaluate(self, dataset, latency: str | float | list = "measured", scenes: list[str] | None = None,
                 progress: bool = False, seed: int = 0, score_threshold: float | None = None,
                 height_scale: float | None = None, forecaster=None) -> dict:
        """Offline, forecast and streaming AP over the clips of ``dataset`` (see the module docstring).

        Args:
            latency: ``"measured"`` (this run's per-frame wall times without its very first frame, drawn per
                processed frame), a number of seconds, or a list of seconds to draw from.
            scenes: clips to evaluate (default: all of ``dataset.scenes``).
            height_scale: scales KITTI's 40 / 25 px minimum 2D-box heights of the difficulty levels (applied to the
                ground-truth label boxes and to the detections' projected 2D boxes); default
                :func:`streamdsgn.boxes.default_height_scale` of the first clip's calibration: 1.0 for KITTI-scale
                images (the 320×1248 crop is a crop, not a resize), ``f_u / 721.5377`` for the downscaled synthetic
                renders.
            forecaster: optional :class:`streamdsgn.forecast.KalmanBoxForecaster` (reset per clip) run on this
                detector's outputs, Li et al.'s streaming baseline for a non-streaming detector: ``result["kalman"]``
                then holds ``forecast`` (each frame's tracks extrapolated 0.1 s, vs the next frame) and
                ``streaming`` (the tracks after the latest finished output, extrapolated from that frame's time to
                each ground-truth timestamp) AP on the same simulated stream.
        Returns ``{"offline": kitti_eval result (AP in percent), "forecast": ..., "streaming": ..., "latency_s": {...},
        "frames": n, "processed_fraction": f, "summary": {...}}``.
        """
        from commons.metrics.detection import kitti_eval
        from commons.metrics.streaming import simulate_stream

        if not (latency == "measured" or isinstance(latency, (int, float, list, tuple))):
            raise ValueError(f"latency must be 'measured', seconds or a list of seconds, got {latency!r}")
        if isinstance(latency, (int, float)) and latency <= 0:
            raise ValueError(f"latency must be positive, got {latency}")
        scenes = scenes if scenes is not None else _scene_list(dataset)
        pcr = self.config.point_cloud_range
        gts, dets_off, gts_fore, dets_fore, gts_stream, dets_stream = [], [], [], [], [], []
        all_lat, n_proc, n_frames = [], 0, 0
        hs = height_scale
        simple: dict = {"gt": [], "gt_t": [], "det": [], "finish": []}  # for commons' per-class streaming_ap
        kf_fore, kf_stream = [], []
        rng = np.random.default_rng(seed)
        for scene in scenes:
            idx = list(dataset.clip_frames(scene))
            samples = [dataset[int(i)] for i in idx]
            if hs is None and samples:
                hs = default_height_scale(samples[0]["calib"])
            self.reset()
            self.latencies = []
            dets = [self.detect_sample(s, score_threshold) for s in samples]
            measured = list(self.latencies)
            if not all_lat and len(measured) > 1:
                measured = measured[1:]  # the run's first frame is warm-up (the released gen_infer_time drops it)
            all_lat += measured
            g = [gt_frame(s["frames"]["token"], pcr) for s in samples]
            gts += g
            dets_off += dets
            gts_fore += g[1:]
            dets_fore += dets[:-1]
            times = [float(s.get("timestamp", k * 0.1)) for k, s in enumerate(samples)]
            if latency == "measured":
                lat_list = measured
            elif isinstance(latency, (int, float)):
                lat_list = [float(latency)]
            else:
                lat_list = [float(x) for x in latency]
            # one latency drawn (seeded) from the list per processed frame, as the released Empirical.draw
            processed, finish = simulate_stream(times, lat_list, seed=int(rng.integers(2 ** 31)), draw="random")
            processed = [int(p) for p in processed]
            if processed == list(range(len(samples))):
                outs = [dets[p] for p in processed]
            else:  # rerun only on the processed frames: the history is the last *processed* frame
                self.reset()
                outs = [self.detect_sample(samples[p], score_threshold) for p in processed]
            n_proc += len(processed)
            n_frames += len(samples)
            from commons.metrics.streaming import select_latest_outputs

            chosen = select_latest_outputs(times, finish)
            empty = {"boxes": np.zeros((0, 7), np.float32), "scores": np.zeros(0, np.float32),
                     "labels": np.zeros(0, np.int64), "bbox": np.zeros((0, 4), np.float32),
                     "bbox_height": np.zeros(0, np.float32)}
            gts_stream += g
            dets_stream += [outs[j] if j is not None else empty for j in chosen]
            if forecaster is not None:
                kf_fore += self._kalman_outputs(forecaster, dets, times, samples, [t + 0.1 for t in times[:-1]],
                                                list(range(len(samples) - 1)))
                kf_stream += self._kalman_outputs(forecaster, outs, [times[p] for p in processed],
                                                  [samples[p] for p in processed], times, chosen)
            shift = 1000.0 * len(simple["finish"])  # clips of different sequences share clock times: keep them apart
            simple["gt"] += g
            simple["gt_t"] += [t + shift for t in times]
            simple["det"] += outs
            simple["finish"] += [float(f) + shift for f in finish]
        hs = 1.0 if hs is None else hs
        res = {"offline": kitti_eval(gts, dets_off, height_scale=hs),
               "forecast": kitti_eval(gts_fore, dets_fore, height_scale=hs),
               "streaming": kitti_eval(gts_stream, dets_stream, height_scale=hs),
               "latency_s": {"median": float(np.median(all_lat)), "mean": float(np.mean(all_lat)),
                             "given": None if latency == "measured" else latency},
               "frames": n_frames, "processed_fraction": n_proc / max(1, n_frames), "height_scale": hs}
        res["summary"] = {k: summarize(res[k]) for k in ("offline", "forecast", "streaming")}
        res["streaming_ap_all_gt"] = _simple_streaming_ap(simple)
        if forecaster is not None:
            res["kalman"] = {"forecast": kitti_eval(gts_fore, kf_fore, height_scale=hs),
                             "streaming": kitti_eval(gts_stream, kf_stream, height_scale=hs)}
            res["kalman"]["summary"] = {k: summarize(res["kalman"][k]) for k in ("forecast", "streaming")}
        return res

    def _kalman_outputs(self, forecaster, outs: list, out_times: list, out_samples: list, query_times: list,
                        source: list) -> list:
        """Run ``forecaster`` over ``outs`` (taken at ``out_times``) and, for each query ``i``, extrapolate the state
        after output ``source[i]`` (``None``: nothing yet) to ``query_times[i]``; 2D boxes re-projected."""
        forecaster.reset()
        states = []
        for t, d in zip(out_times, outs):
            forecaster.update(t, d)
            states.append(forecaster.state())
        res = []
        for tq, j in zip(query_times, source):
            if j is None:
                res.append({"boxes": np.zeros((0, 7), np.float32), "scores": np.zeros(0, np.float32),
                            "labels": np.zeros(0, np.int64), "bbox_height": np.zeros(0, np.float32)})
                continue
            p = forecaster.predict_state(states[j], tq)
            bb = clip_to_window(project_boxes_to_image(torch.as_tensor(p["boxes"]), out_samples[j]["calib"]),
                                image_window(out_samples[j], self.config.image_size))
            p["bbox_height"] = (bb[:, 3] - bb[:, 1]).numpy()
            res.append(p)
        return res

    # ------------------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """``model.safetensors`` + ``config.json`` (the model config)."""
        from commons.io import save_checkpoint

        from . import __version__

        return save_checkpoint(directory, self.model.state_dict(),
                               {"model": "streamdsgn", "version": __version__, "model_config": self.config.to_dict()},
                               overwrite=overwrite)

    def save_weights(self, path: str | os.PathLike, card: dict | None = None) -> Path:
        """Write ``path`` (``.safetensors``: the weights) and its model card ``path`` with ``.json`` (``card`` plus
        ``model``, ``version`` and ``model_config``), the format of the shipped weights (:meth:`pretrained`)."""
        import json

        from safetensors.torch import save_file

        from . import __version__

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(path), metadata={"format": "streamdsgn", "version": __version__})
        full = {**(card or {}), "model": "streamdsgn", "version": __version__, "model_config": self.config.to_dict()}
        path.with_suffix(".json").write_text(json.dumps(full, indent=1, default=str))
        return path

    @classmethod
    def pretrained(cls, weights: str | os.PathLike | None = None, device: str = "auto", **overrides) -> StreamDSGN:
        """The detector with trained weights: ``weights`` is a ``.safetensors`` file with its ``.json`` model card
        beside it (:meth:`save_weights`, ``tools/streamdsgn_train.py``) or a folder holding
        ``streamdsgn.safetensors``; default the shipped :data:`DEFAULT_WEIGHTS`. Post-processing fields
        (``score_threshold``, ``nms_*``) take the current defaults unless given in ``overrides``; the card is kept
        in ``.card``."""
        import json

        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        if path.is_dir():
            path = path / DEFAULT_WEIGHTS.name
        card_path = path.with_suffix(".json")
        if not path.is_file() or not card_path.is_file():
            raise FileNotFoundError(
                f"no StreamDSGN weights at {str(path)!r} (with the model card {card_path.name} beside it); train them "
                "with `python tools/streamdsgn_train.py --out DIR` and copy streamdsgn.safetensors and "
                f"streamdsgn.json into {str(WEIGHTS_DIR)!r}, or pass a checkpoint")
        card = json.loads(card_path.read_text())
        if card.get("model") != "streamdsgn" or "model_config" not in card:
            raise ValueError(f"{str(card_path)!r} is not a StreamDSGN model card (needs model='streamdsgn' and "
                             "model_config)")
        defaults = StreamDSGNConfig()
        mc = {k: v for k, v in card["model_config"].items() if k not in _POSTPROCESS}
        mc.update({k: getattr(defaults, k) for k in _POSTPROCESS})
        mc.update(overrides)
        mc["pretrained"] = None
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{str(path)!r} could not be read as safetensors: {err}") from err
        det = cls(StreamDSGNConfig.from_dict(mc), device="cpu")
        det.model.load_state_dict(state, strict=True)
        from commons.device import resolve_device

        det.device = resolve_device(device)
        det.model.to(det.device)
        det.model.eval()
        det.card = card
        return det

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str = "auto") -> StreamDSGN:
        from commons.io import load_checkpoint

        state, config = load_checkpoint(directory)
        if config.get("model") != "streamdsgn" or "model_config" not in config:
            raise ValueError(f"{directory} is not a streamdsgn checkpoint (config model={config.get('model')!r})")
        # the checkpoint holds every weight: do not re-read the ImageNet file the model was initialised from
        det = cls(StreamDSGNConfig.from_dict({**config["model_config"], "pretrained": None}), device="cpu")
        det.model.load_state_dict(state, strict=True)
        from commons.device import resolve_device

        det.device = resolve_device(device)
        det.model.to(det.device)
        return det


def _simple_streaming_ap(simple: dict) -> dict:
    """Cross-check with :func:`commons.metrics.streaming.streaming_ap`: per class, BEV IoU (Car 0.7, others 0.5),
    R40, every in-range ground truth counted (no difficulty filter), the same latest-output selection."""
    from commons.metrics.streaming import streaming_ap

    out = {}
    for c, (name, thr) in enumerate((("Car", 0.7), ("Pedestrian", 0.5), ("Cyclist", 0.5))):
        gt = [g["boxes"][g["labels"] == c] for g in simple["gt"]]
        if sum(len(x) for x in gt) == 0:
            continue
        dets = [d["boxes"][d["labels"] == c] for d in simple["det"]]
        scores = [d["scores"][d["labels"] == c] for d in simple["det"]]
        out[name] = 100.0 * streaming_ap(gt, simple["gt_t"], dets, scores, simple["finish"], iou_threshold=thr)
    return out


def summarize(result: dict, metric: str = "3d_R40", difficulty: str = "moderate") -> dict:
    """Per-class AP at one metric/difficulty plus their mean over the classes present in ``result``."""
    out = {}
    for cls, r in result.items():
        if isinstance(r, dict) and metric in r and difficulty in r[metric]:
            v = r[metric][difficulty]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[cls] = float(v)
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out

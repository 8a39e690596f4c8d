"""Metrics with explicit definitions. Domain metrics live in their own modules (``commons.metrics.video``,
``commons.metrics.detection``, ``commons.metrics.streaming``, ...)."""

from .classification import topk_accuracy
from .continual import AccuracyMatrix
from .detection import kitti_eval
from .distribution import frechet_distance
from .image import psnr, ssim
from .running import RunningAverage
from .streaming import simulate_stream

__all__ = ["topk_accuracy", "AccuracyMatrix", "frechet_distance", "psnr", "ssim", "RunningAverage"]
__all__ += ["kitti_eval", "simulate_stream"]

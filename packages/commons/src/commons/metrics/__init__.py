"""Metrics with explicit definitions. Domain metrics live in their own modules (``commons.metrics.video``,
``commons.metrics.detection``, ``commons.metrics.streaming``, ...)."""

from .classification import topk_accuracy
from .continual import AccuracyMatrix
from .distribution import frechet_distance
from .image import psnr, ssim
from .running import RunningAverage

__all__ = ["topk_accuracy", "AccuracyMatrix", "frechet_distance", "psnr", "ssim", "RunningAverage"]

"""Datasets: small embedded defaults built from data that installed packages ship, and loaders for standard formats.

Every dataset is a :class:`torch.utils.data.Dataset`, deterministic given its seed, with its provenance in the
docstring. Domain datasets live in their own modules (``commons.data.moving_digits``, ``commons.data.lol``,
``commons.data.kitti_tracking``, ...) and are imported from there.
"""

from .digits import DigitsDataset, load_digits_arrays, stratified_split
from .folders import IMAGE_EXTENSIONS, ImageFolderDataset, read_image
from .fractal_classes import FractalClasses, fractal_classes
from .kitti_tracking import KittiTrackingStream, camera_to_lidar_boxes, lidar_to_camera_boxes
from .samples import sample_photos, stereo_pair
from .splits import TaskSplit, split_by_classes
from .synthetic_stereo import render_kitti_tracking
from .vision import cifar

__all__ = [
    "DigitsDataset",
    "load_digits_arrays",
    "stratified_split",
    "FractalClasses",
    "fractal_classes",
    "ImageFolderDataset",
    "IMAGE_EXTENSIONS",
    "read_image",
    "sample_photos",
    "stereo_pair",
    "TaskSplit",
    "split_by_classes",
    "cifar",
    "KittiTrackingStream",
    "camera_to_lidar_boxes",
    "lidar_to_camera_boxes",
    "render_kitti_tracking",
]

"""Layer 3 of vqcore: capture calibration data across denoising timesteps, and calibration statistics."""

from .capture import ROOT, CalibItem, CalibrationSet, Capture, find_blocks, stack_items
from .files import load_calibration, save_calibration
from .stats import activation_channel_absmax, apply_smoothing, calibrate_static_quantizers, root_items

__all__ = [
    "ROOT",
    "CalibItem",
    "CalibrationSet",
    "Capture",
    "find_blocks",
    "stack_items",
    "save_calibration",
    "load_calibration",
    "activation_channel_absmax",
    "apply_smoothing",
    "calibrate_static_quantizers",
    "root_items",
]

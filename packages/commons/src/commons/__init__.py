"""commons: the thin shared layer of the paperlab libraries.

Sub-modules (import them explicitly; nothing heavy is imported here):

- :mod:`commons.device` — device/dtype resolution, seeding, a helper over ``accelerate``.
- :mod:`commons.io` — atomic safetensors checkpoints with a JSON config, training-state files, run folders.
- :mod:`commons.data` — embedded default datasets and loaders for the standard formats.
- :mod:`commons.metrics` — classification, continual-learning, image, distribution and domain metrics.
- :mod:`commons.profiling` — parameter counts, peak memory, timers.
- :mod:`commons.reporting` — markdown tables, image grids, plots and demo sections.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""vqcore: post-training quantization of diffusion models — Q-VDiT, S²Q-VDiT, MPQ-DM and their baselines on one
fake-quant layer, plus Triton integer kernels that make the quantized models really smaller and faster.

Layers (each imports only those below it): ``vqcore.quant`` (quantizers, quantized modules, ``prepare``) →
``vqcore.kernels`` / ``vqcore.convert`` (integer kernels, real-int export) → ``vqcore.calib`` (calibration capture) →
``vqcore.recon`` (optimisation engine) → ``vqcore.methods`` (recipes) → ``vqcore.api`` / ``vqcore.cli``.
"""

__version__ = "0.1.0"

from .api import QuantReport, load, quantize, save  # noqa: E402
from .calib import CalibrationSet, Capture  # noqa: E402

# after this import the name ``vqcore.convert`` is the function; the module stays importable as ``vqcore.convert``
from .convert import (  # noqa: E402, I001
    QLinearInt,
    convert,  # noqa: E402
    load_converted,
    save_converted,
)
from .methods import list_methods, register_method  # noqa: E402
from .quant import QuantConfig, QuantSpec, prepare, preset  # noqa: E402

__all__ = [
    "__version__",
    "quantize",
    "save",
    "load",
    "convert",
    "QLinearInt",
    "save_converted",
    "load_converted",
    "QuantReport",
    "Capture",
    "CalibrationSet",
    "list_methods",
    "register_method",
    "QuantConfig",
    "QuantSpec",
    "prepare",
    "preset",
]

"""WalMaFa (Wavelet-based Mamba with Fourier Adjustment, ACCV 2024) for low-light image enhancement, in pure PyTorch.

Public API: the models (:class:`WalMaFa`, :class:`WalMaFaConfig`, :func:`create_model`, :func:`list_models`), the
pure-PyTorch Mamba block and scans, the Haar wavelet pair, the training/evaluation engine (:class:`Enhancer`,
:class:`TrainConfig`), the loss, and the metric/padding helpers.
"""

from .engine import Enhancer, TrainConfig, enhance_image, evaluate_pairs, pad_to_multiple
from .losses import WalMaFaLoss, tv_loss
from .mamba import Mamba, selective_scan_chunked, selective_scan_sequential, set_scan
from .models import RetinexUNet, RetinexUNetConfig, WalMaFa, WalMaFaConfig, create_model, list_models
from .scan_triton import selective_scan_triton
from .wavelets import haar_dwt, haar_iwt

__version__ = "0.1.0"

__all__ = [
    "WalMaFa", "WalMaFaConfig", "RetinexUNet", "RetinexUNetConfig", "create_model", "list_models",
    "Mamba", "selective_scan_chunked", "selective_scan_sequential", "selective_scan_triton", "set_scan",
    "haar_dwt", "haar_iwt",
    "WalMaFaLoss", "tv_loss", "Enhancer", "TrainConfig", "enhance_image", "evaluate_pairs", "pad_to_multiple",
    "__version__",
]

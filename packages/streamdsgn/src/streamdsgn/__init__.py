"""StreamDSGN (NeurIPS 2024): real-time stereo 3D object detection for streaming perception, in pure PyTorch.

Stereo ResNet-18 features → depth-plane-sweep cost volume → 3D geometry volume → BEV → feature-flow fusion with the
previous frame → large-kernel (VAN/LKA) BEV backbone → anchor head predicting the next frame's boxes; trained with
focal / Smooth-L1 / direction / IoU3D / depth / motion-consistency losses and evaluated offline and with streaming AP.
"""

from .boxes import ResidualCoder, assign_targets, decode_predictions, make_anchors
from .engine import StreamDSGN, TrainConfig, one_cycle, summarize
from .losses import LossWeights
from .models import StreamDSGNConfig, StreamDSGNModel, create_model, list_models

__version__ = "0.1.0"

__all__ = ["StreamDSGN", "StreamDSGNConfig", "StreamDSGNModel", "TrainConfig", "LossWeights", "ResidualCoder",
           "assign_targets", "decode_predictions", "make_anchors", "one_cycle", "summarize", "create_model",
           "list_models", "__version__"]

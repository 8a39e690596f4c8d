"""Layer 1 of vqcore: quantizers, quantized modules and the module swap (see DESIGN.md "vqcore")."""

from .attention import QuantSDPA, quantize_attention
from .fpmode import FullPrecisionView, full_precision
from .modules import MODULE_TYPES, LowRankBranch, QConv2d, QConv3d, QLinear, QMatMul, QuantModule, register_module_type
from .prepare import LayerPlan, QuantConfig, plan_layers, prepare, preset, quantized_layers
from .quantizer import GRANULARITIES, INIT_METHODS, QuantSpec, UniformQuantizer, round_ste

__all__ = [
    "QuantSpec",
    "UniformQuantizer",
    "round_ste",
    "GRANULARITIES",
    "INIT_METHODS",
    "QLinear",
    "QConv2d",
    "QConv3d",
    "QMatMul",
    "QuantSDPA",
    "quantize_attention",
    "QuantModule",
    "LowRankBranch",
    "register_module_type",
    "MODULE_TYPES",
    "QuantConfig",
    "LayerPlan",
    "plan_layers",
    "prepare",
    "preset",
    "quantized_layers",
    "full_precision",
    "FullPrecisionView",
]

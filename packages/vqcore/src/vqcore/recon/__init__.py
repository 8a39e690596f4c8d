"""Layer 4 of vqcore: the optimisation engine (block reconstruction, output distillation, rollout distillation)."""

from .engine import (
    LossTerm,
    MSETerm,
    ReconConfig,
    block_reconstruction,
    first_tensor,
    optimize,
    output_distillation,
    parameter_groups,
    rollout_distillation,
)

__all__ = [
    "LossTerm",
    "MSETerm",
    "ReconConfig",
    "parameter_groups",
    "optimize",
    "block_reconstruction",
    "output_distillation",
    "rollout_distillation",
    "first_tensor",
]

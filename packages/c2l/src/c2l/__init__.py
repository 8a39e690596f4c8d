"""c2l — Confounded Causal Imitation Learning with instrumental variables (Zeng et al., arXiv 2507.17309).

Stage 1 (:func:`identify_iv`): find a valid instrument among past states with the pseudo-variable HSIC test.
Stage 2: learn the policy with it — with a simulator (:class:`DoubleSamplingIV`, "C2L") or offline
(:class:`ResidualGameIV`, "C2L*"); baselines :class:`BC`, DoubIL and ResiduIL (``create_learner``).
"""

from .confounding import ConfoundingConfig, ConfoundingNoise
from .data import Trajectory, TrajectoryDataset, load_official
from .envs import ENVIRONMENTS, Simulator, evaluate_return, generate_dataset, make_env, make_expert, reset_to
from .evaluation import action_error
from .hsic import HSICResult, hsic_test
from .identify import IVIdentification, identification_accuracy, identify_iv, linear_iv_pseudo_variable
from .learners import (
    BC,
    BCConfig,
    DoubleSamplingConfig,
    DoubleSamplingIV,
    ResidualGameConfig,
    ResidualGameIV,
    create_learner,
    list_learners,
    load_policy,
)
from .models import MLPConfig, MLPPolicy, create_model, list_models
from .oadam import OAdam

__version__ = "0.1.0"

__all__ = [
    "__version__", "ConfoundingConfig", "ConfoundingNoise", "Trajectory", "TrajectoryDataset", "load_official",
    "ENVIRONMENTS", "Simulator", "evaluate_return", "generate_dataset", "make_env", "make_expert", "reset_to",
    "action_error", "HSICResult", "hsic_test", "IVIdentification", "identification_accuracy", "identify_iv",
    "linear_iv_pseudo_variable", "BC", "BCConfig", "DoubleSamplingConfig", "DoubleSamplingIV", "ResidualGameConfig",
    "ResidualGameIV", "create_learner", "list_learners", "load_policy", "MLPConfig", "MLPPolicy", "create_model",
    "list_models", "OAdam",
]

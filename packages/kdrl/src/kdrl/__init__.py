"""kdrl: multi-teacher knowledge distillation with MTKD-RL (Yang et al., AAAI 2025) and baselines.

A teacher pool of any ``nn.Module`` classifiers (kdrl presets, ``timm:<name>`` or your own modules), per-sample logit
and feature KD through per-teacher adaptors, and interchangeable teacher-weighting strategies: the MTKD-RL agent,
AVER, CA-MKD, EBKD and AEKD.
"""

__version__ = "0.1.0"

from .adapters import FeatureAdaptor, build_adaptors
from .config import DistillConfig, TeacherTrainConfig, cifar100_recipe, digits_recipe
from .distiller import MultiTeacherDistiller
from .features import ClassifierOutput, FeatureTap, as_feature_classifier
from .losses import feature_mse_per_sample, kd_kl, kd_kl_per_sample
from .models import create_model, list_models
from .strategies import (
    MTKDRL,
    Average,
    ConfidenceAware,
    DistillContext,
    EntropyBased,
    GradientSpace,
    NoKD,
    TeacherWeightingAgent,
    WeightingStrategy,
    create_strategy,
    list_strategies,
)
from .teachers import TeacherPool, load_official
from .training import evaluate_classifier, load_or_train_teachers, train_classifier

__all__ = [
    "__version__", "FeatureAdaptor", "build_adaptors", "DistillConfig", "TeacherTrainConfig", "cifar100_recipe",
    "digits_recipe", "MultiTeacherDistiller", "ClassifierOutput", "FeatureTap", "as_feature_classifier",
    "feature_mse_per_sample", "kd_kl", "kd_kl_per_sample", "create_model", "list_models", "MTKDRL", "Average",
    "ConfidenceAware", "DistillContext", "EntropyBased", "GradientSpace", "NoKD", "TeacherWeightingAgent",
    "WeightingStrategy", "create_strategy", "list_strategies", "TeacherPool", "load_official", "evaluate_classifier",
    "load_or_train_teachers", "train_classifier",
]

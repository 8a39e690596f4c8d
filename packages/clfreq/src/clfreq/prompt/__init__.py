"""Prompt-based class-incremental learning on a frozen pre-trained ViT: PrePrompt and the L2P baseline."""

from .baselines import (
    L2P,
    CODAPrompt,
    CODAPromptConfig,
    DualPrompt,
    DualPromptConfig,
    JointLinearProbe,
    L2PConfig,
    SequentialLinear,
)
from .learners import IncrementalLearner, TaskData
from .preprompt import PrePrompt, PrePromptConfig, translate_features
from .pretrained import SHIPPED_BACKBONES, load_pretrained_vit
from .protocol import (
    StreamResult,
    cifar100_tasks,
    image_folder_tasks,
    run_stream,
    split_digits_tasks,
    split_fractals_tasks,
)
from .vit import PrefixPromptPool, PromptedViT, create_vit

__all__ = [
    "PrePrompt",
    "PrePromptConfig",
    "translate_features",
    "L2P",
    "DualPrompt",
    "DualPromptConfig",
    "CODAPrompt",
    "CODAPromptConfig",
    "L2PConfig",
    "SequentialLinear",
    "JointLinearProbe",
    "IncrementalLearner",
    "TaskData",
    "load_pretrained_vit",
    "SHIPPED_BACKBONES",
    "run_stream",
    "StreamResult",
    "split_digits_tasks",
    "split_fractals_tasks",
    "cifar100_tasks",
    "image_folder_tasks",
    "PromptedViT",
    "PrefixPromptPool",
    "create_vit",
]

"""clfreq: continual learning — PrePrompt (prompt-based class-incremental learning on a frozen ViT) with the L2P
baseline; CLFD and FDINet (frequency-domain rehearsal add-ons) are planned (see the README's status table)."""

__version__ = "0.1.0"

from .prompt import (  # noqa: E402
    L2P,
    JointLinearProbe,
    L2PConfig,
    PrePrompt,
    PrePromptConfig,
    SequentialLinear,
    TaskData,
    load_pretrained_vit,
    run_stream,
    split_digits_tasks,
)

__all__ = [
    "__version__",
    "PrePrompt",
    "PrePromptConfig",
    "L2P",
    "L2PConfig",
    "SequentialLinear",
    "JointLinearProbe",
    "TaskData",
    "load_pretrained_vit",
    "run_stream",
    "split_digits_tasks",
]

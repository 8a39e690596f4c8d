"""clfreq: continual learning — PrePrompt (prompt-based class-incremental learning on a frozen ViT) with the L2P
baseline; rehearsal methods (ER, DER++, ER-ACE) with the CLFD and FDINet frequency-domain plugins."""

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
from .rehearsal import (  # noqa: E402
    CLFD,
    CLSER,
    ER,
    ERACE,
    Benchmark,
    CLFDNet,
    DERpp,
    FDINet,
    FDINetPlugin,
    ReservoirBuffer,
    ResNet18,
    create_method,
    haar_dwt,
    list_methods,
    split_cifar,
    split_digits,
    split_tinyimagenet,
    train_continual,
)

__all__ = [
    "CLFD", "CLSER", "ER", "ERACE", "FDINet", "Benchmark", "CLFDNet", "DERpp", "FDINetPlugin", "ReservoirBuffer",
    "ResNet18",
    "create_method", "haar_dwt", "list_methods", "split_cifar", "split_digits", "split_tinyimagenet",
    "train_continual",
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

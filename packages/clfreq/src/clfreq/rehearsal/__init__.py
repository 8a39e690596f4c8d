"""Rehearsal continual learning (mammoth conventions) with the CLFD and FDINet frequency-domain plugins."""

from .core import (
    BEST_ARGS,
    BEST_EPOCHS,
    CLFD,
    ER,
    ERACE,
    METHODS,
    PLUGINS,
    Benchmark,
    DERpp,
    FDINetPlugin,
    Rehearsal,
    ReservoirBuffer,
    create_method,
    evaluate,
    list_methods,
    split_cifar,
    split_digits,
    split_tinyimagenet,
    train_continual,
)
from .nets import CLFDNet, FDINet, FrequencyEncoder, ResNet18, haar_dwt, kwta

__all__ = ["BEST_ARGS", "BEST_EPOCHS", "CLFD", "ER", "ERACE", "METHODS", "PLUGINS", "Benchmark", "DERpp",
           "FDINetPlugin", "Rehearsal", "ReservoirBuffer", "create_method", "evaluate", "list_methods", "split_cifar",
           "split_digits", "split_tinyimagenet", "train_continual", "CLFDNet", "FDINet", "FrequencyEncoder",
           "ResNet18", "haar_dwt", "kwta"]

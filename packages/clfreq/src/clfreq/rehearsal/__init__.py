"""Rehearsal continual learning (mammoth conventions) with the CLFD and FDINet frequency-domain plugins."""

from .augment import Augment, random_crop_flip
from .benchmarks import split_fractals
from .core import (
    BEST_ARGS,
    BEST_EPOCHS,
    BEST_EPOCHS_BY_METHOD,
    CLFD,
    CLSER,
    ER,
    ERACE,
    METHODS,
    PLUGINS,
    QUICK_ARGS,
    Benchmark,
    DERpp,
    FDINetPlugin,
    Rehearsal,
    ReservoirBuffer,
    best_epochs,
    create_method,
    evaluate,
    list_methods,
    split_cifar,
    split_digits,
    split_tinyimagenet,
    train_continual,
)
from .nets import CLFDNet, FDINet, FrequencyEncoder, ResNet18, haar_dwt, kwta

__all__ = ["Augment", "random_crop_flip", "BEST_EPOCHS_BY_METHOD", "CLSER", "QUICK_ARGS", "best_epochs",
           "BEST_ARGS", "BEST_EPOCHS", "CLFD", "ER", "ERACE", "METHODS", "PLUGINS", "Benchmark", "DERpp",
           "FDINetPlugin", "Rehearsal", "ReservoirBuffer", "create_method", "evaluate", "list_methods", "split_cifar",
           "split_digits", "split_fractals", "split_tinyimagenet", "train_continual", "CLFDNet", "FDINet",
           "FrequencyEncoder",
           "ResNet18", "haar_dwt", "kwta"]

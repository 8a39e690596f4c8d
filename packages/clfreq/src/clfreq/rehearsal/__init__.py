"""Rehearsal continual learning (mammoth conventions) with the CLFD and FDINet frequency-domain plugins.

One module per responsibility: :mod:`.buffer` (reservoir), :mod:`.base` (the method base class and its hooks),
one file per method (:mod:`.er`, :mod:`.derpp`, :mod:`.er_ace`, :mod:`.clser`), :mod:`.plugins` (CLFD and FDINet
as mixin classes), :mod:`.registry` (``create_method``), :mod:`.best_args` (hyper-parameters as data),
:mod:`.benchmarks` (Split Digits / Fractals / CIFAR / Tiny-ImageNet), :mod:`.trainer` (``train_continual``,
``evaluate``), :mod:`.nets`, :mod:`.augment`, :mod:`.distributed`.
"""

from .augment import Augment, random_crop_flip
from .base import Rehearsal
from .benchmarks import Benchmark, split_cifar, split_digits, split_fractals, split_tinyimagenet
from .best_args import BEST_ARGS, BEST_EPOCHS, BEST_EPOCHS_BY_METHOD, QUICK_ARGS, best_epochs
from .buffer import ReservoirBuffer
from .clser import CLSER
from .derpp import DERpp
from .er import ER
from .er_ace import ERACE
from .nets import CLFDNet, FDINet, FrequencyEncoder, ResNet18, haar_dwt, kwta
from .plugins import CLFD, PLUGINS, CLFDMixin, FDINetMixin, FDINetPlugin, PluginMixin
from .registry import METHODS, create_method, list_methods
from .trainer import evaluate, train_continual

__all__ = ["Augment", "random_crop_flip", "BEST_EPOCHS_BY_METHOD", "CLSER", "QUICK_ARGS", "best_epochs",
           "BEST_ARGS", "BEST_EPOCHS", "CLFD", "ER", "ERACE", "METHODS", "PLUGINS", "Benchmark", "DERpp",
           "FDINetPlugin", "Rehearsal", "ReservoirBuffer", "create_method", "evaluate", "list_methods", "split_cifar",
           "split_digits", "split_fractals", "split_tinyimagenet", "train_continual", "CLFDNet", "FDINet",
           "FrequencyEncoder", "ResNet18", "haar_dwt", "kwta", "CLFDMixin", "FDINetMixin", "PluginMixin"]

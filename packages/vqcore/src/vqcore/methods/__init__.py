"""Layer 5 of vqcore: methods as recipes over the layers below, in a registry.

Built in: ``rtn``, ``vidit-q``, ``q-diffusion`` (baselines). Method modules in this package named in
``_METHOD_MODULES`` are imported on first use so that they register themselves.
"""

from __future__ import annotations

import importlib
import logging

from .base import METHODS, Method, get_method, list_methods, register_method

__all__ = ["Method", "register_method", "get_method", "list_methods", "METHODS"]

logger = logging.getLogger(__name__)

_METHOD_MODULES = ("baselines", "qvdit", "s2q", "mpqdm")
_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for name in _METHOD_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise

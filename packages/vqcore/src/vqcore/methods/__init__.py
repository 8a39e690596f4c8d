"""Layer 5 of vqcore: methods as recipes over the layers below, in a registry.

A method registers itself (:func:`register_method`) when its module is imported; this package imports every method
module, so importing :mod:`vqcore.methods` is what makes the built-in methods known: ``rtn``, ``vidit-q``,
``q-diffusion`` (:mod:`.baselines`), ``q-vdit`` (:mod:`.qvdit`), ``s2q-vdit`` (:mod:`.s2q`), ``mpq-dm``
(:mod:`.mpqdm`). A method defined elsewhere registers by being imported too.
"""

from __future__ import annotations

from . import baselines, mpqdm, qvdit, s2q  # noqa: F401  (importing a method module registers its methods)
from .base import METHODS, Method, MethodConfig, get_method, list_methods, register_method

__all__ = ["Method", "MethodConfig", "register_method", "get_method", "list_methods", "METHODS"]

"""The method interface and registry.

A method is a small recipe over the layers below: it chooses the quantization config (:meth:`Method.default_config`)
and then calibrates/trains the prepared model (:meth:`Method.run`). Register one with :func:`register_method`::

    @register_method("my-method")
    class MyMethod(Method):
        def default_config(self, kind, w_bits, a_bits, **options): ...
        def run(self, qmodel, fp_model, config, calib, **options): ...  # returns a dict for the report

``vqcore.quantize(model, method="my-method", ...)`` deep-copies the full-precision model (``fp_model``, the teacher),
prepares the copy with the config, checks the calibration data against the model, then calls :meth:`Method.run`.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from torch import nn

from ..calib.capture import CalibrationSet
from ..quant.prepare import QuantConfig, preset

__all__ = ["Method", "register_method", "get_method", "list_methods", "METHODS"]

METHODS: dict[str, type[Method]] = {}


class Method:
    """Base class: the defaults are the papers' mixed-precision presets and no training (RTN)."""

    name: ClassVar[str] = "method"
    #: whether ``run`` needs a full-precision teacher (quantize then keeps a deep copy)
    needs_teacher: ClassVar[bool] = False
    #: whether ``run`` needs calibration data
    needs_calibration: ClassVar[bool] = False
    #: whether ``run`` needs a :class:`~vqcore.calib.CalibrationSet` with block captures (block reconstruction);
    #: checked by :func:`vqcore.quantize` before the model is copied
    needs_block_captures: ClassVar[bool] = False
    #: ``True``: :func:`vqcore.quantize` refuses options that neither ``run`` nor ``default_config`` names as a keyword
    #: parameter (a typo fails before any work); ``False``: ``run`` takes free-form ``**options``
    strict_options: ClassVar[bool] = True

    def default_config(self, kind: str, w_bits: int, a_bits: int | None, **options: Any) -> QuantConfig:
        return preset(kind, w_bits, a_bits)

    def run(self, qmodel: nn.Module, fp_model: nn.Module | None, config: QuantConfig,
            calib: CalibrationSet | list | None, **options: Any) -> dict[str, Any]:
        raise NotImplementedError

    def check_model(self, model: nn.Module, options: dict[str, Any]) -> None:
        """Raise ``ValueError`` for a model/options combination the method cannot run, before :func:`vqcore.quantize`
        copies the model or touches the calibration data (e.g. MPQ-DM without a noise schedule). Default: accept."""

    def option_names(self) -> set[str]:
        """Options this method accepts: keyword parameters of ``run`` and ``default_config`` after the fixed ones."""
        names: set[str] = set()
        for fn, fixed in ((self.run, 4), (self.default_config, 3)):
            params = list(inspect.signature(fn).parameters.values())[fixed:]
            names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return names

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ``TypeError`` naming unknown options (``strict_options`` methods only)."""
        if not self.strict_options:
            return
        unknown = sorted(set(options) - self.option_names())
        if unknown:
            raise TypeError(f"method {self.name!r} got unknown options {unknown}; it accepts "
                            f"{sorted(self.option_names()) or 'no options'}")


def register_method(name: str):
    """Class decorator adding a :class:`Method` subclass to the registry under ``name``."""

    def deco(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError("register_method decorates Method subclasses")
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"a method named {name!r} is already registered ({METHODS[name].__name__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> Method:
    from . import _discover

    _discover()
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]()


def list_methods() -> list[str]:
    from . import _discover

    _discover()
    return sorted(METHODS)

"""The method interface and registry.

A method is a small recipe over the layers below: it declares its options as a config dataclass (a subclass of
:class:`MethodConfig`, validated in ``__post_init__``), chooses the quantization config (:meth:`Method.default_config`)
and then calibrates/trains the prepared model (:meth:`Method.run`). Register one with :func:`register_method` in a
module of :mod:`vqcore.methods` that the package imports::

    @dataclass
    class MyConfig(MethodConfig):
        iters: int = 100

        def __post_init__(self):
            check_int(self, "iters", low=0)

    @register_method("my-method")
    class MyMethod(Method):
        Config = MyConfig
        def default_config(self, kind, w_bits, a_bits, opts): ...
        def run(self, qmodel, fp_model, config, calib, opts): ...  # returns a dict for the report

``vqcore.quantize(model, method="my-method", options=MyConfig(iters=50))`` (or ``options={"iters": 50}``, or the
keyword ``iters=50``) builds the config, deep-copies the full-precision model (``fp_model``, the teacher), prepares
the copy with the quantization config, checks the calibration data against the model, then calls :meth:`Method.run`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..calib.capture import CalibrationSet
from ..quant.prepare import QuantConfig, preset

__all__ = ["Method", "MethodConfig", "register_method", "get_method", "list_methods", "METHODS", "check_int",
           "check_choice"]

METHODS: dict[str, type[Method]] = {}


@dataclass
class MethodConfig:
    """Base of the per-method option dataclasses (no options). A subclass validates its fields in ``__post_init__``
    and raises a one-line ``ValueError``/``TypeError`` naming the field; :meth:`record` is what :func:`vqcore.save`
    stores."""

    def record(self) -> dict[str, Any]:
        """The options as JSON values (paths as strings; objects such as a scheduler by their class name)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return f"<{type(v).__name__}>"


def check_int(cfg: Any, name: str, low: int = 0, what: str = "", none: bool = False) -> None:
    """``cfg.name`` must be an int ``>= low`` (``None`` too when ``none``); ``what`` is added to the message."""
    v = getattr(cfg, name)
    if none and v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        kind = "a non-negative int" if low == 0 else "a positive int" if low == 1 else f"an int >= {low}"
        raise ValueError(f"{name} must be {kind}{' or None' if none else ''}{what}, got {v!r}")


def check_choice(cfg: Any, name: str, choices: tuple) -> None:
    """``cfg.name`` must be one of ``choices``."""
    v = getattr(cfg, name)
    if not any(v is c or (type(v) is type(c) and v == c) for c in choices):
        raise ValueError(f"{name} must be one of {choices}, got {v!r}")


class Method:
    """Base class: the defaults are the papers' mixed-precision presets and no training (RTN)."""

    name: ClassVar[str] = "method"
    #: the method's options (a :class:`MethodConfig` subclass); ``quantize(..., options=)`` takes one or a dict
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: whether ``run`` needs a full-precision teacher (quantize then keeps a deep copy)
    needs_teacher: ClassVar[bool] = False
    #: whether ``run`` needs calibration data
    needs_calibration: ClassVar[bool] = False
    #: whether ``run`` needs a :class:`~vqcore.calib.CalibrationSet` with block captures (block reconstruction);
    #: checked by :func:`vqcore.quantize` before the model is copied
    needs_block_captures: ClassVar[bool] = False

    def default_config(self, kind: str, w_bits: int, a_bits: int | None, opts: MethodConfig | None = None
                       ) -> QuantConfig:  # fmt: skip
        return preset(kind, w_bits, a_bits)

    def run(self, qmodel: nn.Module, fp_model: nn.Module | None, config: QuantConfig,
            calib: CalibrationSet | list | None, opts: MethodConfig) -> dict[str, Any]:  # fmt: skip
        raise NotImplementedError

    def check_model(self, model: nn.Module, opts: MethodConfig) -> None:
        """Raise ``ValueError`` for a model/options combination the method cannot run, before :func:`vqcore.quantize`
        copies the model or touches the calibration data (e.g. MPQ-DM without a noise schedule). Default: accept."""

    def option_names(self) -> set[str]:
        """Options this method accepts: the fields of its :attr:`Config`."""
        return {f.name for f in dataclasses.fields(self.Config)}

    def make_options(self, options: MethodConfig | dict | None = None, **kwargs: Any) -> MethodConfig:
        """The method's validated :attr:`Config` from ``options`` (a ``Config``, a dict or ``None``) with ``kwargs``
        on top. Unknown names raise one ``TypeError`` line listing what the method accepts."""
        if options is None:
            options = {}
        if isinstance(options, MethodConfig):
            if type(options) is not self.Config:
                raise TypeError(f"options for method {self.name!r} must be a {self.Config.__name__} or a dict, got "
                                f"{type(options).__name__}")  # fmt: skip
            options = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        elif not isinstance(options, dict):
            raise TypeError(f"options must be a {self.Config.__name__}, a dict or None, got {type(options).__name__}")
        merged = {**options, **kwargs}
        unknown = sorted(set(merged) - self.option_names())
        if unknown:
            raise TypeError(f"method {self.name!r} got unknown options {unknown}; it accepts "
                            f"{sorted(self.option_names()) or 'no options'}")
        return self.Config(**merged)

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ``TypeError`` naming unknown options, ``ValueError`` naming a bad value (builds the config)."""
        self.make_options(options)


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
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]()


def list_methods() -> list[str]:
    return sorted(METHODS)

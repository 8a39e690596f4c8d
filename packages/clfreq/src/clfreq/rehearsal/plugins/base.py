"""Plugins are mixin classes placed before a rehearsal method's class in the MRO (``class CLFDDERpp(CLFDMixin,
DERpp)``); their hooks call ``super()`` so that the method's own behaviour runs underneath. :func:`attach` mixes a
plugin into an already built method, in place (the functional form ``CLFD(DERpp(...))``)."""

from __future__ import annotations

from functools import cache

from ..base import Rehearsal


class PluginMixin:
    """Base of the plugin mixins: ``plugin`` names it (part of the run label), :meth:`configure_plugin` sets its
    options (called by the mixin's ``__init__`` when it is in a class statement, by :func:`attach` otherwise)."""

    plugin: str = ""
    #: name used in error messages
    display = ""

    def configure_plugin(self, **options) -> None:
        raise NotImplementedError


@cache
def _compose(mixin: type, cls: type) -> type:
    return type(f"{mixin.__name__.removesuffix('Mixin')}{cls.__name__}", (mixin, cls), {"__module__": mixin.__module__})


def attach(method: Rehearsal, mixin: type[PluginMixin], **options) -> Rehearsal:
    """Mix ``mixin`` into ``method`` in place (its class becomes ``(mixin, type(method))``); returns the method."""
    if not isinstance(method, Rehearsal):
        raise TypeError(f"{mixin.display} wraps a rehearsal method (ER, DERpp, ERACE), got {type(method).__name__}")
    if method.plugin is not None:
        raise ValueError(f"method already has plugin {method.plugin!r}")
    method.__class__ = _compose(mixin, type(method))
    method.configure_plugin(**options)
    return method

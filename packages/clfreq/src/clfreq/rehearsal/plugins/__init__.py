"""Frequency-domain plugins for the rehearsal methods, as mixin classes (:class:`CLFDMixin`, :class:`FDINetMixin`)
with functional wrappers (:func:`CLFD`, :func:`FDINetPlugin`)."""

from .base import PluginMixin, attach
from .clfd import CLFD, CLFDMixin
from .fdinet import FDINetMixin, FDINetPlugin

PLUGINS = {"clfd": CLFD, "fdinet": FDINetPlugin}

__all__ = ["CLFD", "PLUGINS", "CLFDMixin", "FDINetMixin", "FDINetPlugin", "PluginMixin", "attach"]

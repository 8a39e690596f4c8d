"""The method and plugin registries: ``create_method("der++", plugin="clfd", buffer_size=50)``."""

from __future__ import annotations

from .base import Rehearsal
from .clser import CLSER
from .derpp import DERpp
from .er import ER
from .er_ace import ERACE
from .plugins import PLUGINS

METHODS = {"er": ER, "der++": DERpp, "er-ace": ERACE, "cls-er": CLSER}


def create_method(name: str, plugin: str | None = None, **kw) -> Rehearsal:
    """Registry: ``create_method("der++", plugin="clfd", buffer_size=50)``."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    if plugin not in (None, "none", *PLUGINS):
        raise ValueError(f"plugin must be one of {sorted(PLUGINS)} or None, got {plugin!r}")
    m = METHODS[name](**kw)
    return PLUGINS[plugin](m) if plugin not in (None, "none") else m


def list_methods() -> list[str]:
    return sorted(METHODS)

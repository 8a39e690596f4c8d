"""Full-precision mode of a quantized model: the FP teacher without a second copy of the weights.

Methods that distil a quantized model towards its full-precision self (MPQ-DM's rollouts, S²Q-VDiT's attention token
weights) used to keep a deep copy of the FP model. A quantized layer still holds the original weight ``W`` and bias
(the quantizers, smoothing vector, adapters and side branches are separate), so the same modules can compute the FP
output ``F.linear(x, W, b)`` — bit-identical to the ``nn.Linear`` they replaced — when asked to:

    with full_precision(qmodel):
        y_fp = qmodel(x)            # original float model (attention-product quantizers off too)

:class:`FullPrecisionView` wraps a model so that every call runs like that (and in eval mode, as the deep-copied teacher
was); ``view.get_submodule(name)`` is a view of the block; other attributes are the model's own. The methods call the
teacher and the student one after the other, never at once, which is what makes sharing the modules exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from .modules import QMatMul, QuantModule

__all__ = ["full_precision", "FullPrecisionView"]


@contextlib.contextmanager
def full_precision(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every quantized layer under ``model`` computes its original float op (``F.linear(x, W, b)``
    / the convolution with ``W``): no smoothing, quantizers, weight adapters or side branches; ``QMatMul`` quantizers
    are off. Restored on exit (also on error). Not thread-safe for one model used by several threads."""
    saved: list[tuple[Any, str, Any]] = []
    for m in model.modules():
        if isinstance(m, QuantModule):
            saved.append((m, "fp_forward", m.fp_forward))
            m.fp_forward = True
        elif isinstance(m, QMatMul):
            for q in (m.a_quantizer, m.b_quantizer):
                saved.append((q, "enabled", q.enabled))
                q.enabled = False
    try:
        yield model
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


class FullPrecisionView:
    """Calls ``model`` under :func:`full_precision` and in eval mode (train flags restored after the call)."""

    def __init__(self, model: nn.Module):
        object.__setattr__(self, "_model", model)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        model = self._model
        modes = [(m, m.training) for m in model.modules()]
        try:
            model.eval()
            with full_precision(model):
                return model(*args, **kwargs)
        finally:
            for m, mode in modes:
                m.training = mode

    def get_submodule(self, name: str) -> FullPrecisionView:
        return FullPrecisionView(self._model.get_submodule(name))

    def eval(self) -> FullPrecisionView:  # the view always runs in eval mode
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __repr__(self) -> str:
        return f"FullPrecisionView({type(self._model).__name__})"

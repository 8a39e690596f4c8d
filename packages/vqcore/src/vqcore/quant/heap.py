"""Give freed CPU heap memory back to the system while a quantized model trains (glibc only; a guarded fallback).

Why: training with ``QuantModule.recompute`` frees each layer's float32 fake-quant temporaries (tens of MiB per
layer) right after the layer's forward and its backward. glibc's ``malloc`` serves blocks below its *dynamic* mmap
threshold (raised up to 32 MiB each time a larger mmapped block is freed) from the heap, and small long-lived
allocations made between them (activations kept for the backward pass, gradients) pin the freed blocks there: the
process RSS then grows with the number of layers although the live bytes do not (measured on a CogVideoX-2B-size model,
``tools/bench/vqcore_memory.py``). ``malloc_trim(0)`` returns the free pages of the heap to the system.

:func:`release_freed_memory` calls it when the process runs on glibc (Linux) and does nothing elsewhere (macOS,
Windows, musl, or when ``VQCORE_MALLOC_TRIM=0`` is set in the environment). The quantized layers call it after each
recomputed CPU forward and before each layer's backward while training (``recompute=True``), and the fake-quant
backward (``quantizer._FakeQuantSTE``) at its start, when the recomputed forward's temporaries have just been freed;
it never changes a value, only what RSS shows. Setting ``MALLOC_MMAP_THRESHOLD_=1048576`` instead (big blocks always
mmapped) has a similar effect for the whole process.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Callable

__all__ = ["release_freed_memory", "malloc_trim_available"]

_trim: Callable[[int], int] | None | bool = None  # None: not looked up yet; False: unavailable


def _lookup() -> Callable[[int], int] | bool:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def malloc_trim_available() -> bool:
    """Whether :func:`release_freed_memory` does anything here (glibc, and not disabled by ``VQCORE_MALLOC_TRIM=0``)."""
    global _trim
    if _trim is None:
        _trim = _lookup()
    return bool(_trim) and os.environ.get("VQCORE_MALLOC_TRIM", "1") != "0"


def release_freed_memory() -> None:
    """``malloc_trim(0)`` on glibc; a no-op elsewhere (module docstring)."""
    if malloc_trim_available():
        _trim(0)  # type: ignore[operator]

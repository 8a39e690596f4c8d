"""A restricted unpickler for trajectory files: lists, tuples and NumPy arrays only; nothing else is ever built.

The official codes store demonstrations with ``pickle`` (YanaZeng/C2L: ``pickle.dump(trajs, f)`` of a list of
``(states [T, d], actions [T, k])`` tuples) or ``np.savez(path, trajs)`` (gkswamy98/causal_il: an object array whose
``.npy`` payload is a pickle). Ordinary unpickling of such a file runs whatever callable the file names, so a
downloaded file could execute code. :class:`RestrictedUnpickler` resolves only the globals NumPy's own array
pickles reference and refuses every other one *before* anything is called:

* ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct`` (NumPy 1.x / 2.x name of the
  same function; protocols 3–4),
* ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer`` (protocol 5, Python 3.14's default:
  ``frombuffer(buf, dtype).reshape(shape)``),
* ``numpy.ndarray`` (the array type ``_reconstruct`` is asked to build) and ``numpy.dtype`` (the element type).

Each name resolves to the function object of the running NumPy, taken from an array's own reduce tuple, so the
deprecated ``numpy.core`` alias is never imported.

Persistent ids and out-of-band buffers are refused too, and so are protocol-0–2 pickles of arrays (they encode
bytes through ``_codecs.encode``, a callable; the official files use protocols 3–4). Everything the pickle itself
builds (lists, tuples, dicts, strings, numbers) involves no callable. After loading, :func:`check_structure` walks
the result and accepts only lists/tuples nesting numeric arrays (object arrays are walked, since the ``causal_il``
``.npz`` files hold one).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "restricted_loads", "restricted_load", "check_structure"]

# the reconstruct function of the running NumPy, taken from an array's own reduce tuple (no deprecated import)
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file references something other than lists, tuples and NumPy arrays; it was not executed."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` knows only the NumPy array constructors listed in the module doc."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: trajectory files may only hold lists, tuples and NumPy arrays"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids: not a plain trajectory file")


def restricted_load(handle) -> Any:
    """Unpickle from a binary file object with :class:`RestrictedUnpickler` (no out-of-band buffers)."""
    return RestrictedUnpickler(handle, buffers=()).load()


def restricted_loads(data: bytes) -> Any:
    return restricted_load(io.BytesIO(data))


def check_structure(obj: Any, where: str = "file", depth: int = 0) -> None:
    """Accept only lists/tuples (nesting ≤ 4) of numeric arrays or numbers; raise ``ValueError`` naming the spot."""
    if depth > 4:
        raise ValueError(f"{where}: nested deeper than expected for a list of (states, actions) tuples")
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_structure(item, f"{where}[{i}]", depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            for i, item in enumerate(obj.reshape(-1)):
                check_structure(item, f"{where}.flat[{i}]", depth + 1)
        elif obj.dtype.kind not in "fiub":
            raise ValueError(f"{where}: array of dtype {obj.dtype} (expected numbers)")
    elif not isinstance(obj, (int, float)) or isinstance(obj, bool):
        raise ValueError(f"{where}: {type(obj).__name__} (expected lists, tuples and numeric arrays only)")

"""Calibration sets on disk without pickle: one ``.safetensors`` file (the tensors) whose metadata holds the structure
(JSON). Nothing in such a file can run code when it is read.

    save_calibration(cap.result, "calib.safetensors")       # a CalibrationSet, or a list of calibration items
    calib = load_calibration("calib.safetensors")

The structure encodes tensors by key (``{"t": "3"}``), lists, tuples, string-keyed dicts, ``None``/bool/int/float/str
and :class:`~vqcore.calib.CalibItem` / :class:`~vqcore.calib.CalibrationSet`. A tensor shared by several items (a
batch-independent input Capture keeps whole) is stored once.

Older ``torch.save`` files (``.pt``) are still read, with ``torch.load(weights_only=True)`` and an allow-list of the two
calibration classes: tensors, containers and numbers only, so a file from someone else cannot execute code; a file
that would need anything else is refused with a ``ValueError`` naming what it asked for.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .capture import CalibItem, CalibrationSet

__all__ = ["save_calibration", "load_calibration", "CALIB_FORMAT"]

CALIB_FORMAT = "vqcore-calib/1"
_ITEM_FIELDS = ("args", "kwargs", "output", "timestep", "call_index", "sample_index", "token_index", "rows")


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._keys: dict[int, str] = {}

    def __call__(self, obj: Any, where: str) -> Any:
        if isinstance(obj, torch.Tensor):
            key = self._keys.get(id(obj))
            if key is None:
                key = self._keys[id(obj)] = str(len(self.tensors))
                self.tensors[key] = obj.detach().to("cpu").contiguous().clone()
            return {"t": key}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return {"v": obj}
        if isinstance(obj, CalibrationSet):
            return {"set": {name: [self(i, f"{where}[{name!r}]") for i in items] for name, items in obj.items.items()}}
        if isinstance(obj, CalibItem):
            return {"item": {f: self(getattr(obj, f), f"{where}.{f}") for f in _ITEM_FIELDS}}
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return {"tuple": [self(o, f"{where}[{i}]") for i, o in enumerate(obj)]}
        if isinstance(obj, list):
            return {"list": [self(o, f"{where}[{i}]") for i, o in enumerate(obj)]}
        if isinstance(obj, dict):
            bad = [k for k in obj if not isinstance(k, str)]
            if bad:
                raise TypeError(f"calibration data: dict keys must be strings, got {bad[0]!r} at {where}")
            return {"dict": {k: self(v, f"{where}[{k!r}]") for k, v in obj.items()}}
        if hasattr(obj, "to_tuple") and hasattr(obj, "keys"):  # diffusers BaseOutput: stored as its dict
            return {"dict": {k: self(obj[k], f"{where}[{k!r}]") for k in list(obj.keys())}}  # noqa: SIM118
        raise TypeError(f"calibration data: cannot store a {type(obj).__name__} at {where} (tensors, lists, tuples, "
                        "string-keyed dicts, numbers, strings, None, CalibItem and CalibrationSet are stored)")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"malformed calibration structure node {str(node)[:80]!r}")
    (kind, val), = node.items()
    if kind == "t":
        if val not in tensors:
            raise ValueError(f"calibration structure names tensor {val!r}, which the file does not hold")
        return tensors[val]
    if kind == "v":
        return val
    if kind == "tuple":
        return tuple(_decode(v, tensors) for v in val)
    if kind == "list":
        return [_decode(v, tensors) for v in val]
    if kind == "dict":
        return {k: _decode(v, tensors) for k, v in val.items()}
    if kind == "item":
        return CalibItem(**{f: _decode(val[f], tensors) for f in _ITEM_FIELDS})
    if kind == "set":
        return CalibrationSet({name: [_decode(i, tensors) for i in items] for name, items in val.items()})
    raise ValueError(f"unknown calibration structure node {kind!r}")


def save_calibration(calib: Any, path: str | os.PathLike) -> Path:
    """Write ``calib`` (a :class:`CalibrationSet`, or a list of calibration items as :func:`vqcore.quantize` accepts
    them) to ``path`` as one safetensors file with the structure in its metadata; atomic."""
    from safetensors.torch import save

    from commons.io import atomic_write

    path = Path(path)
    enc = _Encoder()
    structure = enc(calib, "calib")
    blob = save(enc.tensors, metadata={"format": CALIB_FORMAT, "structure": json.dumps(structure)})
    with atomic_write(path, "wb") as handle:
        handle.write(blob)
    return path


def load_calibration(path: str | os.PathLike) -> Any:
    """Read a calibration file: the safetensors format of :func:`save_calibration`, or a ``torch.save`` file holding
    only tensors, containers, numbers and the calibration classes (``weights_only=True``; nothing in it is executed).
    Raises ``ValueError`` with one line naming the file and the problem (missing, corrupt, unsafe)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"calibration file {path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) == 8 and int.from_bytes(head, "little") < 100_000_000 and path.suffix != ".pt":
        return _load_safetensors(path)
    try:
        with torch.serialization.safe_globals([CalibItem, CalibrationSet]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)[:5])
        except Exception:  # noqa: BLE001 - only for the message
            names = ""
        if not names:  # not a refusal of a named callable: the file itself is broken
            raise ValueError(f"calibration file {path} could not be read (not a safetensors or torch file, "
                             f"truncated or corrupt?): {str(err).splitlines()[0] if str(err) else ''}") from None
        raise ValueError(f"calibration file {path} refers to {names} that loading would have to "
                         "execute; refusing to unpickle it (store it with vqcore.calib.save_calibration, or as "
                         "tensors, lists, tuples and dicts)") from None
    except Exception as err:  # noqa: BLE001 - the unpickler's errors on garbage are of many kinds (IndexError, ...)
        raise ValueError(f"calibration file {path} could not be read (truncated, corrupt or not a torch file?): "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _load_safetensors(path: Path) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"calibration file {path} could not be read (truncated or corrupt?): {err}") from None
    if meta.get("format") != CALIB_FORMAT or "structure" not in meta:
        raise ValueError(f"calibration file {path} is a safetensors file without vqcore calibration metadata "
                         f"(format {meta.get('format')!r}; write it with vqcore.calib.save_calibration)")
    try:
        structure = json.loads(meta["structure"])
    except json.JSONDecodeError as err:
        raise ValueError(f"calibration file {path} has corrupt structure metadata: {err}") from None
    return _decode(structure, tensors)

"""Checkpoints a user can open by hand, written so that a crash never leaves half a file behind.

Layout of a checkpoint directory (diffusers-like)::

    <dir>/model.safetensors   tensors (flat ``name -> tensor``)
    <dir>/config.json         JSON config (architecture, hyper-parameters, format version)

Everything is written to a temporary file in the same directory and then ``os.replace``-d into place, which is atomic
on POSIX and Windows. Training state (optimiser moments, step counters, RNG states) that is not a flat tensor dict is
stored with :func:`save_training_state` (``torch.save``, also atomic) so long runs can resume;
:func:`load_training_state` reads it with ``torch.load(weights_only=True)`` plus an explicit allow-list (numpy arrays,
scalars and dtypes), so a state file from someone else cannot run code when it is opened.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "CheckpointError",
    "config_differences",
    "atomic_write",
    "save_json",
    "load_json",
    "save_checkpoint",
    "load_checkpoint",
    "save_training_state",
    "load_training_state",
    "RunDir",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, or does not match what the caller expects."""


def _as_path(path: str | os.PathLike, name: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success rename it over ``path``.

    If the block raises (or the process is interrupted), ``path`` keeps its previous content and the temporary file is
    removed.
    """
    path = _as_path(path, "path")
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    path = _as_path(path, "path")
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    with atomic_write(path, "w") as handle:
        handle.write(text + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", "")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a clear error when it is missing or corrupt."""
    path = _as_path(path, "path")
    if not path.is_file():
        raise CheckpointError(f"no such JSON file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON (truncated or corrupt): {err}") from err


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = (),
                       common_only: bool = False) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each key whose values differ, in key order: what a resume that must
    continue the same run refuses. Values compare as JSON stores them (tuples equal lists; objects JSON cannot hold by
    ``str``), so a configuration read back from a saved state equals the one it was written from. Keys in ``ignore``
    may differ; ``common_only`` compares only keys both have (settings added since the state was written)."""
    def plain(v: Any) -> Any:
        return json.loads(json.dumps(v, default=str))

    skip = set(ignore)
    keys = set(saved) & set(current) if common_only else set(saved) | set(current)
    return [(k, saved.get(k), current.get(k)) for k in sorted(keys)
            if k not in skip and plain(saved.get(k)) != plain(current.get(k))]


def save_checkpoint(
    directory: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Save ``state_dict`` as ``model.safetensors`` and ``config`` as ``config.json`` inside ``directory``.

    Refuses to replace an existing checkpoint unless ``overwrite=True``. Tensors are made contiguous and moved to the
    CPU; shared storage between entries is broken (safetensors stores each tensor once).
    """
    from safetensors.torch import save

    directory = _as_path(directory, "directory")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of str -> Tensor, got {type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state_dict must map str -> Tensor; offending keys: {bad[:5]}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or None, got {type(config).__name__}")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory {directory} exists and is not a directory")
    if (directory / WEIGHTS_NAME).exists() and not overwrite:
        raise FileExistsError(f"{directory / WEIGHTS_NAME} already exists; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    full_config = {"format_version": FORMAT_VERSION, **dict(config or {})}
    metadata = {"format_version": str(FORMAT_VERSION)}
    with atomic_write(directory / WEIGHTS_NAME, "wb") as handle:
        handle.write(save(tensors, metadata=metadata))
    save_json(directory / CONFIG_NAME, full_config)
    return directory


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    expected_keys: set[str] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(state_dict, config)`` written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` for a missing directory/file, a truncated or corrupt safetensors file, or (when
    ``expected_keys`` is given) a key set that does not match, listing the missing and unexpected keys.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = _as_path(directory, "directory")
    weights = directory / WEIGHTS_NAME
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}; is it a checkpoint directory?")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} could not be read (truncated or corrupt?): {err}") from err
    config = load_json(directory / CONFIG_NAME) if (directory / CONFIG_NAME).is_file() else {}
    if expected_keys is not None:
        missing = sorted(set(expected_keys) - set(state))
        unexpected = sorted(set(state) - set(expected_keys))
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {directory} does not match the model: missing keys {missing[:8]}"
                f"{'...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                f"{'...' if len(unexpected) > 8 else ''}"
            )
    return state, config


def save_training_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Atomically ``torch.save`` a resumable training state (model/optimiser state dicts, step, RNG...)."""
    path = _as_path(path, "path")
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    with atomic_write(path, "wb") as handle:
        torch.save(dict(state), handle)
    return path


def _numpy_safe_globals() -> list[Any]:
    """The numpy classes a training state may hold (``np.random.RandomState.get_state()`` arrays, numpy scalars in
    histories): array/scalar reconstruction and the dtype classes. None of them runs code of the file's choosing."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
        return []
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = {type(np.dtype(c)) for c in "?bhilqBHILQefdgFDGUSV"} | {type(np.dtype("M8[s]")), type(np.dtype("m8[s]"))}
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *sorted(dtypes, key=str)]


def load_training_state(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, allow: tuple[type, ...] = ()
) -> dict[str, Any] | None:
    """Return the state saved by :func:`save_training_state`, or ``None`` when there is nothing to resume.

    Nothing in the file runs: it is read with ``torch.load(weights_only=True)``, which rebuilds only tensors, numbers,
    strings, containers, optimiser/RNG states, plus the numpy arrays, scalars and dtypes of
    :func:`_numpy_safe_globals` and the classes in ``allow``. A file that names any other callable (a pickle that
    would import and call ``os.system``, say) is refused with :class:`CheckpointError` naming what it asked for,
    before anything of it is executed."""
    path = _as_path(path, "path")
    if not path.exists():
        return None
    try:
        with torch.serialization.safe_globals([*_numpy_safe_globals(), *allow]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(path)
        if not unsafe:  # not a refusal of a named callable: the file itself is broken
            raise CheckpointError(f"training state {path} could not be read (not a torch file, truncated or "
                                  f"corrupt?): {str(err).splitlines()[0] if str(err) else ''}") from err
        raise CheckpointError(
            f"training state {path} refers to {unsafe} that loading would have to execute; refusing to unpickle it "
            "(only tensors, numbers, strings, containers and numpy arrays are allowed)"
        ) from None
    except Exception as err:  # noqa: BLE001 - garbage makes the unpickler fail in many ways (EOFError, IndexError...)
        raise CheckpointError(f"training state {path} could not be read (truncated or corrupt?): "
                              f"{type(err).__name__}: {err}") from err


def _unsafe_globals(path: Path) -> str:
    """The globals a pickle would import, read without executing it ('' when that cannot be determined)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - best effort, only for the message
        return ""
    return ", ".join(names[:5]) + ("..." if len(names) > 5 else "")


class RunDir:
    """A run folder ``<root>/<name>``; ``name`` defaults to a timestamp.

    With ``resume=True`` an existing folder is reused (its ``state.pt`` is what :meth:`load_state` returns); without it
    an existing folder is an error, so a new run never overwrites an old one by accident.
    """

    STATE_NAME = "state.pt"

    def __init__(self, root: str | os.PathLike = "runs", name: str | None = None, resume: bool = False):
        root = _as_path(root, "root")
        if name is not None and (not isinstance(name, str) or not name or "/" in name or name in (".", "..")):
            raise ValueError(f"name must be a non-empty folder name without '/', got {name!r}")
        if name is None:
            name = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        self.path = root / name
        if self.path.exists() and not resume:
            raise FileExistsError(f"run folder {self.path} exists; pass resume=True to continue it")
        self.path.mkdir(parents=True, exist_ok=True)
        self.resumed = resume and (self.path / self.STATE_NAME).exists()

    @property
    def state_path(self) -> Path:
        return self.path / self.STATE_NAME

    def save_state(self, state: Mapping[str, Any]) -> Path:
        return save_training_state(self.state_path, state)

    def load_state(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        return load_training_state(self.state_path, map_location)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """Load ``state.pt``'s ``"model"`` (and ``"optimizer"``) entries into ``model`` (and ``optimizer``); returns
        the whole state, for the training loop's own counters, or ``None`` when the folder has no state yet."""
        state = self.load_state(map_location)
        if state is not None:
            model.load_state_dict(state["model"])
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
        return state

    def file(self, name: str) -> Path:
        """Path of a file inside the run folder."""
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, resumed={self.resumed})"

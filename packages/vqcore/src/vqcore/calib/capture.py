"""Capture calibration data: the inputs (and outputs) of chosen modules across denoising timesteps.

Wrap any sampling code — a diffusers pipeline call or your own loop — in :class:`Capture`; forward hooks on the target
modules copy their positional/keyword tensor inputs (and outputs) to the CPU. A pre-hook on the root model reads the
``timestep`` argument of every call, so every stored item knows its timestep, its denoising-call index and its sample
index (the row of the batch; rows keep their index across steps, and later batches continue the numbering).

    with Capture(pipe.transformer, targets="blocks", max_bytes=2**30) as cap:
        pipe(prompt=prompts, num_inference_steps=20)
    calib = cap.result   # CalibrationSet

Memory stays bounded: once ``max_bytes`` is reached nothing more is stored (a warning says how much was skipped).
``every_n_steps`` keeps only every n-th denoising call (the official code keeps evenly spaced steps).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["CalibItem", "CalibrationSet", "Capture", "find_blocks"]

logger = logging.getLogger(__name__)
ROOT = "__model__"


@dataclass
class CalibItem:
    """One captured call of one module, for one sample (batch row)."""

    args: tuple
    kwargs: dict
    output: Any
    timestep: float | None
    call_index: int
    sample_index: int
    token_index: torch.Tensor | None = None  # kept token positions when Capture subsampled tokens (else None)
    rows: int = 1  # rows of dim 0 that belong to this sample (Latte-style blocks see [B·frames, ...] inputs)

    def nbytes(self) -> int:
        return _unique_nbytes(_tensors((self.args, self.kwargs, self.output)), set())


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _map(obj: Any, fn) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map(o, fn) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if hasattr(obj, "to_tuple") and hasattr(obj, "keys"):  # diffusers BaseOutput
        return {k: _map(obj[k], fn) for k in list(obj.keys())}  # noqa: SIM118 - BaseOutput
    return obj


def _unique_nbytes(tensors: Iterator[torch.Tensor], seen: set[int]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared tensors are counted once)."""
    total = 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _sample_slice(obj: Any, b: int, batch: int, rows: int) -> Any:
    """Sample ``b``'s part of every batched tensor, as its own compact copy: ``rows`` rows of tensors with
    ``batch·rows`` rows (sample-major, as diffusers folds frames or tokens into the batch), one row of tensors with
    ``batch`` rows; other tensors (shared across the batch) are kept whole."""
    def cut(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            return t
        if t.shape[0] == batch * rows:
            return t[b * rows:(b + 1) * rows].clone()
        if t.shape[0] == batch:
            return t[b:b + 1].clone()
        return t

    return _map(obj, cut)


def stack_items(items: Sequence[Any], rows: int = 1) -> Any:
    """Concatenate per-sample structures (as stored) back into a batch along dim 0 (tensors with ``rows`` or one
    row per sample); tensors shared across the batch are taken from the first item."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        if first.ndim == 0:
            return first
        if all(t.shape == first.shape for t in items) and first.shape[0] in (1, rows):
            return torch.cat(list(items), 0)
        return first
    if isinstance(first, (list, tuple)):
        return type(first)(stack_items([it[i] for it in items], rows) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: stack_items([it[k] for it in items], rows) for k in first}
    return first


@dataclass
class CalibrationSet:
    """Captured items per module name (``"__model__"`` for the root model's own inputs/outputs)."""

    items: dict[str, list[CalibItem]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> list[CalibItem]:
        if name not in self.items:
            raise KeyError(f"nothing captured for {name!r}; captured: {sorted(self.items)}")
        return self.items[name]

    def names(self) -> list[str]:
        return list(self.items)

    def nbytes(self) -> int:
        seen: set[int] = set()
        return sum(_unique_nbytes(_tensors((i.args, i.kwargs, i.output)), seen) for items in self.items.values()
                   for i in items)

    def timesteps(self) -> list[float]:
        return sorted({i.timestep for items in self.items.values() for i in items if i.timestep is not None})

    def subset(self, name: str, indices: Sequence[int]) -> list[CalibItem]:
        items = self[name]
        return [items[i] for i in indices]

    def __len__(self) -> int:
        return sum(len(v) for v in self.items.values())


def find_blocks(model: nn.Module) -> list[str]:
    """Qualified names of the transformer/UNet blocks of a diffusers model, also when it is wrapped
    (``transformer_blocks.i``, ``temporal_transformer_blocks.i``, ``down_blocks.i``, ``mid_block``, ``up_blocks.i``;
    searched breadth-first, the first module that has any of them wins)."""
    attrs = ("transformer_blocks", "temporal_transformer_blocks", "single_transformer_blocks", "blocks",
             "down_blocks", "mid_block", "up_blocks")
    queue: list[tuple[str, nn.Module]] = [("", model)]
    while queue:
        prefix, mod = queue.pop(0)
        names = []
        for attr in attrs:
            sub = getattr(mod, attr, None)
            if isinstance(sub, nn.ModuleList):
                names += [f"{prefix}{attr}.{i}" for i in range(len(sub))]
            elif isinstance(sub, nn.Module):
                names.append(f"{prefix}{attr}")
        if names:
            return names
        queue += [(f"{prefix}{n}.", c) for n, c in mod.named_children()]
    raise ValueError(f"{type(model).__name__} has no recognised block list (transformer_blocks, blocks, "
                     "down_blocks/up_blocks); pass targets=[module names] explicitly")


class Capture:
    """Context manager that records module inputs/outputs while sampling code runs (see module docstring).

    Args:
        model: the denoiser (root module whose ``timestep`` argument is read).
        targets: module names, ``"blocks"`` (all blocks, :func:`find_blocks`) or ``None`` (the root model only).
        store_outputs: also store outputs (needed for reconstruction targets).
        max_bytes: memory budget for everything stored.
        every_n_steps: keep every n-th denoising call.
        include_root: also store the root model's inputs/outputs (whole-model distillation, data selection).
        max_tokens: keep at most this many token positions of every ``[B, N, C]`` tensor of a call (the same random
            positions for inputs and outputs of that call, recorded in ``CalibItem.token_index``). Meant for
            per-layer targets (linear layers: statistics for ranges and channel balancing); attention blocks and the
            root model need whole sequences, so subsampling is refused for them (``include_root`` must be False and
            targets must be given by name).
        seed: seed of the token subsampling.
    """

    def __init__(self, model: nn.Module, targets: str | Sequence[str] | None = "blocks", store_outputs: bool = True,
                 max_bytes: int = 2**31, every_n_steps: int = 1, include_root: bool = True,
                 max_tokens: int | None = None, seed: int = 0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive int, got {every_n_steps!r}")
        if not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or max_tokens < 1:
                raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
            if include_root or targets is None or targets == "blocks":
                raise ValueError("max_tokens needs targets given by name (per-layer modules) and include_root=False: "
                                 "blocks and the root model need whole token sequences")
        self.max_tokens = max_tokens
        self._gen = torch.Generator().manual_seed(seed)
        self.model = model
        if targets is None:
            names: list[str] = []
        elif targets == "blocks":
            names = find_blocks(model)
        else:
            names = list(targets)
            missing = [n for n in names if n not in dict(model.named_modules())]
            if missing:
                raise ValueError(f"targets not found in the model: {missing[:5]}")
        self.targets = names
        self.store_outputs = store_outputs
        self.max_bytes = max_bytes
        self.every = every_n_steps
        self.include_root = include_root or not names
        self.result = CalibrationSet()
        self._handles: list = []
        self._call = -1
        self._timestep: float | None = None
        self._batch = 0
        self._rows_seen: dict[float | None, int] = {}
        self._offset = 0
        self._bytes = 0
        self._seen_storages: set[int] = set()
        self._skipped = 0

    def _keep(self) -> bool:
        return self._call % self.every == 0

    def _root_pre(self, module, args, kwargs):
        self._call += 1
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if isinstance(t, torch.Tensor):
            t = float(t.flatten()[0]) if t.numel() else None
        self._timestep = None if t is None else float(t)
        first = kwargs.get("hidden_states", kwargs.get("sample", args[0] if args else None))
        self._batch = first.shape[0] if isinstance(first, torch.Tensor) else 1
        self._offset = self._rows_seen.get(self._timestep, 0)
        self._rows_seen[self._timestep] = self._offset + self._batch

    def _store(self, name: str, args, kwargs, output) -> None:
        if not self._keep():
            return
        first = next(_tensors((args, kwargs)), None)
        batch = self._batch
        if first is None or first.ndim == 0 or first.shape[0] % batch:
            rows, batch = first.shape[0] if first is not None and first.ndim else 1, 1  # keep the call whole
        else:
            rows = first.shape[0] // batch
        out = output if self.store_outputs else None
        token_index = None
        if self.max_tokens is not None:  # one random token subset per call, shared by its inputs and outputs
            n = max((t.shape[1] for t in _tensors((args, kwargs, out)) if t.ndim == 3), default=0)
            if n > self.max_tokens:
                token_index = torch.randperm(n, generator=self._gen)[:self.max_tokens].sort().values
        for b in range(batch):
            part = _sample_slice((args, kwargs, out), b, batch, rows)
            part = _map(part, lambda t: t.detach().to("cpu"))
            if token_index is not None:
                def pick(t: torch.Tensor, n=n) -> torch.Tensor:
                    return t[:, token_index].contiguous() if t.ndim == 3 and t.shape[1] == n else t

                part = _map(part, pick)
            size = _unique_nbytes(_tensors(part), set(self._seen_storages))
            if self._bytes + size > self.max_bytes:
                self._skipped += 1
                continue
            self._bytes += _unique_nbytes(_tensors(part), self._seen_storages)
            item = CalibItem(part[0], part[1], part[2], self._timestep, self._call, self._offset + b, token_index,
                             rows)
            self.result.items.setdefault(name, []).append(item)

    def _root_post(self, module, args, kwargs, output):
        if self.include_root:
            self._store(ROOT, args, kwargs, output)

    def __enter__(self) -> Capture:
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre, with_kwargs=True))
        self._handles.append(self.model.register_forward_hook(self._root_post, with_kwargs=True))
        modules = dict(self.model.named_modules())
        for name in self.targets:
            self._handles.append(modules[name].register_forward_hook(
                lambda m, a, k, o, name=name: self._store(name, a, k, o), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._skipped:
            logger.warning("Capture: memory budget of %d bytes reached; %d items were not stored", self.max_bytes,
                           self._skipped)
        logger.info("Capture: %d items, %.1f MB, %d timesteps", len(self.result), self._bytes / 2**20,
                    len(self.result.timesteps()))

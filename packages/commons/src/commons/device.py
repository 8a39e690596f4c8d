"""Devices, dtypes, seeding, and one training backend for single-process and ``accelerate launch`` runs.

Every training loop in the repository goes through :class:`TrainingBackend`, so the same code runs on a laptop CPU,
one GPU, or several GPUs started with ``accelerate launch`` without changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "resolve_device",
    "resolve_dtype",
    "autocast",
    "seed_everything",
    "TrainingBackend",
]

logger = logging.getLogger(__name__)

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:i"`` or ``"mps"`` into an available :class:`torch.device`.

    ``"auto"`` picks CUDA when available, else CPU. Asking for a device that is not present raises ``ValueError``
    instead of failing later inside a kernel.
    """
    if isinstance(spec, torch.device):
        # accelerate's device under torchrun on CPU is torch.device("cpu", 0): one CPU device, whatever the index
        spec = "cpu" if spec.type == "cpu" else str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device must be a str or torch.device, got {type(spec).__name__}")
    spec = spec.strip().lower()
    if not _DEVICE_PATTERN.match(spec):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {spec!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was requested but CUDA is not available on this machine; use 'cpu'")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device {spec!r} was requested but only {count} CUDA device(s) are visible")
        return torch.device("cuda", index)
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' was requested but MPS is not available on this machine")
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(spec: str | torch.dtype) -> torch.dtype:
    """Map ``"fp32" | "bf16" | "fp16"`` (or a floating :class:`torch.dtype`) to a torch dtype."""
    if isinstance(spec, torch.dtype):
        if not spec.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {spec}")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"dtype must be a str or torch.dtype, got {type(spec).__name__}")
    try:
        return _DTYPES[spec.strip().lower()]
    except KeyError:
        raise ValueError(f"dtype must be one of 'fp32', 'bf16', 'fp16', got {spec!r}") from None


@contextlib.contextmanager
def autocast(device: str | torch.device, dtype: str | torch.dtype = "fp32") -> Iterator[None]:
    """Autocast region for ``dtype`` on ``device``; a no-op for fp32 so callers need no branches.

    fp16 on CPU is refused (PyTorch's CPU autocast supports bf16 only).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype)
    if dtype == torch.float32:
        yield
        return
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("dtype 'fp16' autocast is not supported on CPU; use 'bf16' or 'fp32'")
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask torch for deterministic kernels."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True


class _SingleProcessState:
    """What :class:`TrainingBackend` needs from ``accelerate.Accelerator`` when accelerate is not installed."""

    def __init__(self, device: torch.device, mixed_precision: str):
        self.device = device
        self.is_main_process = True
        self.num_processes = 1
        self.process_index = 0
        self.mixed_precision = mixed_precision


class _GlobalRNGRandomSampler(torch.utils.data.RandomSampler):
    """A ``RandomSampler`` whose every pass seeds its generator from the global torch RNG, as an unseeded
    ``RandomSampler`` does in one process.

    ``accelerate`` gives an unseeded ``RandomSampler`` of a sharded loader one generator, seeded once at ``prepare``
    and advanced pass after pass, so a training loop that reseeds torch per epoch (for resumable runs) does not
    control the data order under several processes: a run resumed at epoch ``e`` replays epoch 0's order. With
    this sampler the order of a pass is the one a single process would draw from the same global RNG state (equal on
    every rank after ``seed_everything``; accelerate also synchronises the generator from rank 0 first).
    """

    def __init__(self, sampler: torch.utils.data.RandomSampler):
        super().__init__(sampler.data_source, replacement=sampler.replacement, num_samples=sampler._num_samples,
                         generator=torch.Generator())

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        yield from super().__iter__()


class TrainingBackend:
    """One object every training loop talks to, single-process or under ``accelerate launch``.

    With ``accelerate`` installed it wraps :class:`accelerate.Accelerator` (so ``accelerate launch --num_processes 4
    train.py`` shards data and all-reduces gradients). Without it, it runs single-process on
    :func:`resolve_device` ``("auto")`` with the same methods.

    Args:
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"``.
        cpu: force the CPU even when a GPU is present (a host without CUDA always runs on CPU processes).
        device: explicit device for the single-process fallback (ignored under accelerate, which owns placement).
        use_accelerate: ``None`` (use it if installed), ``True`` (require it) or ``False`` (never).
    """

    def __init__(
        self,
        mixed_precision: str = "no",
        cpu: bool = False,
        device: str | torch.device | None = None,
        use_accelerate: bool | None = None,
    ):
        if mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {mixed_precision!r}")
        self.mixed_precision = mixed_precision
        self._accelerator: Any = None
        if use_accelerate is not False:
            try:
                import accelerate
            except ImportError:
                if use_accelerate:
                    raise ImportError(
                        "use_accelerate=True needs the 'accelerate' package: pip install 'paperlab-commons[accel]'"
                    ) from None
            else:
                # on a host without CUDA, accelerate only shards over CPU processes (torchrun / accelerate launch)
                # with cpu=True; otherwise every process would run the whole job alone
                self._accelerator = accelerate.Accelerator(mixed_precision=mixed_precision,
                                                           cpu=cpu or not torch.cuda.is_available())
        self._scaler: Any = None
        self._optimizers: list[torch.optim.Optimizer] = []
        if self._accelerator is None:
            dev = torch.device("cpu") if cpu else resolve_device(device or "auto")
            self._state = _SingleProcessState(dev, mixed_precision)
            if mixed_precision == "fp16":  # fp16 gradients underflow without loss scaling (accelerate has its own)
                self._scaler = torch.amp.GradScaler(dev.type)
        elif device is not None and torch.device(device) != self._accelerator.device:
            logger.info("TrainingBackend: accelerate places the model on %s; ignoring device=%s",
                        self._accelerator.device, device)

    @property
    def uses_accelerate(self) -> bool:
        return self._accelerator is not None

    @property
    def device(self) -> torch.device:
        return self._accelerator.device if self._accelerator is not None else self._state.device

    @property
    def is_main_process(self) -> bool:
        return self._accelerator.is_main_process if self._accelerator is not None else True

    @property
    def num_processes(self) -> int:
        return self._accelerator.num_processes if self._accelerator is not None else 1

    @property
    def process_index(self) -> int:
        return self._accelerator.process_index if self._accelerator is not None else 0

    def prepare(self, *objects: Any) -> Any:
        """Move models to the device and wrap models/optimisers/loaders for distributed runs.

        Under several processes, the unseeded ``RandomSampler`` of a shuffled ``DataLoader`` is replaced by one that
        seeds every pass from the global torch RNG (:class:`_GlobalRNGRandomSampler`), so that the data order, and
        with it a resumed run, is the one the same code draws in a single process.
        """
        if self._accelerator is not None:
            if self._accelerator.num_processes > 1:
                for o in objects:  # shuffled loaders: the data order follows the global RNG, as in one process
                    bs = getattr(o, "batch_sampler", None) if isinstance(o, torch.utils.data.DataLoader) else None
                    smp = getattr(bs, "sampler", None)
                    if type(smp) is torch.utils.data.RandomSampler and smp.generator is None:
                        bs.sampler = _GlobalRNGRandomSampler(smp)
            out = self._accelerator.prepare(*objects)
        else:
            out = tuple(o.to(self.device) if isinstance(o, torch.nn.Module) else o for o in objects)
            self._optimizers.extend(o for o in objects if isinstance(o, torch.optim.Optimizer))
        if len(objects) == 1:
            return out[0] if isinstance(out, tuple) else out
        return out

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, with fp16 loss scaling where the mixed-precision policy needs it."""
        if self._accelerator is not None:
            self._accelerator.backward(loss)
        elif self._scaler is not None:
            self._scaler.scale(loss).backward()
        else:
            loss.backward()

    def clip_grad_norm_(self, parameters: Any, max_norm: float) -> torch.Tensor:
        """Clip the gradient norm of ``parameters`` to ``max_norm``; returns the norm before clipping.

        Use this instead of ``torch.nn.utils.clip_grad_norm_``: under fp16 the gradients are loss-scaled until the
        optimiser step, so they are unscaled first (accelerate's ``clip_grad_norm_`` does the same under
        ``accelerate launch``). In the single-process fp16 path the optimisers passed to :meth:`prepare` are
        unscaled.
        """
        if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool) or max_norm <= 0:
            raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
        if self._accelerator is not None:
            return self._accelerator.clip_grad_norm_(parameters, max_norm)
        if self._scaler is not None:
            if not self._optimizers:
                raise RuntimeError("clip_grad_norm_ under fp16 needs the optimizer to go through prepare() first")
            for opt in self._optimizers:
                self._scaler.unscale_(opt)
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; in the single-process fp16 path through the loss scaler (skips inf/NaN steps)."""
        if self._scaler is not None and self._accelerator is None:
            self._scaler.step(optimizer)
            self._scaler.update()
        else:
            optimizer.step()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision region matching ``mixed_precision``."""
        if self._accelerator is not None:
            return self._accelerator.autocast()
        if self.mixed_precision == "no":
            return contextlib.nullcontext()
        return autocast(self.device, self.mixed_precision)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` from all processes (identity when single-process)."""
        if self._accelerator is not None:
            return self._accelerator.gather_for_metrics(tensor)
        return tensor

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self._accelerator is not None:
            return self._accelerator.unwrap_model(model)
        return model

    def wait(self) -> None:
        """Barrier across processes (no-op when single-process)."""
        if self._accelerator is not None:
            self._accelerator.wait_for_everyone()

    def open_run_dir(self, run_dir: str | os.PathLike | None, resume: bool = False) -> Any:
        """The :class:`commons.io.RunDir` at ``run_dir`` on every process (``None`` passes through).

        Every process first checks whether the folder exists (so a refused run fails on every process instead of
        leaving the others at a barrier), then the main process creates it and the others attach to it.
        """
        from pathlib import Path

        from .io import RunDir

        if run_dir is None:
            return None
        if not isinstance(run_dir, (str, os.PathLike)):
            raise TypeError(f"run_dir must be a path or None, got {type(run_dir).__name__}")
        path = Path(run_dir)
        if path.exists() and not resume:
            raise FileExistsError(f"run folder {path} exists; pass resume=True to continue it")
        self.wait()
        run = RunDir(path.parent, path.name, resume=resume) if self.is_main_process else None
        self.wait()
        return run if run is not None else RunDir(path.parent, path.name, resume=True)

    def close(self) -> None:
        """Finish a distributed run: barrier, then tear the process group down.

        Without this, a process that exits while gloo/NCCL threads are alive can abort with
        ``terminate called without an active exception``. Safe to call twice and when single-process.
        """
        if self._accelerator is None:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self._accelerator.wait_for_everyone()
            dist.destroy_process_group()

    def __enter__(self) -> TrainingBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TrainingBackend(device={self.device}, processes={self.num_processes}, "
                f"mixed_precision={self.mixed_precision!r}, accelerate={self.uses_accelerate})")

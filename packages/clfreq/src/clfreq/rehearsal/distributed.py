"""Data-parallel helpers for :func:`clfreq.rehearsal.train_continual` (``torchrun`` / ``accelerate launch``).

Policy (documented in the README):

* **Data**: every process draws the same seeded permutation of the task's data (padded to a multiple of the world
  size, as ``DistributedSampler`` does) and takes every ``world``-th index from its rank on, so the processes see
  disjoint shards and run the same number of steps.
* **Model**: the rehearsal methods run several forward passes per step (current batch, one or two buffer draws, the
  CLS-ER EMA teachers) through ``encode``/``classify`` rather than one ``forward``, which DDP's forward-hooked
  reducer does not cover. So instead of wrapping the net in DDP, after every backward the gradients of all trainable
  parameters and the floating buffers (BatchNorm running statistics) are packed into one flat tensor and
  all-reduced (mean) — the same update DDP makes, with one collective per step. Parameters are broadcast from rank 0
  at setup, so all copies start equal and stay equal.
* **Buffer**: each process keeps a *shard* of the reservoir (capacity ``C // world``, +1 for the first
  ``C % world`` ranks) filled by reservoir sampling over its own data shard. Every sample of the stream is then
  kept with the same probability ``C / n`` as in one global reservoir, the total memory is the single-process
  budget (not ``world`` copies), and no images cross processes. Replay draws come from the local shard, so the
  global replay batch grows with the world size exactly like the current batch does.
* **CLFD counts** (per-class feature-activation counts that drive the selection schedule) are summed over the
  processes at the end of every epoch, before the schedule reads them, so the selection probabilities stay equal.
"""

from __future__ import annotations

import torch


def dist_world(backend=None) -> tuple[int, int]:
    """(rank, world size) of an initialised ``torch.distributed`` group used by ``backend``; (0, 1) otherwise."""
    import torch.distributed as dist

    if backend is None or getattr(backend, "num_processes", 1) <= 1:
        return 0, 1
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("backend reports several processes but torch.distributed is not initialised")
    return dist.get_rank(), dist.get_world_size()


def shard_permutation(perm: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Indices of ``perm`` for ``rank``: pad to a multiple of ``world`` by wrapping around, take ``rank::world``."""
    if world == 1:
        return perm
    total = -(-len(perm) // world) * world
    if total > len(perm):
        perm = torch.cat([perm, perm[: total - len(perm)]])
    return perm[rank::world]


def shard_capacity(capacity: int, rank: int, world: int) -> int:
    return capacity // world + (1 if rank < capacity % world else 0)


def broadcast_modules(modules, src: int = 0) -> None:
    """Copy parameters and buffers of ``modules`` from rank ``src`` to all processes."""
    import torch.distributed as dist

    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src)


def _synced_buffers(module: torch.nn.Module, exclude: tuple[str, ...]) -> list[torch.Tensor]:
    return [b for n, b in module.named_buffers() if b.is_floating_point() and n.split(".")[-1] not in exclude]


def allreduce_step(module: torch.nn.Module, world: int, exclude_buffers: tuple[str, ...] = (),
                   extra_modules=()) -> None:
    """Average the gradients of ``module``'s trainable parameters and its floating buffers (and those of
    ``extra_modules``, e.g. CLS-ER's EMA teachers) over the processes, in one flat all-reduce. Parameters without a
    gradient contribute zeros, so every rank packs the same layout."""
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.requires_grad]
    bufs = [b for m in (module, *extra_modules) for b in _synced_buffers(m, exclude_buffers)]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [b.reshape(-1) for b in bufs])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for p in params:
        k = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(flat[i:i + k].view_as(p))
        i += k
    for b in bufs:
        k = b.numel()
        b.copy_(flat[i:i + k].view_as(b))
        i += k


def allreduce_sum_delta(t: torch.Tensor, start: torch.Tensor) -> None:
    """``t = start + Σ_ranks (t_rank − start)``: sum what every process added since ``start`` (CLFD counts)."""
    import torch.distributed as dist

    delta = t - start
    dist.all_reduce(delta)
    t.copy_(start + delta)


def allreduce_sum_(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t)
    return t

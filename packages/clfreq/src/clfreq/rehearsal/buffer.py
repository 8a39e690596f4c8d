"""mammoth's reservoir buffer (``utils/buffer.py``), shared by every rehearsal method."""

from __future__ import annotations

import numpy as np
import torch


class ReservoirBuffer:
    """mammoth reservoir buffer: after ``n`` offered samples each one is stored with probability ``capacity / n``.

    Stores any named tensors per sample (``examples`` = images or encoded maps, ``labels``, ``logits``, ``task_ids``).
    ``num_seen`` is the reservoir counter (CLFD restores it after refilling; notes §1.4).
    """

    def __init__(self, capacity: int, seed: int = 0):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.num_seen = 0
        self.data: dict[str, torch.Tensor] = {}
        self.gen = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def empty(self) -> None:
        self.data, self.num_seen = {}, 0

    def add(self, **tensors: torch.Tensor) -> None:
        n = next(iter(tensors.values())).shape[0]
        if any(t.shape[0] != n for t in tensors.values()):
            raise ValueError("all tensors passed to ReservoirBuffer.add need the same first dimension")
        for k, t in tensors.items():
            if k not in self.data:
                self.data[k] = torch.zeros((self.capacity,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        for i in range(n):
            if self.num_seen < self.capacity:
                slot = self.num_seen
            else:
                r = int(self.gen.integers(0, self.num_seen + 1))
                slot = r if r < self.capacity else -1
            self.num_seen += 1
            if slot >= 0:
                for k, t in tensors.items():
                    self.data[k][slot] = t[i].detach()

    def sample(self, size: int) -> dict[str, torch.Tensor]:
        m = len(self)
        if m == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = torch.from_numpy(self.gen.choice(m, size=min(size, m), replace=False))
        return {k: v[idx.to(v.device)] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {"data": {k: v.cpu() for k, v in self.data.items()}, "num_seen": self.num_seen,
                "capacity": self.capacity, "rng": self.gen.bit_generator.state}

    def load_state_dict(self, s: dict, device=None) -> None:
        self.capacity, self.num_seen = s["capacity"], s["num_seen"]
        self.data = {k: v.to(device) if device is not None else v for k, v in s["data"].items()}
        self.gen.bit_generator.state = s["rng"]

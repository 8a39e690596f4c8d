"""Baselines for prompt-based class-incremental learning on the same frozen backbone.

- :class:`L2P` — Learning to Prompt (Wang et al., CVPR 2022), as in the l2p-pytorch reference most prompt papers
  compare with: a pool of M = 10 prompts of length L = 5 with learnable keys; the frozen prompt-free CLS feature is
  the query; the top-N = 5 prompts by cosine similarity are prepended to the patch tokens (prompt-tuning); the
  classifier reads the mean of the prompt tokens' outputs (``head_type='prompt'``); loss = CE (logits masked to the
  current task) − 0.1 · mean similarity of the selected keys (the "pull constraint"). Deviation: prompts are inserted
  after the position embedding (no position embedding for prompt tokens), and selection is per sample (no
  batch-majority trick), which is the honest setting for mixed test batches.
- :class:`DualPrompt` and :class:`CODAPrompt` — in :mod:`clfreq.prompt.dual_coda` (re-exported here), each
  following its official implementation (google-research/l2p DualPrompt, GT-RIPL/CODA-Prompt).
- :class:`SequentialLinear` — the lower bound: a linear head on the frozen prompt-free features trained task after task
  with plain CE over all classes (no mask, no replay, no prompts): it forgets.
- :class:`JointLinearProbe` — not incremental: the same head trained on every task's data at once, an upper bound for
  what the frozen features allow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..lazy import iter_batches
from .dual_coda import CODAPrompt, CODAPromptConfig, DualPrompt, DualPromptConfig
from .learners import IncrementalLearner, TaskData, clip_and_step, cross_entropy_masked, iterate_batches, masked_logits
from .vit import PromptedViT

__all__ = ["L2PConfig", "L2P", "SequentialLinear", "JointLinearProbe", "DualPromptConfig", "DualPrompt",
           "CODAPromptConfig", "CODAPrompt"]


@dataclass
class L2PConfig:
    pool_size: int = 10
    top_k: int = 5
    prompt_length: int = 5
    epochs: int = 5
    batch_size: int = 24
    lr: float = 0.03
    pull_coeff: float = 0.1
    clip_grad: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("pool_size", "top_k", "prompt_length", "epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.top_k > self.pool_size:
            raise ValueError(f"top_k ({self.top_k}) must not exceed pool_size ({self.pool_size})")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / 256


class L2P(IncrementalLearner):
    """Learning to Prompt on a frozen timm ViT (see module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, config: L2PConfig | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__(num_classes)
        self.config = config or L2PConfig()
        self.vit = PromptedViT(backbone, prefix_layers=())
        dim = self.vit.embed_dim
        self.keys = nn.Parameter(torch.empty(self.config.pool_size, dim).uniform_(-1, 1))
        self.prompts = nn.Parameter(torch.empty(self.config.pool_size, self.config.prompt_length, dim).uniform_(-1, 1))
        self.head = nn.Linear(dim, num_classes)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.device = torch.device(device)
        self.to(self.device)

    def _forward(self, images: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sim = F.normalize(query, dim=1) @ F.normalize(self.keys, dim=1).T
        top = sim.topk(self.config.top_k, dim=1)
        chosen = self.prompts[top.indices].flatten(1, 2)  # [B, top_k * L, D]
        tokens = self.vit.forward_tokens(images, input_prompts=chosen)
        feats = tokens[:, 1:1 + chosen.shape[1]].mean(1)
        return self.head(feats), top.values.sum(1).mean()

    @torch.no_grad()
    def _queries(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.vit.eval()
        return torch.cat([self.vit(x.to(self.device)) for x in iter_batches(images, batch_size)])

    def fit_task(self, task: TaskData, progress: bool = False) -> dict[str, float]:
        cfg = self.config
        self._register_task(task)
        start = time.perf_counter()
        params = [self.keys, self.prompts, *self.head.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.effective_lr)
        queries = self._queries(task.images)
        labels = task.labels.to(self.device)
        for _ in tqdm(range(cfg.epochs), desc=f"L2P task {task.task_id}", disable=not progress, leave=False):
            self.vit.train()
            for idx in iterate_batches(len(labels), cfg.batch_size, self.generator):
                logits, reduce_sim = self._forward(task.images[idx].to(self.device), queries[idx])
                loss = cross_entropy_masked(logits, labels[idx], task.classes) - cfg.pull_coeff * reduce_sim
                loss.backward()
                clip_and_step(opt, params, cfg.clip_grad)
        return {"task": task.task_id, "seconds": time.perf_counter() - start}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.vit.eval()
        out = []
        for x in iter_batches(images, batch_size):
            x = x.to(self.device)
            logits, _ = self._forward(x, self.vit(x))
            out.append(masked_logits(logits, self.seen_classes).argmax(1).cpu())
        return torch.cat(out)


class _LinearOnFrozen(IncrementalLearner):
    def __init__(self, backbone: nn.Module, num_classes: int, epochs: int = 5, batch_size: int = 24,
                 lr: float = 1e-2, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(num_classes)
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        self.vit = PromptedViT(backbone, prefix_layers=())
        self.head = nn.Linear(self.vit.embed_dim, num_classes)
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.to(self.device)

    @torch.no_grad()
    def _features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.vit.eval()
        return torch.cat([self.vit(x.to(self.device)) for x in iter_batches(images, batch_size)])

    def _train(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        opt = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        labels = labels.to(self.device)
        for _ in range(self.epochs):
            for idx in iterate_batches(len(labels), self.batch_size, self.generator):
                loss = F.cross_entropy(self.head(feats[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return masked_logits(self.head(self._features(images, batch_size)), self.seen_classes).argmax(1).cpu()


class SequentialLinear(_LinearOnFrozen):
    """Lower bound: train the head on each task in turn, CE over all classes, nothing against forgetting."""

    def fit_task(self, task: TaskData, progress: bool = False) -> dict[str, float]:
        self._register_task(task)
        start = time.perf_counter()
        self._train(self._features(task.images), task.labels)
        return {"task": task.task_id, "seconds": time.perf_counter() - start}


class JointLinearProbe(_LinearOnFrozen):
    """Upper bound (not incremental): keeps every task's features and re-trains the head on all of them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._feats: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def fit_task(self, task: TaskData, progress: bool = False) -> dict[str, float]:
        self._register_task(task)
        start = time.perf_counter()
        self._feats.append(self._features(task.images))
        self._labels.append(task.labels)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self._train(torch.cat(self._feats), torch.cat(self._labels))
        return {"task": task.task_id, "seconds": time.perf_counter() - start}

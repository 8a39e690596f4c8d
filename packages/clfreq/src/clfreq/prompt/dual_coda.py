"""DualPrompt and CODA-Prompt on the same frozen-ViT protocol as L2P and PrePrompt (re-exported by ``baselines``).

:class:`DualPrompt` — Wang et al., ECCV 2022; official google-research/l2p (JAX, ``configs/*dualprompt*``) and its
PyTorch port JH-LEE-KR/dualprompt-pytorch (``configs/cifar100_dualprompt.py``, ``models/prompt.py::EPrompt``):

- G-prompt: one prefix (length 5 for keys and 5 for values) shared by all tasks at blocks 0–1;
- E-prompts: a pool of ``num_tasks`` (``size=10``) prefixes of length 5 at blocks 2–4, each with a learnable key
  (uniform(−1, 1) init, as the prompts); the query is the frozen prompt-free CLS feature;
- training (``use_prompt_mask`` / ``train_mask``): task t uses E-prompt t, logits masked to the task's classes,
  loss = CE − ``pull_coeff`` (1.0) · cos(query, key_t); the new E-prompt (and key) starts as a copy of the previous
  one (``shared_prompt_pool``); Adam at lr·batch/256 (0.03·24/256), constant, 5 epochs, clip 1.0, optimiser re-made
  every task;
- inference: E-prompt = top-1 key by cosine similarity, per sample (the official ``batchwise_prompt`` majority vote
  over a test batch is not used, as for L2P here); classifier on the prompted CLS token (``head_type='token'``).

:class:`CODAPrompt` — Smith et al., CVPR 2023; official GT-RIPL/CODA-Prompt (``models/zoo.py::CodaPrompt``,
``learners/prompt.py``, ``configs/cifar-100_prompt.yaml``):

- per block 0–4: ``pool_size`` = 100 components, each a prompt ``p`` ``[L=8, D]``, a key ``k`` ``[D]`` and an attention
  vector ``a`` ``[D]``; ``pool_size / num_tasks`` components belong to each task and are created at its start,
  Gram–Schmidt-orthogonal to the earlier ones (unit norm; later components are zero until their task);
- prompt of a sample: α_m = cos(q ⊙ a_m, k_m) over the components seen so far (q the frozen prompt-free CLS),
  P = Σ_m α_m p_m, keys = P[:4], values = P[4:] (prefix-tuning);
- training: only the current task's components get gradients (earlier ones are detached), logits of the other
  classes masked, CE (+ ``ortho_mu``·orthogonality penalty; 0 in the CIFAR config), Adam lr 0.001 with CODA's
  per-epoch cosine (:func:`coda_cosine_lr`), 20 epochs, batch 128 in the official CIFAR-100 config.

Prefix layers beyond a shallower backbone's depth are dropped (with a warning), as for PrePrompt.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..lazy import iter_batches
from .learners import IncrementalLearner, TaskData, clip_and_step, cross_entropy_masked, iterate_batches, masked_logits
from .vit import PromptedViT

__all__ = ["DualPromptConfig", "DualPrompt", "CODAPromptConfig", "CODAPrompt", "gram_schmidt_block", "coda_cosine_lr"]

logger = logging.getLogger(__name__)


def _positive_ints(cfg, names) -> None:
    for name in names:
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be a positive int, got {getattr(cfg, name)!r}")


def _clip_layers(layers, depth: int, what: str) -> list[int]:
    kept = [int(i) for i in layers if int(i) < depth]
    if len(kept) < len(tuple(layers)):
        logger.warning("%s %s clipped to the backbone depth %d", what, tuple(layers), depth)
    return kept


def _check_num_tasks(num_tasks) -> None:
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")


class _FrozenQueryLearner(IncrementalLearner):
    """Shared parts: the frozen ViT with prefix layers, a linear head, prompt-free queries, per-sample prediction."""

    num_tasks: int

    def _begin_task(self, task: TaskData) -> int:
        """Check the task id against ``num_tasks``, register the task's classes, return the id."""
        if task.task_id >= self.num_tasks:
            raise ValueError(f"task_id {task.task_id} exceeds num_tasks={self.num_tasks}")
        self._register_task(task)
        return task.task_id

    def _setup(self, backbone: nn.Module, layers: list[int], seed: int, device) -> None:
        self.vit = PromptedViT(backbone, layers)
        self.head = nn.Linear(self.vit.embed_dim, self.num_classes)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)

    @torch.no_grad()
    def _queries(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.vit.eval()
        return torch.cat([self.vit(x.to(self.device)) for x in iter_batches(images, batch_size)])

    def _prefix(self, query: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.vit.eval()
        out = []
        for x in iter_batches(images, batch_size):
            x = x.to(self.device)
            prefix, _ = self._prefix(self.vit(x), None)
            out.append(masked_logits(self.head(self.vit(x, prefix)), self.seen_classes).argmax(1).cpu())
        return torch.cat(out)


@dataclass
class DualPromptConfig:
    """Defaults: dualprompt-pytorch ``configs/cifar100_dualprompt.py`` (the official JAX config's values)."""

    g_prompt_length: int = 5
    g_prompt_layers: tuple[int, ...] = (0, 1)
    e_prompt_length: int = 5
    e_prompt_layers: tuple[int, ...] = (2, 3, 4)
    pool_size: int | None = None  # default: one E-prompt per task
    epochs: int = 5
    batch_size: int = 24
    lr: float = 0.03
    pull_coeff: float = 1.0
    clip_grad: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_ints(self, ("g_prompt_length", "e_prompt_length", "epochs", "batch_size"))
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if set(self.g_prompt_layers) & set(self.e_prompt_layers):
            raise ValueError(f"g_prompt_layers {self.g_prompt_layers} and e_prompt_layers {self.e_prompt_layers} "
                             "must not overlap")

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / 256


class DualPrompt(_FrozenQueryLearner):
    """DualPrompt on a frozen timm ViT (see the module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_tasks: int, config: DualPromptConfig | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__(num_classes)
        self.config = cfg = config or DualPromptConfig()
        _check_num_tasks(num_tasks)
        depth = len(backbone.blocks)
        g = _clip_layers(cfg.g_prompt_layers, depth, "g_prompt_layers")
        e = _clip_layers(cfg.e_prompt_layers, depth, "e_prompt_layers")
        self._setup(backbone, sorted(g + e), cfg.seed, device)
        self.g_slots = [self.vit.prefix_layers.index(i) for i in g]
        self.e_slots = [self.vit.prefix_layers.index(i) for i in e]
        if cfg.g_prompt_length != cfg.e_prompt_length:
            raise ValueError("g_prompt_length and e_prompt_length must be equal here (one prefix tensor)")
        self.pool_size = cfg.pool_size or num_tasks
        if self.pool_size < num_tasks:
            raise ValueError(f"pool_size ({self.pool_size}) must be at least num_tasks ({num_tasks})")
        h, hd, length = self.vit.num_heads, self.vit.head_dim, cfg.e_prompt_length
        self.g_prompt = nn.Parameter(torch.empty(len(g), 2, length, h, hd).uniform_(-1, 1))
        self.e_prompt = nn.Parameter(torch.empty(len(e), 2, self.pool_size, length, h, hd).uniform_(-1, 1))
        self.e_keys = nn.Parameter(torch.empty(self.pool_size, self.vit.embed_dim).uniform_(-1, 1))
        self.num_tasks = num_tasks
        self.to(self.device)

    def _prefix(self, query: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``[layers, 2, B, L, H, hd]`` prefix and the mean cosine of the chosen keys (the pull term)."""
        sim = F.normalize(query, dim=1) @ F.normalize(self.e_keys, dim=1).T  # [B, pool]
        if task is None:  # inference: top-1 key per sample
            ids = sim.argmax(1)
        else:  # training: the task's own prompt (use_prompt_mask)
            ids = torch.full((len(query),), task, dtype=torch.long, device=query.device)
        pull = sim.gather(1, ids[:, None]).mean()
        b = len(query)
        e = self.e_prompt.index_select(2, ids)  # [E, 2, B, L, H, hd]
        g = self.g_prompt.unsqueeze(2).expand(-1, -1, b, -1, -1, -1)
        slots = [None] * len(self.vit.prefix_layers)
        for i, s in enumerate(self.g_slots):
            slots[s] = g[i]
        for i, s in enumerate(self.e_slots):
            slots[s] = e[i]
        return torch.stack(slots), pull

    def fit_task(self, task: TaskData, progress: bool = False) -> dict[str, float]:
        cfg, t = self.config, self._begin_task(task)
        start = time.perf_counter()
        if t > 0:  # shared_prompt_pool: the new E-prompt starts from the previous one (keys are not shared)
            with torch.no_grad():
                self.e_prompt[:, :, t] = self.e_prompt[:, :, t - 1]
        params = [self.g_prompt, self.e_prompt, self.e_keys, *self.head.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.effective_lr)
        queries = self._queries(task.images)
        labels = task.labels.to(self.device)
        loss = torch.zeros(())
        for _ in tqdm(range(cfg.epochs), desc=f"DualPrompt task {t}", disable=not progress, leave=False):
            self.vit.train()
            for idx in iterate_batches(len(labels), cfg.batch_size, self.generator):
                prefix, pull = self._prefix(queries[idx], t)
                logits = self.head(self.vit(task.images[idx].to(self.device), prefix))
                loss = cross_entropy_masked(logits, labels[idx], task.classes) - cfg.pull_coeff * pull
                loss.backward()
                clip_and_step(opt, params, cfg.clip_grad)
        return {"task": t, "seconds": time.perf_counter() - start, "loss": float(loss.detach())}

    @torch.no_grad()
    def predict_task(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The E-prompt each sample selects (its predicted task)."""
        sim = F.normalize(self._queries(images, batch_size), dim=1) @ F.normalize(self.e_keys, dim=1).T
        return sim.argmax(1).cpu()


def gram_schmidt_block(weight: torch.Tensor, start: int, end: int, generator: torch.Generator) -> None:
    """CODA-Prompt ``gram_schmidt`` in place: rows ``start:end`` of ``weight`` (``[pool, ...]``, flattened per row)
    become random unit vectors orthogonal to rows ``0:end`` (earlier rows kept, rows after ``end`` zero)."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    if end > flat.shape[1]:
        raise ValueError(f"cannot make {end} orthogonal components in {flat.shape[1]} dimensions")
    out = torch.zeros_like(flat)
    out[:start] = flat[:start]
    for k in range(start, end):
        v = torch.randn(flat.shape[1], generator=generator).to(flat)
        for j in range(k):
            u = out[j]
            v = v - (v @ u) / (u @ u) * u
        out[k] = v / v.norm()
    with torch.no_grad():
        weight.copy_(out.reshape(weight.shape))


@dataclass
class CODAPromptConfig:
    """Defaults: CODA-Prompt ``configs/cifar-100_prompt.yaml`` with ``--prompt_param 100 8 0.0``."""

    pool_size: int = 100
    prompt_length: int = 8
    prompt_layers: tuple[int, ...] = (0, 1, 2, 3, 4)
    ortho_mu: float = 0.0
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.001
    schedule: str = "cosine"
    clip_grad: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_ints(self, ("pool_size", "prompt_length", "epochs", "batch_size"))
        if self.prompt_length % 2:
            raise ValueError(f"prompt_length must be even (half keys, half values), got {self.prompt_length}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.ortho_mu < 0:
            raise ValueError(f"ortho_mu must be non-negative, got {self.ortho_mu}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")


def coda_cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """CODA-Prompt ``utils/schedulers.py::CosineSchedule`` (stepped per epoch): base·cos(99π·e / (200·(K − 1)))."""
    if epochs <= 1:
        return base
    return base * math.cos(99 * math.pi * epoch / (200 * (epochs - 1)))


def _ortho_penalty(t: torch.Tensor) -> torch.Tensor:
    """CODA ``ortho_penalty``: ((t tᵀ − I)²).mean()."""
    return ((t @ t.T - torch.eye(t.shape[0], device=t.device)) ** 2).mean()


class CODAPrompt(_FrozenQueryLearner):
    """CODA-Prompt on a frozen timm ViT (see the module docstring). ``lr`` is used as given (no ·batch/256)."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_tasks: int, config: CODAPromptConfig | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__(num_classes)
        self.config = cfg = config or CODAPromptConfig()
        _check_num_tasks(num_tasks)
        if cfg.pool_size % num_tasks:
            raise ValueError(f"pool_size ({cfg.pool_size}) must be divisible by num_tasks ({num_tasks})")
        layers = _clip_layers(cfg.prompt_layers, len(backbone.blocks), "prompt_layers")
        self._setup(backbone, layers, cfg.seed, device)
        d, n = self.vit.embed_dim, len(layers)
        self.num_tasks, self.per_task = num_tasks, cfg.pool_size // num_tasks
        self.p = nn.Parameter(torch.zeros(n, cfg.pool_size, cfg.prompt_length, d))
        self.k = nn.Parameter(torch.zeros(n, cfg.pool_size, d))
        self.a = nn.Parameter(torch.zeros(n, cfg.pool_size, d))
        self.init_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self._new_components(0)
        self.to(self.device)

    def _new_components(self, task: int) -> None:
        s, f = task * self.per_task, (task + 1) * self.per_task
        for param in (self.p, self.k, self.a):
            for layer in range(param.shape[0]):
                gram_schmidt_block(param.data[layer], s, f, self.init_generator)

    def _prefix(self, query: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix ``[layers, 2, B, L/2, H, hd]`` and the orthogonality penalty (0 unless training with ortho_mu)."""
        cfg = self.config
        t = self.trained_tasks - 1 if task is None else task
        s, f = t * self.per_task, (t + 1) * self.per_task
        if task is not None and s > 0:  # training: earlier components detached
            p = torch.cat([self.p[:, :s].detach(), self.p[:, s:f]], 1)
            k = torch.cat([self.k[:, :s].detach(), self.k[:, s:f]], 1)
            a = torch.cat([self.a[:, :s].detach(), self.a[:, s:f]], 1)
        elif task is not None:
            p, k, a = self.p[:, s:f], self.k[:, s:f], self.a[:, s:f]
        else:
            p, k, a = self.p[:, :f], self.k[:, :f], self.a[:, :f]
        aq = F.normalize(torch.einsum("bd,lkd->lbkd", query, a), dim=3)
        alpha = torch.einsum("lbkd,lkd->lbk", aq, F.normalize(k, dim=2))
        prompt = torch.einsum("lbk,lkqd->lbqd", alpha, p)  # [layers, B, L, D]
        half = cfg.prompt_length // 2
        n, b = prompt.shape[:2]
        prefix = torch.stack([prompt[:, :, :half], prompt[:, :, half:]], 1)  # [layers, 2, B, L/2, D]
        prefix = prefix.reshape(n, 2, b, half, self.vit.num_heads, self.vit.head_dim)
        penalty = torch.zeros((), device=query.device)
        if task is not None and cfg.ortho_mu > 0:
            for layer in range(n):
                penalty = penalty + _ortho_penalty(k[layer]) + _ortho_penalty(a[layer]) + _ortho_penalty(
                    p[layer].flatten(1))
            penalty = cfg.ortho_mu * penalty
        return prefix, penalty

    @property
    def trained_tasks(self) -> int:
        return len({self.class_to_task[c] for c in self.seen_classes})

    def fit_task(self, task: TaskData, progress: bool = False) -> dict[str, float]:
        cfg, t = self.config, self._begin_task(task)
        start = time.perf_counter()
        if t > 0:
            self._new_components(t)
        params = [self.p, self.k, self.a, *self.head.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        queries = self._queries(task.images)
        labels = task.labels.to(self.device)
        loss = torch.zeros(())
        for epoch in tqdm(range(cfg.epochs), desc=f"CODA-Prompt task {t}", disable=not progress, leave=False):
            for group in opt.param_groups:
                group["lr"] = coda_cosine_lr(cfg.lr, epoch, cfg.epochs) if cfg.schedule == "cosine" else cfg.lr
            self.vit.train()
            for idx in iterate_batches(len(labels), cfg.batch_size, self.generator):
                prefix, penalty = self._prefix(queries[idx], t)
                logits = self.head(self.vit(task.images[idx].to(self.device), prefix))
                loss = cross_entropy_masked(logits, labels[idx], task.classes) + penalty
                loss.backward()
                if cfg.clip_grad:
                    clip_and_step(opt, params, cfg.clip_grad)
                else:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
        return {"task": t, "seconds": time.perf_counter() - start, "loss": float(loss.detach())}

"""MMKD: adaptive multi-teacher KD with meta-learning (a meta-weight network tuned through look-ahead steps).

Zhang, Chen & Wang, "Adaptive Multi-Teacher Knowledge Distillation with Meta-Learning", ICME 2023
(arXiv 2306.06634). Only the paper's abstract and introduction could be read here, so no equation numbers are
cited: everything below follows the official code, ``github.com/Rorozhl/MMKD`` (commit 3ae1f8c): ``train_meta.py``
(``inner_objective``, ``outer_objective``, the training loop), ``models/meta_util.py`` (``LogitsWeight``,
``FeatureWeight``, ``MatchFeature``), ``helper/meta_optimizer.py`` (``MetaSGD``), ``dataset/buffer.py``
(``HardBuffer``), with the README's command (``--hard_buffer --convs -b 100``) for the switches.

Weights (per sample, each a softmax over the ``M`` teachers, so they sum to 1 and carry no ``1/M``):

- logit KD, :class:`LogitsWeightNet` (``LogitsWeight``): ``softmax(W2 relu(W1 [z_t^1, ..., z_t^M, z_s] + b1) + b2)``
  on the concatenated teacher logits and the (detached) student logits; hidden width ``K(M+1)//2``;
- feature KD, :class:`FeatureWeightNet` (``FeatureWeight``): the same MLP on
  ``[G_1[b], ..., G_M[b], G_s[b]]`` where ``G_m = F_m F_m^T`` is the ``B x B`` Gram matrix of teacher ``m``'s
  flattened last-stage map (``feat[-2]``) and ``G_s`` the student's (its own map, detached); input width ``B(M+1)``,
  so the batch size is fixed (shorter batches are skipped, as the code's ``continue``).

Student step (every batch, ``inner_objective``): ``CE + sum_m w^l KL_T + beta sum_m w^f F`` — the distiller's loss
with these weights, which are constants for the student.

Meta step (``idx % meta_freq == 0 or idx == n_batch - 1``, after that batch's student step):

1. a batch ``(x_h, y_h)`` of ``B`` distinct samples from the hard buffer (or the current batch without it);
2. two look-ahead SGD steps of the student and adaptors on the matching loss
   ``kd_weight mean_b sum_m w^l KL + feat_weight mean_b sum_m w^f F`` on ``x_h`` (the weights computed by the
   weight networks, so the loss depends on their parameters ``phi``), then one look-ahead step on ``CE(x_h, y_h)``
   — each with the real optimiser (lr, momentum, weight decay, Nesterov), each starting state stored;
3. the outer loss ``CE(x_h, y_h)`` at the look-ahead parameters; its gradient is back-propagated through the three
   steps by ``MetaSGD.meta_backward``'s recursion: with adjoints ``(a, v)`` initialised to ``(dCE/dtheta, 0)``, for
   each stored step in reverse, ``X = sum_p g_p . (-lr a_p + v_p)`` (``g`` the step's loss gradient with graph),
   ``X.backward()`` (Hessian-vector product into ``theta``, the meta-gradient into ``phi``), then
   ``a <- a (1 - lr wd) + wd v + dX/dtheta`` and ``v <- momentum (v - lr a)`` — exact reverse-mode for SGD with
   momentum and weight decay; like the code it ignores Nesterov, although the look-ahead steps use it;
4. one Adam step on ``phi`` (lr 1e-3, weight decay 1e-4);
5. rollback (the code's ``--rollback``, always on): the student, adaptors and optimiser state are back at their
   state before the look-ahead. As in the code the last replay's forward pass leaves one BatchNorm running-stat
   update from ``x_h`` behind.

Hard buffer (``HardBuffer``, on by ``--hard_buffer``): the first batches are stored whole until it holds
``buffer_size`` (256) samples; afterwards the samples the student misclassified in each batch (by its logits before
that batch's step) overwrite distinct random slots.

Deviations (README "Baselines"):
- the feature term uses the framework's adaptors (resize the student map to the teacher's size, 1x1 conv + BN +
  ReLU, shared by every strategy), not ``MatchFeature`` (which pools the larger map down to the smaller and, with
  ``--convs``, uses a 1x1-3x3-1x1 ``Embed``); the feature weight ``beta`` is the distiller's ``feat_weight`` for every
  strategy (MMKD's command uses ``-b 100``) and the optimiser recipe is the framework's;
- the buffer counts as full at ``>= buffer_size`` samples (the code tests ``==``, so with a batch size that does not
  divide 256 it never fills and grows without bound); at most ``buffer_size`` misclassified samples replace slots;
  random draws use torch's global generator (reseeded every epoch by the distiller) instead of NumPy's;
- the teachers' outputs on ``x_h`` are computed once per meta step (the code recomputes them in every objective
  call; the teachers are frozen in eval mode, so the values are the same);
- the student step computes the weights without a graph (the code builds one and deposits gradients in ``phi`` that
  are zeroed before the meta step uses ``phi``'s gradients: no effect);
- the code's ``-r``/``-a`` do not enter its student step (``loss_cls + loss_div + beta loss_kd``); here
  ``kd_weight`` does (default 1: the same);
- several processes are refused: the code's meta step is per process and it never wraps the student in DDP.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import feature_mse_per_sample, kd_kl_per_sample
from .base import DistillContext, StudentStep, WeightingStrategy

__all__ = ["MMKD", "LogitsWeightNet", "FeatureWeightNet", "HardBuffer", "meta_backward"]


class LogitsWeightNet(nn.Module):
    """Official ``LogitsWeight`` (same parameter names): ``[z_t^1..z_t^M, z_s] -> Linear -> ReLU -> Linear ->
    softmax`` over teachers."""

    def __init__(self, num_classes: int, num_teachers: int, factor: int = 2):
        super().__init__()
        n = int(num_classes) * (int(num_teachers) + 1)
        if n // factor < 1:
            raise ValueError(f"LogitsWeightNet: hidden width {n}//{factor} must be >= 1")
        self.layer = nn.Linear(n, n // factor, bias=True)
        self.all_act = nn.Linear(n // factor, int(num_teachers))

    def forward(self, teacher_logits: list[torch.Tensor], student_logits: torch.Tensor) -> torch.Tensor:
        x = torch.cat([*(z.float() for z in teacher_logits), student_logits.float()], dim=1)
        return torch.softmax(self.all_act(F.relu(self.layer(x))), dim=-1)


def _gram(fmap: torch.Tensor) -> torch.Tensor:
    flat = fmap.float().reshape(fmap.shape[0], -1)
    return flat @ flat.t()


class FeatureWeightNet(nn.Module):
    """Official ``FeatureWeight``: the rows of the teachers' and the student's ``B x B`` Gram matrices ->
    Linear -> ReLU -> Linear -> softmax over teachers. The batch size ``B`` is part of the architecture."""

    def __init__(self, batch_size: int, num_teachers: int, factor: int = 2):
        super().__init__()
        n = int(batch_size) * (int(num_teachers) + 1)
        if n // factor < 1:
            raise ValueError(f"FeatureWeightNet: hidden width {n}//{factor} must be >= 1")
        self.batch_size = int(batch_size)
        self.layer = nn.Linear(n, n // factor, bias=True)
        self.all_act = nn.Linear(n // factor, int(num_teachers))

    def forward(self, teacher_maps: list[torch.Tensor], student_map: torch.Tensor) -> torch.Tensor:
        if student_map.shape[0] != self.batch_size:
            raise ValueError(f"FeatureWeightNet was built for batches of {self.batch_size}, got {student_map.shape[0]}")
        x = torch.cat([*(_gram(f) for f in teacher_maps), _gram(student_map)], dim=1)
        return torch.softmax(self.all_act(F.relu(self.layer(x))), dim=-1)


class HardBuffer:
    """Official ``HardBuffer``: whole batches until ``buffer_size`` samples are held, then each batch's
    misclassified samples overwrite distinct random slots; :meth:`sample` draws ``batch_size`` distinct rows."""

    def __init__(self, batch_size: int, buffer_size: int = 256):
        if batch_size < 1 or buffer_size < batch_size:
            raise ValueError(f"HardBuffer needs 1 <= batch_size <= buffer_size, got {batch_size}, {buffer_size}")
        self.batch_size, self.buffer_size = int(batch_size), int(buffer_size)
        self.data: torch.Tensor | None = None
        self.label: torch.Tensor | None = None
        self.full = False

    def __len__(self) -> int:
        return 0 if self.data is None else int(self.data.shape[0])

    def put(self, data: torch.Tensor, label: torch.Tensor) -> None:
        data, label = data.detach().clone(), label.detach().clone()
        self.data = data if self.data is None else torch.cat([self.data, data])
        self.label = label if self.label is None else torch.cat([self.label, label])
        self.full = len(self) >= self.buffer_size

    def update(self, data: torch.Tensor, label: torch.Tensor) -> None:
        n = min(int(data.shape[0]), self.buffer_size)
        if n == 0:
            return
        idx = torch.randperm(self.buffer_size)[:n].to(self.data.device)
        self.data.index_copy_(0, idx, data[:n].detach().to(self.data))
        self.label.index_copy_(0, idx, label[:n].detach().to(self.label))

    def observe(self, data: torch.Tensor, label: torch.Tensor, student_logits: torch.Tensor) -> None:
        """The code's ``inner_objective`` bookkeeping: fill, then keep what the student got wrong."""
        if not self.full:
            self.put(data, label)
        else:
            wrong = student_logits.argmax(1) != label
            self.update(data[wrong], label[wrong])

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data is None or len(self) < self.batch_size:
            raise RuntimeError(f"HardBuffer holds {len(self)} samples, fewer than a batch ({self.batch_size})")
        idx = torch.randperm(len(self))[:self.batch_size].to(self.data.device)
        return self.data.index_select(0, idx), self.label.index_select(0, idx)

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data, "label": self.label, "full": self.full}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data, self.label, self.full = state["data"], state["label"], bool(state["full"])


def _get_state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def _set_state(model: nn.Module, opt: torch.optim.Optimizer, state: tuple[dict, dict]) -> None:
    model.load_state_dict(state[0])
    opt.load_state_dict(state[1])


def meta_backward(model: nn.Module, opt: torch.optim.Optimizer,
                  steps: list[tuple[tuple[dict, dict], Callable[[], torch.Tensor]]]) -> None:
    """``MetaSGD.meta_backward``: the parameters' ``.grad`` holds ``dL_outer/dtheta`` at the end of the recorded
    ``steps`` (each ``(state before the step, objective)``); the recursion in the module docstring propagates it back
    through the steps, accumulating the meta-gradient in the ``.grad`` of whatever else the objectives depend on
    (the weight networks). Leaves the model and optimiser at the first recorded state (rollback)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    adjoints = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        adjoints.append((p.grad.detach().clone(), torch.zeros_like(p)))
    for state, objective in reversed(steps):
        _set_state(model, opt, state)
        loss = objective()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        x = torch.zeros((), device=loss.device)
        i = 0
        for group in opt.param_groups:
            for _ in group["params"]:
                g, (a, v) = grads[i], adjoints[i]
                if g is not None:
                    x = x + (g * (a * -group["lr"] + v)).sum()
                i += 1
        for p in params:
            p.grad.detach_()
            p.grad.zero_()
        if x.requires_grad:
            x.backward()
        i = 0
        for group in opt.param_groups:
            lr, wd, mom = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                a, v = adjoints[i]
                a_new = a * (1 - lr * wd) + wd * v + p.grad
                v_new = v * mom - lr * mom * a
                a.copy_(a_new)
                v.copy_(v_new)
                i += 1


class MMKD(WeightingStrategy):
    """MMKD (module docstring). Defaults are the official ones: Adam ``meta_lr`` 1e-3 with weight decay 1e-4,
    a meta step every ``meta_freq`` = 5 batches and at the last one, ``matching_steps`` = 2 look-ahead steps on the
    matching loss plus one on the CE, a hard buffer of 256 samples (the README's ``--hard_buffer``)."""

    name = "mmkd"
    fixed_batch_size = True

    def __init__(self, meta_lr: float = 1e-3, meta_wd: float = 1e-4, meta_freq: int = 5, hard_buffer: bool = True,
                 buffer_size: int = 256, matching_steps: int = 2, factor: int = 2):
        if not meta_lr > 0 or not meta_wd >= 0:
            raise ValueError(f"meta_lr must be > 0 and meta_wd >= 0, got {meta_lr}, {meta_wd}")
        for key, value in (("meta_freq", meta_freq), ("buffer_size", buffer_size), ("factor", factor)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        if not isinstance(matching_steps, int) or matching_steps < 0:
            raise ValueError(f"matching_steps must be an int >= 0, got {matching_steps!r}")
        self.meta_lr, self.meta_wd, self.meta_freq = float(meta_lr), float(meta_wd), meta_freq
        self.hard_buffer, self.buffer_size = bool(hard_buffer), buffer_size
        self.matching_steps, self.factor = matching_steps, factor
        self.batch_size: int | None = None  # set by the distiller from the train loader
        self.logit_net: LogitsWeightNet | None = None
        self.feat_net: FeatureWeightNet | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.buffer: HardBuffer | None = None
        self.meta_updates = 0
        self.meta_seconds = 0.0
        self._outer = []  # per meta step of this epoch: CE on x_h after the look-ahead

    def __repr__(self) -> str:
        return (f"MMKD(meta_lr={self.meta_lr}, meta_wd={self.meta_wd}, meta_freq={self.meta_freq}, "
                f"hard_buffer={self.hard_buffer}, buffer_size={self.buffer_size}, "
                f"matching_steps={self.matching_steps}, factor={self.factor})")

    def setup(self, num_teachers, teacher_embed_dims, num_classes, device) -> None:
        super().setup(num_teachers, list(teacher_embed_dims), num_classes, device)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("mmkd runs in one process only (its meta step differentiates through the student's "
                             "look-ahead steps; the official code does not distribute it either)")
        if self.batch_size is None:
            raise ValueError("mmkd needs the batch size (its feature-weight network's input is B x (M+1)); the "
                             "distiller sets it from train_loader.batch_size")
        if self.hard_buffer and self.buffer_size < self.batch_size:
            raise ValueError(f"mmkd: buffer_size ({self.buffer_size}) must be >= the batch size ({self.batch_size})")
        self.logit_net = LogitsWeightNet(num_classes, num_teachers, self.factor).to(device)
        self.feat_net = FeatureWeightNet(self.batch_size, num_teachers, self.factor).to(device)
        self.optimizer = torch.optim.Adam(self.meta_parameters(), lr=self.meta_lr, weight_decay=self.meta_wd)
        self.buffer = HardBuffer(self.batch_size, self.buffer_size) if self.hard_buffer else None

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.logit_net.parameters()) + list(self.feat_net.parameters())

    def _require(self) -> None:
        if self.logit_net is None:
            raise RuntimeError("MMKD.setup(...) must run before use (the distiller calls it)")

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        self._require()
        if ctx.teacher_maps is None or ctx.student_map is None:
            raise ValueError("mmkd needs ctx.teacher_maps and ctx.student_map (the distiller fills them)")
        with torch.no_grad():
            w_l = self.logit_net(ctx.teacher_logits, ctx.student_logits)
            w_f = self.feat_net(ctx.teacher_maps, ctx.student_map)
        return w_l, w_f

    # ------------------------------------------------------------------ meta step
    def matching_loss(self, model: nn.Module, x: torch.Tensor, t_outs, config) -> torch.Tensor:
        """``inner_objective(..., matching_only=True)``: ``kd_weight * mean_b sum_m w^l KL + feat_weight * mean_b
        sum_m w^f F`` with the weights from the weight networks (differentiable in their parameters)."""
        logits, fmap, adapted = model(x)
        kd = torch.stack([kd_kl_per_sample(logits, t.logits, config.temperature) for t in t_outs], dim=1)
        feat = torch.stack([feature_mse_per_sample(a, t.feature_map) for a, t in zip(adapted, t_outs)], dim=1)
        w_l = self.logit_net([t.logits for t in t_outs], logits.detach())
        w_f = self.feat_net([t.feature_map for t in t_outs], fmap.detach())
        return config.kd_weight * (w_l * kd).sum(-1).mean() + config.feat_weight * (w_f * feat).sum(-1).mean()

    @staticmethod
    def outer_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``outer_objective``: the student's cross-entropy (the student only, no adaptors, as in the code)."""
        return F.cross_entropy(model.student(x).logits.float(), y)

    def meta_step(self, model: nn.Module, opt: torch.optim.Optimizer, teachers, config, x: torch.Tensor,
                  y: torch.Tensor) -> float:
        """One meta update of the weight networks on ``(x, y)``; returns the outer CE after the look-ahead. The
        student, adaptors and optimiser end where they started (rollback)."""
        self._require()
        start = time.perf_counter()
        t_outs = teachers(x)
        steps = []

        def matching() -> torch.Tensor:
            return self.matching_loss(model, x, t_outs, config)

        def outer() -> torch.Tensor:
            return self.outer_loss(model, x, y)

        for objective in [matching] * self.matching_steps + [outer]:
            opt.zero_grad(set_to_none=False)
            steps.append((_get_state(model, opt), objective))
            objective().backward()
            opt.step()
        opt.zero_grad(set_to_none=False)
        self.optimizer.zero_grad(set_to_none=False)
        final = outer()
        final.backward()
        meta_backward(model, opt, steps)
        for p in self.meta_parameters():  # the code's zero_grad leaves zeros, so Adam updates every parameter
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.optimizer.step()
        opt.zero_grad(set_to_none=True)
        self.meta_updates += 1
        self.meta_seconds += time.perf_counter() - start
        return float(final.detach())

    def after_step(self, step: StudentStep) -> None:
        self._require()
        if self.buffer is not None:
            self.buffer.observe(step.inputs, step.targets, step.context.student_logits)
        if step.batch_index % self.meta_freq == 0 or step.batch_index == step.num_batches - 1:
            x, y = self.buffer.sample() if self.buffer is not None else (step.inputs, step.targets)
            self._outer.append(self.meta_step(step.model, step.optimizer, step.teachers, step.config, x, y))

    def end_epoch(self, epoch: int) -> dict[str, float]:
        out = {"meta_updates": float(self.meta_updates),
               "meta_outer_ce": sum(self._outer) / len(self._outer) if self._outer else float("nan")}
        self._outer = []
        return out

    def state_dict(self) -> dict[str, Any]:
        self._require()
        return {"logit_net": self.logit_net.state_dict(), "feat_net": self.feat_net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "buffer": self.buffer.state_dict() if self.buffer is not None else None,
                "meta_updates": self.meta_updates, "meta_seconds": self.meta_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._require()
        self.logit_net.load_state_dict(state["logit_net"])
        self.feat_net.load_state_dict(state["feat_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.buffer is not None and state.get("buffer") is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.meta_updates = int(state.get("meta_updates", 0))
        self.meta_seconds = float(state.get("meta_seconds", 0.0))

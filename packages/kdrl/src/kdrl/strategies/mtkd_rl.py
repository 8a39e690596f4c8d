"""MTKD-RL: multi-teacher KD with a reinforcement-learning teacher-weighting agent.

Yang, Yu, Yang, An, Yu, Huang, Xu, "Multi-Teacher Knowledge Distillation with Reinforcement Learning for Visual
Recognition", AAAI 2025 (arXiv 2502.18510). Implemented from the official code (github.com/winycg/MTKD-RL,
``train_student_rl.py`` / ``models/policy.py``); where the paper text and the code differ we follow the code:

State (paper Sec. "State", code ``get_agent_state``) — per teacher ``m`` and sample ``b``, all detached:
``[cos(GAP(adaptor_m(f_s)), e_t^m), KL_T(p_t^m || p_s), CE(z_t^m, y), e_t^m, z_t^m]``; the agent input is the
concatenation over teachers (size ``sum_m (d_m + K + 3)``), not normalised (as in the code).

Agent (code ``PolicyTrans``): ``Linear(state -> hidden, bias=False) -> ReLU`` and two ``Linear(hidden -> M)`` heads,
each followed by a softmax over teachers: ``a^l`` (logit KD) and ``a^f`` (feature KD).

Action → final weights (code, the paper's "confidence-aware and divergence-aware" terms folded into the action):
``c = (1 - softmax(CE_t)) / (M - 1)`` (CA-MKD), ``g^l = softmax(KL)``, ``g^f = softmax(cos)``;
``w^l = (a^l + c + g^l) / 3`` and ``w^f = (a^f + c + g^f) / 3``, or with ``dynamic=True`` a learned convex mix
``softmax(theta)`` (``theta`` in R^3 initialised to ones, one for each of the two weight vectors). The action is
deterministic.

Warm-up (paper Algorithm 1, code ``epoch == 0``): during the first ``warmup_epochs`` epochs every weight is 1 (a plain
sum over teachers); the state and reward are still recorded and the agent is trained at the end of the epoch.

Reward (code): ``r_b = -(CE_b + sum_m w^l KL + beta sum_m w^f F)`` from the student step's forward pass,
standardised in the batch (``(r - mean) / std``), clamped to ``[0, 1]``.

Update (paper Algorithm 2, code ``train_agent``): states and rewards of every batch are buffered; every
``agent_step`` batches (CIFAR-100 default 1000, i.e. once per epoch) and at the end of each epoch the agent replays
the buffer in order, one SGD step per buffered batch, on the REINFORCE-style surrogate
``BCE(w^l, 1; weight=r) + BCE(w^f, 1; weight=r) = -mean_{b,m} r_b [log w^l_{b,m} + log w^f_{b,m}]``, with the agent
re-run on the stored state (so the replay is slightly off-policy, as in the code).

Deliberate choices where the code is silent or has pitfalls (README "Fidelity notes"):
- a batch whose reward has zero spread (or ``B = 1``) gets reward 0 instead of the code's NaN;
- the buffer is kept on ``buffer_device`` (default: the training device, as in the code; ``"cpu"`` saves GPU memory);
- under ``accelerate launch`` the agent's gradients are averaged over processes so every copy stays identical.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillContext, WeightingStrategy
from .simple import confidence_weights

__all__ = ["MTKDRL", "TeacherWeightingAgent", "build_state", "standardized_reward"]


def build_state(ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(infos [B, sum_m (d_m+K+3)], teacher_ce [B,M], kl [B,M], cos [B,M])``, all detached."""
    parts = []
    for m in range(ctx.num_teachers):
        parts.append(torch.cat([ctx.cosine[:, m:m + 1], ctx.kd[:, m:m + 1], ctx.teacher_ce[:, m:m + 1],
                                ctx.teacher_embeddings[m].float(), ctx.teacher_logits[m].float()], dim=1))
    return (torch.cat(parts, dim=1).detach(), ctx.teacher_ce.detach().float(), ctx.kd.detach().float(),
            ctx.cosine.detach().float())


def standardized_reward(per_sample_loss: torch.Tensor) -> torch.Tensor:
    """``clamp((r - mean r) / std r, 0, 1)`` with ``r = -loss``; zeros when the batch has no spread."""
    r = -per_sample_loss.detach().float()
    if r.numel() < 2:
        return torch.zeros_like(r)
    std = r.std()
    if not torch.isfinite(std) or std <= 1e-12:
        return torch.zeros_like(r)
    return ((r - r.mean()) / std).clamp(0.0, 1.0)


class TeacherWeightingAgent(nn.Module):
    """One hidden layer, two softmax heads, and the fusion with the confidence and gap-based weights."""

    def __init__(self, state_dim: int, num_teachers: int, hidden: int = 128, dynamic: bool = False):
        super().__init__()
        if state_dim < 1 or num_teachers < 1 or hidden < 1:
            raise ValueError(f"state_dim, num_teachers and hidden must be positive, got {state_dim}, {num_teachers}, "
                             f"{hidden}")
        self.num_teachers = num_teachers
        self.dynamic = dynamic
        self.stem = nn.Sequential(nn.Linear(state_dim, hidden, bias=False), nn.ReLU())
        self.logit_head = nn.Linear(hidden, num_teachers)
        self.feat_head = nn.Linear(hidden, num_teachers)
        if dynamic:
            self.logit_mix = nn.Parameter(torch.ones(3))
            self.feat_mix = nn.Parameter(torch.ones(3))

    def heads(self, infos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned part only: ``(a^l, a^f)``, each a softmax over teachers."""
        h = self.stem(infos)
        return F.softmax(self.logit_head(h), dim=1), F.softmax(self.feat_head(h), dim=1)

    def forward(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        infos, t_ce, kl, cos = state
        a_l, a_f = self.heads(infos)
        conf = confidence_weights(t_ce)
        gap_l = F.softmax(kl, dim=1)
        gap_f = F.softmax(cos, dim=1)
        if self.dynamic:
            lam_l = F.softmax(self.logit_mix, dim=0)
            lam_f = F.softmax(self.feat_mix, dim=0)
            w_l = lam_l[0] * a_l + lam_l[1] * conf + lam_l[2] * gap_l
            w_f = lam_f[0] * a_f + lam_f[1] * conf + lam_f[2] * gap_f
        else:
            w_l = (a_l + conf + gap_l) / 3.0
            w_f = (a_f + conf + gap_f) / 3.0
        return w_l, w_f


def agent_loss(agent: TeacherWeightingAgent, state: tuple[torch.Tensor, ...], reward: torch.Tensor) -> torch.Tensor:
    """Reward-weighted BCE of the final weights towards 1 (code ``train_agent``)."""
    w_l, w_f = agent(state)
    weight = reward.unsqueeze(-1).expand_as(w_l)
    ones = torch.ones_like(w_l)
    eps = 1e-12  # BCE clamps log at -100 like torch; clamp the input to keep it finite
    return (F.binary_cross_entropy(w_l.clamp(eps, 1.0), ones, weight=weight)
            + F.binary_cross_entropy(w_f.clamp(eps, 1.0), ones, weight=weight))


class MTKDRL(WeightingStrategy):
    """The MTKD-RL weighting strategy (see the module docstring).

    Args:
        hidden: agent hidden width (code: 128).
        lr: agent SGD learning rate (code: 0.1, no momentum, no weight decay).
        dynamic: learn the mixing of agent / confidence / gap weights (code ``--dynamic``).
        agent_step: train the agent every this many batches as well as at epoch end (code: 1000).
        warmup_epochs: epochs with all weights 1 (code: 1).
        buffer_device: where buffered states live (``None``: the training device).
    """

    name = "mtkd_rl"

    def __init__(self, hidden: int = 128, lr: float = 0.1, dynamic: bool = False, agent_step: int = 1000,
                 warmup_epochs: int = 1, buffer_device: str | torch.device | None = None):
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not isinstance(agent_step, int) or agent_step < 1:
            raise ValueError(f"agent_step must be a positive int, got {agent_step!r}")
        if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        self.hidden, self.lr, self.dynamic = hidden, lr, dynamic
        self.agent_step, self.warmup_epochs = agent_step, warmup_epochs
        self.buffer_device = buffer_device
        self.agent: TeacherWeightingAgent | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._buffer: list[tuple[tuple[torch.Tensor, ...], torch.Tensor]] = []
        self._pending_state: tuple[torch.Tensor, ...] | None = None
        self._batch_idx = 0
        self._head_sums: torch.Tensor | None = None
        self._head_count = 0
        self.head_history: list[list[float]] = []  # per epoch: mean a^l per teacher
        self.updates = 0
        self.agent_seconds = 0.0

    def __repr__(self) -> str:
        return (f"MTKDRL(hidden={self.hidden}, lr={self.lr}, dynamic={self.dynamic}, agent_step={self.agent_step}, "
                f"warmup_epochs={self.warmup_epochs})")

    def setup(self, num_teachers, teacher_embed_dims, num_classes, device) -> None:
        super().setup(num_teachers, list(teacher_embed_dims), num_classes, device)
        state_dim = sum(int(d) + int(num_classes) + 3 for d in teacher_embed_dims)
        if self.agent is None or self.agent.stem[0].in_features != state_dim:
            self.agent = TeacherWeightingAgent(state_dim, num_teachers, self.hidden, self.dynamic)
        self.agent.to(device)
        self.device = torch.device(device)
        self.optimizer = torch.optim.SGD(self.agent.parameters(), lr=self.lr)

    def _require_agent(self) -> TeacherWeightingAgent:
        if self.agent is None:
            raise RuntimeError("MTKDRL.setup(...) must run before use (the distiller calls it)")
        return self.agent

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        agent = self._require_agent()
        state = build_state(ctx)
        agent.eval()
        with torch.no_grad():
            w_l, w_f = agent(state)
            a_l, _ = agent.heads(state[0])
        sums = a_l.sum(0).cpu()
        self._head_sums = sums if self._head_sums is None else self._head_sums + sums
        self._head_count += a_l.shape[0]
        if ctx.epoch < self.warmup_epochs:
            w_l, w_f = torch.ones_like(w_l), torch.ones_like(w_f)
        self._pending_state = state
        return w_l.detach(), w_f.detach()

    def observe(self, ctx, logit_weights, feat_weights, per_sample_loss) -> None:
        if self._pending_state is None:
            raise RuntimeError("observe() called without a preceding weights() call for the same batch")
        reward = standardized_reward(per_sample_loss)
        dev = self.buffer_device
        state = tuple(s.to(dev) for s in self._pending_state) if dev is not None else self._pending_state
        self._buffer.append((state, reward.to(dev) if dev is not None else reward))
        self._pending_state = None
        if self._batch_idx % self.agent_step == 0 and self._batch_idx != 0:
            self.train_agent()
        self._batch_idx += 1

    def train_agent(self) -> float:
        """Replay the buffered batches once (one SGD step each); returns the mean agent loss."""
        import time

        agent = self._require_agent()
        if not self._buffer:
            return float("nan")
        start = time.perf_counter()
        agent.train()
        total = 0.0
        world = _world_size()
        for state, reward in self._buffer:
            state = tuple(s.to(self.device) for s in state)
            loss = agent_loss(agent, state, reward.to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                _average_gradients(agent, world)
            self.optimizer.step()
            total += float(loss.detach())
            self.updates += 1
        n = len(self._buffer)
        self._buffer = []
        agent.eval()
        self.agent_seconds += time.perf_counter() - start
        return total / n

    def end_epoch(self, epoch: int) -> dict[str, float]:
        loss = self.train_agent() if self._buffer else float("nan")
        self._batch_idx = 0
        if self._head_sums is not None and self._head_count:
            self.head_history.append((self._head_sums / self._head_count).tolist())
        self._head_sums, self._head_count = None, 0
        out = {"agent_loss": loss}
        if self.dynamic and self.agent is not None:
            lam = F.softmax(self.agent.logit_mix.detach(), dim=0).tolist()
            out.update({"mix_agent": lam[0], "mix_conf": lam[1], "mix_gap": lam[2]})
        return out

    def extra_history(self) -> dict[str, list[list[float]]]:
        return {"agent_head_logit": self.head_history}

    def state_dict(self) -> dict[str, Any]:
        agent = self._require_agent()
        return {"agent": agent.state_dict(), "optimizer": self.optimizer.state_dict(),
                "head_history": self.head_history, "updates": self.updates, "agent_seconds": self.agent_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        agent = self._require_agent()
        agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.head_history = list(state.get("head_history", []))
        self.updates = int(state.get("updates", 0))
        self.agent_seconds = float(state.get("agent_seconds", 0.0))


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average_gradients(module: nn.Module, world: int) -> None:
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world

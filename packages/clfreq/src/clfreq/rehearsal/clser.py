"""CLS-ER (Arani, Sarfraz, Zonooz, ICLR 2022; mammoth ``models/clser.py``)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .base import Rehearsal


class CLSER(Rehearsal):
    """CLS-ER (Arani, Sarfraz, Zonooz, ICLR 2022; mammoth ``clser``): a working model trained with CE on the current
    batch and a buffer draw, plus a consistency term λ·MSE(f(x_buf), z_ema) towards the logits of two EMA copies —
    a *plastic* model (updated with probability ``plastic_freq`` per step) and a *stable* one (``stable_freq``),
    both with decay ``min(1 − 1/(step + 1), α)``. Per buffer sample the teacher is the EMA model giving the higher
    softmax probability to the true class. Evaluation uses the stable model.

    Defaults are mammoth's best args for Split CIFAR-10 with buffer 50 (lr 0.1, λ 0.15, r_S 0.1, r_P 0.5, α 0.999
    for both; notes §1.5–1.6). The loss is the official one: λ·mean((f(x_buf) − z_ema)²) with its own forward of the
    buffer draw, plus the mean CE over the current batch and the same buffer draw forwarded as one concatenated
    batch. With the CLFD plugin the CE uses two forwards (the class mask applies to the current batch only) and is
    still the mean over both sets. One choice differs from the official code, on purpose: the update coin flips use
    a generator seeded identically on every process, so data-parallel copies of the EMA models stay equal. As the
    official code, only the weights are averaged and the teachers run in train mode (batch statistics), so their
    BatchNorm running statistics are their own, collected on buffer draws with their averaged weights — evaluating
    the stable model with the working model's (or EMA-averaged) statistics instead left it at chance in our short
    runs.

    Time scales: an EMA model averages over about ``1 / (freq · (1 − α))`` steps — 10 000 (stable) and 2 000
    (plastic) steps with the official values, against ≈15 600 steps per task in mammoth's Split CIFAR-10 setting
    (50 epochs × 313). Short runs need faster EMAs (:data:`QUICK_ARGS` scales them for the CPU quick benchmark).
    """

    name = "cls-er"

    def __init__(self, lr: float = 0.1, reg_weight: float = 0.15, stable_freq: float = 0.1, plastic_freq: float = 0.5,
                 stable_alpha: float = 0.999, plastic_alpha: float = 0.999, **kw):
        super().__init__(lr=lr, **kw)
        for k, v in (("stable_freq", stable_freq), ("plastic_freq", plastic_freq)):
            if not 0 <= v <= 1:
                raise ValueError(f"{k} must be a probability in [0, 1], got {v}")
        for k, v in (("stable_alpha", stable_alpha), ("plastic_alpha", plastic_alpha)):
            if not 0 <= v < 1:
                raise ValueError(f"{k} must be in [0, 1), got {v}")
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be non-negative, got {reg_weight}")
        self.reg_weight, self.stable_freq, self.plastic_freq = reg_weight, stable_freq, plastic_freq
        self.stable_alpha, self.plastic_alpha = stable_alpha, plastic_alpha

    def setup(self, *a, **kw):
        out = super().setup(*a, **kw)
        self.plastic = copy.deepcopy(self.net).eval()
        self.stable = copy.deepcopy(self.net).eval()
        for p in list(self.plastic.parameters()) + list(self.stable.parameters()):
            p.requires_grad_(False)
        self.ema_step = 0
        self.ema_updates = {"plastic": 0, "stable": 0}
        self.ema_gen = torch.Generator().manual_seed(self.seed + 104729)  # same on every process
        return out

    @property
    def eval_net(self) -> torch.nn.Module:
        return self.stable

    def step_synced_modules(self) -> list[torch.nn.Module]:
        return [self.stable, self.plastic]  # their BatchNorm statistics change in every step's teacher forward

    @torch.no_grad()
    def update_ema(self, which: str) -> float:
        """One EMA update of the ``"plastic"`` or ``"stable"`` model from the working model; returns the decay."""
        ema, alpha = (self.plastic, self.plastic_alpha) if which == "plastic" else (self.stable, self.stable_alpha)
        a = min(1 - 1 / (self.ema_step + 1), alpha)
        for e, p in zip(ema.parameters(), self.net.parameters()):
            e.mul_(a).add_(p.detach(), alpha=1 - a)
        self.ema_updates[which] += 1
        return a

    def after_step(self) -> None:
        self.ema_step += 1
        r = torch.rand(2, generator=self.ema_gen)
        if float(r[0]) < self.plastic_freq:
            self.update_ema("plastic")
        if float(r[1]) < self.stable_freq:
            self.update_ema("stable")

    def compute_loss(self, z, y):
        if not len(self.buffer):
            return super().compute_loss(z, y)
        b = self.buffer.sample(self.minibatch)
        bx, lab = self.replay_input(b["examples"]), b["labels"]
        with torch.no_grad():  # teachers in train mode, as the official code (see the class docstring)
            self.stable.train(), self.plastic.train()
            zs, zp = self.stable.classify(bx), self.plastic.classify(bx)
            self.stable.eval(), self.plastic.eval()
            take_stable = F.softmax(zs, 1).gather(1, lab[:, None]) > F.softmax(zp, 1).gather(1, lab[:, None])
            target = torch.where(take_stable, zs, zp)
        loss = self.reg_weight * F.mse_loss(self.net.classify(bx, None), target)
        if not self.concat_replay:  # CLFD's class mask on the current batch only: two forwards, mean CE over both sets
            logits, out_b = self.net.classify(z, y), self.net.classify(bx, None)
            ce = (F.cross_entropy(logits, y, reduction="sum") + F.cross_entropy(out_b, lab, reduction="sum"))
            return loss + ce / (len(y) + len(lab)), logits
        out = self.net.classify(torch.cat([z, bx]), None)
        return loss + F.cross_entropy(out, torch.cat([y, lab])), out[: len(y)]

    def loss(self, logits, y):  # first step (empty buffer): CE of the current batch
        return F.cross_entropy(logits, y)

    def state_dict(self) -> dict:
        return super().state_dict() | {"plastic": self.plastic.state_dict(), "stable": self.stable.state_dict(),
                                       "ema_step": self.ema_step, "ema_updates": dict(self.ema_updates),
                                       "ema_gen": self.ema_gen.get_state()}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.plastic.load_state_dict(s["plastic"])
        self.stable.load_state_dict(s["stable"])
        self.ema_step, self.ema_updates = s["ema_step"], dict(s["ema_updates"])
        self.ema_gen.set_state(s["ema_gen"])


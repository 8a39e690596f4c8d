"""The rehearsal method base class (mammoth ``ContinualModel``): net, optimiser, reservoir buffer, the training step
and the hooks the trainer calls."""

from __future__ import annotations

import torch

from .buffer import ReservoirBuffer
from .nets import ResNet18


class Rehearsal:
    """Base rehearsal method (mammoth ``ContinualModel``): plain SGD, minibatch replay of ``minibatch`` samples.

    Subclasses define :meth:`loss` (or :meth:`compute_loss`). A plugin (:mod:`.plugins`: CLFD, FDINet) is a mixin
    placed before the method's class; it overrides :meth:`build_net`, the buffer capacity and the hooks below, which
    :func:`~clfreq.rehearsal.trainer.train_continual` calls in mammoth's order. As in mammoth, the current batch and
    every replayed sample go through the benchmark's train transform (``self.transform``, a
    :class:`~clfreq.rehearsal.augment.Augment` or ``None``) while the buffer stores the non-augmented input; CLFD
    replaces the replay transform by its map transform.
    """

    name = "base"
    #: the plugin mixed in (``"clfd"``, ``"fdinet"``) or ``None``
    plugin: str | None = None
    #: ``True``: ER and CLS-ER forward the current batch and a buffer draw as one concatenated batch (mammoth);
    #: ``False`` (CLFD): two forwards, so that the class mask applies to the current batch only
    concat_replay: bool = True
    #: names of net buffers kept out of the per-step averaging over processes (CLFD's counts and probabilities)
    summed_buffers: tuple[str, ...] = ()

    def __init__(self, lr: float = 0.1, buffer_size: int = 50, minibatch: int = 32, nf: int = 20):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
        if not isinstance(minibatch, int) or minibatch < 1:
            raise ValueError(f"minibatch must be a positive int, got {minibatch!r}")
        self.lr, self.buffer_size, self.minibatch, self.nf = lr, buffer_size, minibatch, nf
        self.buffer_factor = 1

    # set by setup()
    def setup(self, num_classes: int, in_channels: int, classes_per_task: int, epochs: int, device, seed: int,
              transform=None, rank: int = 0, world: int = 1, black=None):
        """Build net, optimiser and buffer. ``rank``/``world``: data-parallel process (the buffer is this process's
        reservoir shard, gradients are all-reduced); ``transform``: train augmentation; ``black``: the normalised
        value of a black pixel per channel (padding fill)."""
        from .distributed import broadcast_modules, shard_capacity

        self.num_classes, self.cpt, self.epochs, self.device = num_classes, classes_per_task, epochs, device
        self.rank, self.world, self.seed = rank, world, seed
        self.transform = transform
        self.black = (torch.zeros(in_channels) if black is None else torch.as_tensor(black, dtype=torch.float32))
        self.black = self.black.to(device)
        self.net = self.build_net(num_classes, in_channels).to(device)
        if world > 1:
            broadcast_modules([self.net])
        self.opt = torch.optim.SGD(self.net.parameters(), lr=self.lr)
        cap = self.buffer_size * self.buffer_factor
        if world > 1 and cap < world:
            raise ValueError(f"buffer capacity {cap} is smaller than the number of processes {world}")
        self.buffer = ReservoirBuffer(shard_capacity(cap, rank, world), seed=seed + 7919 * rank)
        self.task = 0
        return self

    def build_net(self, num_classes, in_channels):
        return ResNet18(num_classes, in_channels, self.nf)

    @property
    def label(self) -> str:
        return self.name if self.plugin is None else f"{self.plugin}-{self.name}"

    @property
    def eval_net(self) -> torch.nn.Module:
        """The network evaluated after each task (CLS-ER: its stable EMA model)."""
        return self.net

    def step_synced_modules(self) -> list[torch.nn.Module]:
        """Modules besides the net whose floating buffers change during a step (averaged over processes)."""
        return []

    # hooks (1-based epochs, as mammoth's training.py)
    def begin_task(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.task = t

    def begin_epoch(self, e: int) -> None: ...
    def end_epoch(self, e: int) -> None: ...
    def end_task(self, t: int) -> None: ...
    def after_step(self) -> None: ...

    def on_resume(self, task: int, epoch: int) -> None:
        """Called once after :meth:`load_state_dict` when a run resumes at ``task``/``epoch`` (before any hook)."""

    def epoch_counters(self) -> list[torch.Tensor]:
        """Per-process count tensors summed over the processes at the end of every epoch (CLFD's activation
        counts), before :meth:`end_epoch` reads them."""
        return []

    def store(self, z, y, logits, t):
        self.buffer.add(examples=z, labels=y, logits=logits.detach(), task_ids=torch.full_like(y, t))

    def observe(self, x: torch.Tensor, y: torch.Tensor, backend=None) -> float:
        self.net.train()
        self.opt.zero_grad()
        xa = self.transform(x, self.black) if self.transform is not None else x
        z = self.net.encode(xa)
        loss, logits = self.compute_loss(z, y)
        (backend.backward(loss) if backend is not None else loss.backward())
        if self.world > 1:
            from .distributed import allreduce_step

            allreduce_step(self.net, self.world, self.summed_buffers, self.step_synced_modules())
        (backend.step(self.opt) if backend is not None else self.opt.step())  # fp16 loss scaler where used
        if xa is x:
            zs = z.detach()
        else:  # the buffer keeps the non-augmented input (mammoth's not_aug_inputs)
            with torch.no_grad():
                zs = self.net.encode(x)
        self.store(zs, y, logits, self.task)
        self.after_step()
        return float(loss.detach())

    def replay_input(self, ex: torch.Tensor) -> torch.Tensor:
        """Train transform for replayed buffer samples (raw images: the benchmark's transform)."""
        return self.transform(ex, self.black) if self.transform is not None else ex

    def replay(self, net: torch.nn.Module | None = None):
        b = self.buffer.sample(self.minibatch)
        b["input"] = self.replay_input(b["examples"])
        return b, (net if net is not None else self.net).classify(b["input"], None)

    def compute_loss(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one step from the encoded current batch ``z``; returns ``(loss, logits of the current batch)``.

        Default: the current batch through the net alone (with its labels, for CLFD's class mask), then
        :meth:`loss`, which adds the replay terms with their own forward passes (DER++, ER-ACE; ER and CLS-ER
        override this to forward the current batch and a buffer draw as one concatenated batch, as mammoth)."""
        logits = self.net.classify(z, y)
        return self.loss(logits, y), logits

    def loss(self, logits, y):
        raise NotImplementedError

    def state_dict(self) -> dict:
        s = {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "buffer": self.buffer.state_dict(),
             "task": self.task, "world": self.world}
        if self.transform is not None:
            s["transform"] = self.transform.state_dict()
        return s

    def load_state_dict(self, s: dict) -> None:
        if s.get("world", 1) != self.world:
            raise ValueError(f"checkpoint was written by {s.get('world', 1)} processes, this run has {self.world}")
        self.net.load_state_dict(s["net"])
        self.opt.load_state_dict(s["opt"])
        self.buffer.load_state_dict(s["buffer"], self.device)
        self.task = s["task"]
        if self.transform is not None and "transform" in s:
            self.transform.load_state_dict(s["transform"])

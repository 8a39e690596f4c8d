"""CLFD (Liu et al., NeurIPS 2024; notes §1.2–1.5) as a plugin mixin for the rehearsal methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment import Augment
from ..base import Rehearsal
from ..nets import CLFDNet
from .base import PluginMixin, attach


class CLFDMixin(PluginMixin):
    """CLFD on top of a rehearsal method: frequency encoder + ResNet on half resolution, a buffer of
    ``buffer_factor``× encoded maps (same bytes as the raw buffer), the encoder frozen from the last epoch of task 0
    (buffer emptied then refilled, counter restored), k-WTA and the class-aware selection schedule.

    Pitfall decisions (notes §1.8): counts updated with ``index_add_`` on device; similarities over the explicit
    old-class set; counts never reset (as the official code). When the benchmark has a train transform (Split CIFAR /
    Tiny-ImageNet), replayed maps get CLFD's map transform: random crop with half the image padding (2 for CIFAR) +
    flip, the padding filled with the encoder output of a black image — a per-channel constant (the Haar transform
    of a constant image is 2·value in LL and 0 elsewhere), written into an explicit padding region instead of the
    official ``buf == 0`` test.

    ``clfd_state`` holds the schedule's state (``reserved``, ``init``, ``rho``, ``ll``, ``seen_task0``; saved in the
    checkpoint as ``"clfd"``) and, unsaved, the task's data (``x``, ``y``) and the map transform (``map_aug``).
    """

    plugin = "clfd"
    display = "CLFD"
    concat_replay = False  # the class mask applies to the current batch only: its own forward
    #: per-process counts (summed over processes per epoch, :meth:`epoch_counters`) and the probabilities derived
    #: from them: never averaged per step
    summed_buffers = ("select_counts", "select_probs")

    def __init__(self, *args, kwta_keep: float = 0.6, buffer_factor: int = 4, selection: bool = True, **kw):
        super().__init__(*args, **kw)
        self.configure_plugin(kwta_keep, buffer_factor, selection)

    def configure_plugin(self, kwta_keep: float = 0.6, buffer_factor: int = 4, selection: bool = True) -> None:
        self.kwta_keep, self.buffer_factor, self.selection = kwta_keep, buffer_factor, selection
        self.clfd_state: dict = {}

    # ---------------------------------------------------------------------------------------------- setup, state
    def build_net(self, num_classes, in_channels):
        return CLFDNet(num_classes, in_channels, self.nf, self.kwta_keep)

    def setup(self, *a, **kw):
        out = super().setup(*a, **kw)
        st, net, d = self.clfd_state, self.net, self.net.dim
        st["reserved"] = int(d * 1.1 * self.kwta_keep)
        st["init"] = torch.zeros(d, device=net.select_probs.device)
        st["init"][: st["reserved"]] = 1.0
        st["rho"] = torch.zeros(self.num_classes, device=net.select_probs.device)
        st["rho"][: self.cpt] = 2.0
        st["ll"] = {}
        st["seen_task0"] = 0
        net.use_class_mask = self.selection
        tr = self.transform
        st["map_aug"] = (None if tr is None else
                         Augment(max(1, tr.padding // 2) if tr.padding else 0, tr.flip,
                                 seed=self.seed * 1000003 + 17 + self.rank))
        return out

    def state_dict(self) -> dict:
        st = self.clfd_state
        keep = {k: v for k, v in st.items() if k not in ("x", "y", "map_aug")}
        aug = st["map_aug"].state_dict() if st.get("map_aug") is not None else None
        return super().state_dict() | {"clfd": keep, "clfd_map_aug": aug}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        st = self.clfd_state
        st.update(s["clfd"])
        if st.get("map_aug") is not None and s.get("clfd_map_aug") is not None:
            st["map_aug"].load_state_dict(s["clfd_map_aug"])

    def on_resume(self, task: int, epoch: int) -> None:
        super().on_resume(task, epoch)
        if task > 0:  # the encoder was frozen in task 0's last epoch
            self.freeze_encoder()

    def freeze_encoder(self) -> None:
        for p in self.net.encoder.parameters():
            p.requires_grad_(False)

    # ---------------------------------------------------------------------------------------------- replay
    def replay_input(self, ex: torch.Tensor) -> torch.Tensor:
        """Buffered maps through CLFD's map transform (none without a benchmark transform)."""
        aug = self.clfd_state["map_aug"]
        if aug is None:
            return ex
        with torch.no_grad():  # encoder output of a black image: one value per output channel
            black = self.black.reshape(1, -1, 1, 1).expand(1, -1, 2, 2)
            fill = self.net.encoder(black)[0][0, :, 0, 0]
        return aug(ex, fill)

    def epoch_counters(self) -> list[torch.Tensor]:
        return super().epoch_counters() + [self.net.select_counts]

    # ---------------------------------------------------------------------------------------------- schedule
    def classes(self, t: int) -> list[int]:
        return list(range(t * self.cpt, (t + 1) * self.cpt))

    def begin_task(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        super().begin_task(t, x, y)
        self.clfd_state["x"], self.clfd_state["y"] = x, y

    def collect_ll(self) -> None:
        """Per-class sums of the task's LL maps (the class similarities of the selection schedule)."""
        st, net = self.clfd_state, self.net
        with torch.no_grad():
            ll = torch.cat([net.encoder(st["x"][i:i + 256].to(self.device))[1].flatten(1)
                            for i in range(0, len(st["x"]), 256)])
        for c in self.classes(self.task):
            st["ll"][c] = ll[st["y"].to(ll.device) == c].sum(0)

    def begin_epoch(self, e: int) -> None:
        """Task 0: the reserved units at epoch 1; the last epoch freezes the encoder and empties the buffer (it is
        refilled with maps of the frozen encoder). Later tasks: the new classes start at ``kwta_keep``."""
        super().begin_epoch(e)
        net, t = self.net, self.task
        if t == 0:
            if e == 1:
                net.select_probs[self.classes(0)] = self.clfd_state["init"]
            if e == self.epochs:
                self.clfd_state["seen_task0"] = self.buffer.num_seen
                self.freeze_encoder()
                self.buffer.empty()
        elif e == 1:
            net.select_probs[self.classes(t)] = self.kwta_keep

    def end_epoch(self, e: int) -> None:
        super().end_epoch(e)
        t = self.task
        if (t == 0 and e == self.epochs) or (t > 0 and e == 1):
            self.collect_ll()
        if t > 0 and e == 1 and self.selection:
            self.init_new_classes(t)
        if self.selection and e > 0.4 * self.epochs:
            self.update_selection(t)

    def init_new_classes(self, t: int) -> None:
        """After task t's first epoch: each new class's probabilities from the counts of its least and most similar
        old classes (cosine similarity of the LL sums)."""
        st, net = self.clfd_state, self.net
        old = [c for c in range(t * self.cpt) if c in st["ll"]]
        if not old:
            return
        lo = torch.stack([st["ll"][c] for c in old])
        for c in self.classes(t):
            s = F.cosine_similarity(st["ll"][c][None], lo, dim=1)
            jmin, jmax = old[int(s.argmin())], old[int(s.argmax())]
            m = (s + 1).mean()
            fmin = m / (s.min() + 1).clamp_min(1e-8)
            fmax = (s.max() + 1) / m.clamp_min(1e-8)
            a_min, a_max = net.select_counts[jmin], net.select_counts[jmax]
            p_min = torch.exp(-a_min * fmin / a_min.max().clamp_min(1e-8))
            p_max = 1 - torch.exp(-a_max * fmax / a_max.max().clamp_min(1e-8))
            net.select_probs[c] = 0.5 * p_min + 0.5 * p_max
            st["rho"][c] = 2.0

    def update_selection(self, t: int) -> None:
        """After the warm-up (epochs > 40 %): probabilities 1 − exp(−ρ·a / max a) of every counted seen class."""
        net, seen = self.net, (t + 1) * self.cpt
        a = net.select_counts[:seen]
        probs = 1 - torch.exp(-self.clfd_state["rho"][:seen, None] * a / a.max(1, keepdim=True).values.clamp_min(1e-8))
        counted = a.sum(1) > 0
        net.select_probs[:seen][counted] = probs[counted]

    def end_task(self, t: int) -> None:
        super().end_task(t)
        if t == 0:  # the reservoir counter continues from what task 0 offered before the refill
            self.buffer.num_seen = max(self.buffer.num_seen, self.clfd_state["seen_task0"] + self.buffer.num_seen)


def CLFD(method: Rehearsal, kwta_keep: float = 0.6, buffer_factor: int = 4, selection: bool = True) -> Rehearsal:
    """Wrap a rehearsal method with CLFD (:class:`CLFDMixin`), in place; returns the method."""
    return attach(method, CLFDMixin, kwta_keep=kwta_keep, buffer_factor=buffer_factor, selection=selection)

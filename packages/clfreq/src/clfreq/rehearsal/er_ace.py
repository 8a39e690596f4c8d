"""ER-ACE (Caccia et al., ICLR 2022; mammoth ``models/er_ace.py``, CLFD's ``er_ace_clfd.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Rehearsal


class ERACE(Rehearsal):
    """ER-ACE (Caccia et al. 2022), as mammoth ``models/er_ace.py`` (and CLFD's ``er_ace_clfd.py``): from the second
    task on, the current batch's CE is over the classes present in the batch plus every class from the largest
    label seen so far (``seen_so_far.max()``, itself included) upwards; a buffer draw adds plain CE(buffer).

    ``seen_so_far`` accumulates the labels of every batch (it is state, saved in the checkpoint). As the official
    code, the "from the largest seen label" rule is skipped once the last class has been seen (newer mammoth drops
    that ``if``; the only difference is whether the last class stays unmasked when absent from the batch).
    """

    name = "er-ace"

    def __init__(self, lr: float = 0.03, **kw):
        super().__init__(lr=lr, **kw)

    def setup(self, *a, **kw):
        out = super().setup(*a, **kw)
        self.seen_so_far = torch.zeros(0, dtype=torch.long, device=self.device)
        return out

    def ace_mask(self, y: torch.Tensor, num_logits: int) -> torch.Tensor:
        """Boolean ``[num_logits]`` mask of the classes the current batch's CE runs over (updates ``seen_so_far``)."""
        present = y.unique()
        self.seen_so_far = torch.cat([self.seen_so_far, present]).unique()
        mask = torch.zeros(num_logits, dtype=torch.bool, device=y.device)
        mask[present] = True
        top = int(self.seen_so_far.max())
        if top < self.num_classes - 1:
            mask[top:] = True
        return mask

    def loss(self, logits, y):
        mask = self.ace_mask(y, logits.shape[1])
        if self.task > 0:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits, y)
        if self.task > 0 and len(self.buffer):
            b, out = self.replay()
            loss = loss + F.cross_entropy(out, b["labels"])
        return loss

    def state_dict(self) -> dict:
        return super().state_dict() | {"seen_so_far": self.seen_so_far.cpu()}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.seen_so_far = s["seen_so_far"].to(self.device)


"""DER++ (Buzzega et al., NeurIPS 2020; mammoth ``models/derpp.py``)."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Rehearsal


class DERpp(Rehearsal):
    """DER++ (Buzzega et al. 2020): CE(cur) + α·MSE(logits_buf, stored logits) + β·CE(buf), two independent draws."""

    name = "der++"

    def __init__(self, lr: float = 0.03, alpha: float = 0.1, beta: float = 0.5, **kw):
        super().__init__(lr=lr, **kw)
        self.alpha, self.beta = alpha, beta

    def loss(self, logits, y):
        loss = F.cross_entropy(logits, y)
        if len(self.buffer):
            b, out = self.replay()
            loss = loss + self.alpha * F.mse_loss(out, b["logits"])
            b, out = self.replay()
            loss = loss + self.beta * F.cross_entropy(out, b["labels"])
        return loss


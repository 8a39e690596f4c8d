"""Experience Replay (mammoth ``models/er.py``; with CLFD, the official ``er_clfd.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Rehearsal


class ER(Rehearsal):
    """Experience Replay, as mammoth ``models/er.py``: the current batch and a buffer draw of ``minibatch`` samples
    go through the net as *one* concatenated batch (one forward, so BatchNorm normalises them together) and the loss
    is the mean cross-entropy over all ``n + m`` samples — not CE(cur) + CE(buf), which is twice the scale.

    With the CLFD plugin (``concat_replay = False``) the official ``er_clfd.py`` is followed instead: CE(current
    batch, class-masked) + CE(buffer draw through the net without the class mask), two forwards.
    """

    name = "er"

    def compute_loss(self, z, y):
        if not self.concat_replay or not len(self.buffer):
            return super().compute_loss(z, y)
        b = self.buffer.sample(self.minibatch)
        out = self.net.classify(torch.cat([z, self.replay_input(b["examples"])]), None)
        return F.cross_entropy(out, torch.cat([y, b["labels"]])), out[: len(y)]

    def loss(self, logits, y):  # the CLFD path (official er_clfd.py) and the first step (empty buffer)
        loss = F.cross_entropy(logits, y)
        if len(self.buffer):
            b, out = self.replay()
            loss = loss + F.cross_entropy(out, b["labels"])
        return loss


"""The rehearsal baselines, evaluation and CLFD's mask against numbers computed by hand from the official formulas.

mammoth (aimagelab/mammoth): ``models/er.py``, ``models/derpp.py``, ``models/er_ace.py``, CLS-ER
(``models/clser.py``, NeurAI-Lab), ``utils/evaluate.py``; CLFD (EMLS-ICTCAS/CLFD): ``backbone/DWTNet.py``.
The nets below make the logits equal to the input (or a fixed linear map of it), so each loss is a closed form.
"""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from clfreq import CLSER, ER, ERACE, CLFDNet, DERpp
from clfreq.rehearsal import evaluate, kwta
from clfreq.rehearsal.benchmarks import Benchmark


class LogitNet(nn.Module):
    """encode = identity; classify = z @ W.T (W = identity by default): the inputs are the logits."""

    def __init__(self, k: int, weight: torch.Tensor | None = None):
        super().__init__()
        self.lin = nn.Linear(k, k, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(k) if weight is None else weight)

    def encode(self, x):
        return x

    def classify(self, z, y=None):
        return self.lin(z)

    def forward(self, x):
        return self.classify(x)


def _ce(logits, label, classes=None):
    """Cross-entropy of one sample by hand: log sum_c exp(z_c) - z_label, over ``classes`` (default: all)."""
    classes = range(len(logits)) if classes is None else classes
    return math.log(sum(math.exp(logits[c]) for c in classes)) - logits[label]


def _method(cls, k, **kw):
    m = cls(buffer_size=8, minibatch=8, **kw)
    m.setup(num_classes=k, in_channels=3, classes_per_task=2, epochs=1, device=torch.device("cpu"), seed=0)
    m.net = LogitNet(k)
    return m


def _fill(m, xs, ys, logits=None):
    xs, ys = torch.tensor(xs, dtype=torch.float32), torch.tensor(ys)
    m.buffer.add(examples=xs, labels=ys, logits=xs if logits is None else torch.tensor(logits, dtype=torch.float32),
                 task_ids=torch.zeros_like(ys))


def test_er_is_one_mean_ce_over_the_concatenated_batch():
    m = _method(ER, 4)
    z, y = torch.tensor([[2.0, 0, 0, 0], [0, 1.0, 0, 0]]), torch.tensor([0, 1])
    _fill(m, [[0, 0, 3.0, 0]], [2])
    loss, logits = m.compute_loss(z, y)
    a, b, c = _ce([2, 0, 0, 0], 0), _ce([0, 1, 0, 0], 1), _ce([0, 0, 3, 0], 2)
    assert loss.item() == pytest.approx((a + b + c) / 3, rel=1e-6)  # mammoth: CE(cat(cur, buf))
    assert abs(loss.item() - ((a + b) / 2 + c)) > 0.1  # not CE(cur) + CE(buf)
    assert torch.equal(logits, z)
    empty = _method(ER, 4)  # first step: no buffer yet, plain CE
    assert empty.compute_loss(z, y)[0].item() == pytest.approx((a + b) / 2, rel=1e-6)


def test_derpp_adds_alpha_mse_to_stored_logits_and_beta_ce():
    m = _method(DERpp, 3, alpha=0.3, beta=0.7)
    z, y = torch.tensor([[1.0, 0, 0]]), torch.tensor([0])
    _fill(m, [[0, 2.0, 0]], [1], logits=[[0.5, 1.0, -1.0]])  # one sample: both draws return it
    loss, _ = m.compute_loss(z, y)
    mse = ((0 - 0.5) ** 2 + (2 - 1) ** 2 + (0 + 1) ** 2) / 3
    expected = _ce([1, 0, 0], 0) + 0.3 * mse + 0.7 * _ce([0, 2, 0], 1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_er_ace_masks_to_present_classes_and_from_the_largest_seen_label_up():
    m = _method(ERACE, 6)
    m.task = 1
    m.seen_so_far = torch.tensor([0, 1])
    _fill(m, [[2.0, 1, 0, 0, 0, 0]], [0])
    rows = [[1.0, 2, 0.5, 0, 3, -1], [0.0, 0, 1, 2, 0, 0]]
    loss, _ = m.compute_loss(torch.tensor(rows), torch.tensor([2, 2]))
    # seen {0, 1, 2}, largest 2: CE over {2} ∪ {2, 3, 4, 5}; old classes 0, 1 masked
    cur = (_ce(rows[0], 2, [2, 3, 4, 5]) + _ce(rows[1], 2, [2, 3, 4, 5])) / 2
    assert loss.item() == pytest.approx(cur + _ce([2, 1, 0, 0, 0, 0], 0), rel=1e-6)
    # next batch brings label 3: the largest seen label is 3, so class 2 (seen, absent) is masked now
    row = [0.0, 0, 4, 1, 0, 0]
    loss, _ = m.compute_loss(torch.tensor([row]), torch.tensor([3]))
    assert loss.item() == pytest.approx(_ce(row, 3, [3, 4, 5]) + _ce([2, 1, 0, 0, 0, 0], 0), rel=1e-6)
    assert m.seen_so_far.tolist() == [0, 1, 2, 3]
    # first task: no mask and no replay term
    first = _method(ERACE, 6)
    _fill(first, [[2.0, 1, 0, 0, 0, 0]], [0])
    loss, _ = first.compute_loss(torch.tensor([rows[0]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(_ce(rows[0], 1), rel=1e-6)


def test_cls_er_is_lambda_mse_to_the_better_teacher_plus_mean_ce_over_both_sets():
    torch.manual_seed(0)
    k = 3
    m = _method(CLSER, k, reg_weight=0.4)
    wn, ws, wp = torch.randn(k, k), torch.randn(k, k), torch.randn(k, k)
    m.net, m.stable, m.plastic = LogitNet(k, wn), LogitNet(k, ws), LogitNet(k, wp)
    bx = np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]])
    by = [2, 1]
    _fill(m, bx.tolist(), by)
    zc, yc = np.array([[0.5, 0.1, -0.3]]), [0]
    loss, _ = m.compute_loss(torch.tensor(zc, dtype=torch.float32), torch.tensor(yc))

    wn, ws, wp = (w.double().numpy() for w in (wn, ws, wp))
    out, zs, zp = bx @ wn.T, bx @ ws.T, bx @ wp.T

    def softmax(a):
        e = np.exp(a - a.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    take_stable = softmax(zs)[[0, 1], by] > softmax(zp)[[0, 1], by]
    target = np.where(take_stable[:, None], zs, zp)
    mse = ((out - target) ** 2).mean()
    cur = zc @ wn.T
    ce = (_ce(cur[0], 0) + _ce(out[0], 2) + _ce(out[1], 1)) / 3  # one mean over the 1 + 2 samples
    assert loss.item() == pytest.approx(0.4 * mse + ce, rel=1e-5)


def test_clfd_class_mask_is_one_draw_per_unit_shared_by_the_batch():
    torch.manual_seed(0)
    net = CLFDNet(4, nf=4).train()
    net.select_probs[0] = 0.5
    net.select_probs[1] = torch.linspace(0, 1, net.dim)
    ref = copy.deepcopy(net)
    z, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 0, 0, 1, 1, 0])
    torch.manual_seed(123)
    out = net.classify(z, y)
    torch.manual_seed(123)
    u = torch.rand(net.dim)  # official DWTNet.py: torch.rand(x.shape[1]) < classwise_select_probs[y]
    h = ref.features(z) * (u[None] < ref.select_probs[y])
    expected = ref.classifier(kwta(h, 0.6))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # samples of one class share their mask: the units zeroed before k-WTA are the same for all class-0 samples
    masked = (u[None] >= ref.select_probs[y])
    assert torch.equal(masked[0], masked[1]) and torch.equal(masked[0], masked[5])


def test_class_il_is_scored_over_the_classes_seen_so_far():
    # three tasks of two classes; the "net" returns its input as logits
    x0 = torch.tensor([[5.0, 0, 9, 0, 0, 0], [0, 3.0, 0, 0, 0, 8], [1.0, 0, 0, 0, 0, 0]])
    y0 = torch.tensor([0, 1, 1])
    x1 = torch.tensor([[0.0, 0, 1, 0, 0, 7]])
    y1 = torch.tensor([2])
    zero = (torch.zeros(1, 6), torch.zeros(1, dtype=torch.long))
    bench = Benchmark("hand", [zero] * 3, [(x0, y0), (x1, y1), zero], classes_per_task=2, in_channels=6)
    method = SimpleNamespace(eval_net=LogitNet(6), device=torch.device("cpu"))
    cil, til = evaluate(method, bench, upto=0)
    # after task 0 only classes {0, 1} compete: argmax 0, 1, 0 -> 2 of 3 right (unmasked it would be 0 of 3)
    assert cil == pytest.approx([2 / 3]) and til == pytest.approx([2 / 3])
    cil, til = evaluate(method, bench, upto=1)
    # after task 1 classes {0..3}: task 0 argmax 2, 1, 0 -> 1 of 3; task 1 sample argmax 2 -> right
    assert cil == pytest.approx([1 / 3, 1.0]) and til == pytest.approx([2 / 3, 1.0])

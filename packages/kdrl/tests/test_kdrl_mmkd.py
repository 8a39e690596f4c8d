"""MMKD against the official code (Rorozhl/MMKD): the weight networks by hand on constructed batches, the hard
buffer's bookkeeping, the meta-gradient against an independent unrolled differentiation through the look-ahead
steps, rollback, the meta-step schedule and resume."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from kdrl import DistillConfig, MultiTeacherDistiller, create_strategy
from kdrl.adapters import build_adaptors
from kdrl.distiller import StudentWithAdaptors
from kdrl.features import ClassifierOutput, as_feature_classifier
from kdrl.models import MLP
from kdrl.strategies.mmkd import MMKD, FeatureWeightNet, HardBuffer, LogitsWeightNet


def _set_linear(layer: nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def test_logits_weight_net_by_hand():
    # official LogitsWeight with K = 2 classes, M = 2 teachers: input [z_t1, z_t2, z_s] (6), hidden 6 // 2 = 3
    net = LogitsWeightNet(num_classes=2, num_teachers=2)
    assert (net.layer.in_features, net.layer.out_features, net.all_act.out_features) == (6, 3, 2)
    _set_linear(net.layer, [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]], [0, 0, 0])
    _set_linear(net.all_act, [[1, 0, 0], [0, 1, -1]], [0, 0.5])
    # sample 0: h = relu(2, 1, -1) = (2, 1, 0) -> (2, 1.5); sample 1: h = relu(-1, 0, 3) = (0, 0, 3) -> (0, -2.5)
    z_t = [torch.tensor([[2.0, 0.0], [-1.0, 4.0]]), torch.tensor([[1.0, 3.0], [0.0, 1.0]])]
    z_s = torch.tensor([[-1.0, 0.5], [3.0, 0.0]])
    w = net(z_t, z_s)
    e0, e1 = math.exp(-0.5), math.exp(-2.5)
    expected = [[1 / (1 + e0), e0 / (1 + e0)], [1 / (1 + e1), e1 / (1 + e1)]]
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_feature_weight_net_by_hand():
    # B = 2, M = 2: Gram matrices of the flattened maps, input rows [G1[b], G2[b], Gs[b]] (6), hidden 3
    t1 = torch.tensor([[1.0, 2.0], [0.0, 1.0]]).reshape(2, 1, 1, 2)  # G1 = [[5, 2], [2, 1]]
    t2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).reshape(2, 2, 1, 1)  # G2 = [[1, 1], [1, 2]]
    s = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).reshape(2, 3, 1, 1)  # Gs = [[9, 0], [0, 0]]
    net = FeatureWeightNet(batch_size=2, num_teachers=2)
    _set_linear(net.layer, [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0]], [0, 0, -1])
    _set_linear(net.all_act, [[0.5, 0, -0.25], [0, 1, 0]], [0, 0])
    # rows: [5, 2, 1, 1, 9, 0] -> h = (5, 1, 8) -> (0.5, 1); [2, 1, 1, 2, 0, 0] -> h = (2, 2, 0) -> (1, 2)
    w = net([t1, t2], s)
    e0, e1 = 1 / (1 + math.exp(0.5)), 1 / (1 + math.exp(1.0))
    torch.testing.assert_close(w, torch.tensor([[e0, 1 - e0], [e1, 1 - e1]]), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="batches of 2"):
        net([t1[:1], t2[:1]], s[:1])


def test_hard_buffer_fills_then_keeps_only_misclassified_samples():
    torch.manual_seed(0)
    buf = HardBuffer(batch_size=2, buffer_size=4)
    right = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # predicts the labels below
    buf.observe(torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1]), right)
    assert not buf.full and len(buf) == 2
    buf.observe(torch.tensor([[3.0], [4.0]]), torch.tensor([0, 1]), right)  # stored whole, even if right
    assert buf.full and buf.data.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    buf.observe(torch.tensor([[7.0], [8.0]]), torch.tensor([0, 1]), right)  # all right: nothing replaced
    assert buf.data.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    # one wrong sample (9, label 1, predicted 0): exactly one slot becomes 9 with label 1, the rest unchanged
    buf.observe(torch.tensor([[9.0], [10.0]]), torch.tensor([1, 1]), torch.tensor([[5.0, 0.0], [0.0, 5.0]]))
    data, label = buf.data.flatten().tolist(), buf.label.tolist()
    slot = data.index(9.0)
    assert data.count(9.0) == 1 and label[slot] == 1 and len(data) == 4
    assert [d for i, d in enumerate(data) if i != slot] == [d for i, d in enumerate([1.0, 2.0, 3.0, 4.0]) if i != slot]
    x, y = buf.sample()
    assert x.shape == (2, 1) and len(set(x.flatten().tolist())) == 2  # distinct rows
    assert all(d in data for d in x.flatten().tolist())


class _FixedTeachers:
    """A TeacherPool stand-in: fixed outputs for one batch."""

    def __init__(self, outs):
        self.outs = outs

    def __call__(self, x):
        return self.outs


def _meta_problem(seed=0, b=6, k=3, d=5):
    torch.manual_seed(seed)
    student = as_feature_classifier(MLP(in_features=d, num_classes=k, hidden=[4]))
    model = StudentWithAdaptors(student, build_adaptors(4, [(3, 1, 1), (2, 1, 1)]))
    x = torch.randn(b, d)
    y = torch.randint(0, k, (b,))
    outs = [ClassifierOutput(3 * torch.randn(b, k), torch.randn(b, c, 1, 1), torch.randn(b, c)) for c in (3, 2)]
    strat = MMKD(meta_lr=1e-3)
    strat.batch_size = b
    strat.setup(2, [3, 2], k, torch.device("cpu"))
    return model, x, y, outs, strat


def test_meta_gradient_equals_unrolled_differentiation_through_the_lookahead_and_rolls_back():
    model, x, y, outs, strat = _meta_problem()
    cfg = DistillConfig(temperature=4.0, feat_weight=5.0, kd_weight=1.0)
    lr, mom, wd = 0.1, 0.9, 5e-4
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mom, weight_decay=wd, nesterov=False)
    model.train()
    for _ in range(2):  # momentum buffers that are not zero, for the adaptors too
        opt.zero_grad()
        logits, _, adapted = model(x)
        (F.cross_entropy(logits, y) + sum(a.square().mean() for a in adapted)).backward()
        opt.step()
    names = [n for n, _ in model.named_parameters()]
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    buf0 = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    phi = strat.meta_parameters()

    # independent computation: differentiate through torch's SGD update written out
    # (d = g + wd*theta, v = mom*v + d, theta -= lr*v), two matching steps then one CE step
    T = 4.0

    def matching(params):
        logits, fmap, adapted = functional_call(model, (params, {k: v.clone() for k, v in buffers.items()}), (x,))
        log_ps = F.log_softmax(logits / T, dim=1)
        kd = torch.stack([(F.softmax(o.logits / T, 1) * (F.log_softmax(o.logits / T, 1) - log_ps)).sum(1) * T * T
                          for o in outs], dim=1)
        feat = torch.stack([((a - o.feature_map) ** 2).flatten(1).mean(1) for a, o in zip(adapted, outs)], dim=1)
        w_l = strat.logit_net([o.logits for o in outs], logits.detach())
        w_f = strat.feat_net([o.feature_map for o in outs], fmap.detach())
        return (w_l * kd).sum(1).mean() + 5.0 * (w_f * feat).sum(1).mean()

    def outer(params):
        return F.cross_entropy(functional_call(model, (params, {k: v.clone() for k, v in buffers.items()}),
                                               (x,))[0], y)

    theta = {n: t.clone().requires_grad_(True) for n, t in theta0.items()}
    vel = dict(buf0)
    for objective in (matching, matching, outer):
        grads = torch.autograd.grad(objective(theta), [theta[n] for n in names], create_graph=True, allow_unused=True)
        new = {}
        for n, g in zip(names, grads):  # the CE step does not use the adaptors: zero gradient, still wd + momentum
            vel[n] = mom * vel[n] + (0.0 if g is None else g) + wd * theta[n]
            new[n] = theta[n] - lr * vel[n]
        theta = new
    expected = torch.autograd.grad(outer(theta), phi)

    strat.meta_step(model, opt, _FixedTeachers(outs), cfg, x, y)
    got = [p.grad for p in phi]
    scale = max(float(g.abs().max()) for g in expected)
    assert scale > 1e-4  # the weights really influence the outer loss through the look-ahead
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * scale)
    # rollback: student, adaptors and momentum are where they were before the meta step
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), theta0[n]), n
        assert torch.equal(opt.state[p]["momentum_buffer"], buf0[n]), n
    assert strat.meta_updates == 1


def test_meta_gradient_shifts_logit_weight_to_the_teacher_that_lowers_the_outer_loss():
    """Teacher 0's logits are the labels, teacher 1's the next class: following teacher 1 in the look-ahead raises the
    student's CE, so the meta-gradient on the weight network's output bias must favour teacher 0 (every seed)."""
    for seed in range(3):
        model, x, y, outs, strat = _meta_problem(seed, b=8)
        outs = [ClassifierOutput(6 * F.one_hot((y + s) % 3, 3).float(), o.feature_map, o.embedding)
                for s, o in zip((0, 1), outs)]
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model.train()
        bias0 = strat.logit_net.all_act.bias.detach().clone()
        strat.meta_step(model, opt, _FixedTeachers(outs), DistillConfig(feat_weight=0.0), x, y)
        g = strat.logit_net.all_act.bias.grad
        assert float(g[0]) < -0.01 and float(g[0] + g[1]) == pytest.approx(0.0, abs=1e-6), (seed, g.tolist())
        step = strat.logit_net.all_act.bias.detach() - bias0  # Adam's first step: lr * sign(g) (plus decay)
        torch.testing.assert_close(step, torch.tensor([1e-3, -1e-3]), rtol=0.01, atol=2e-6)


def _loader(n, b=4, k=3, d=6):
    torch.manual_seed(0)
    y = torch.randint(0, k, (n,))
    x = torch.randn(n, d) + 2 * F.one_hot(y, d).float()
    return DataLoader(TensorDataset(x, y), batch_size=b, shuffle=True)


@pytest.mark.parametrize("n, expected", [(24, 4), (22, 3)])
def test_meta_steps_every_meta_freq_batches_and_at_the_last_full_one(n, expected):
    # 24 samples in batches of 4: idx 0, 2, 4 and the last (5); 22: the last batch has 2 samples and is skipped
    # (official `continue`), so only 0, 2, 4
    teachers = [MLP(in_features=6, num_classes=3, hidden=[5]).eval() for _ in range(2)]
    strat = MMKD(meta_freq=2, buffer_size=8)
    torch.manual_seed(0)
    d = MultiTeacherDistiller(MLP(in_features=6, num_classes=3, hidden=[4]), teachers, strat,
                              DistillConfig(epochs=2, milestones=[]))
    hist = d.fit(_loader(n), progress=False)
    assert [e["meta_updates"] for e in hist["epochs"]] == [expected, 2 * expected]
    assert len(strat.buffer) == 8 and strat.buffer.full
    for e in hist["epochs"]:
        assert sum(e["logit_weights"]) == pytest.approx(1.0, abs=1e-5)  # softmax over teachers, no 1/M


def test_mmkd_resume_reproduces_an_uninterrupted_run(tmp_path):
    loader = _loader(32, b=8)
    teachers = [MLP(in_features=6, num_classes=3, hidden=[5]).eval() for _ in range(2)]

    def make():
        torch.manual_seed(0)
        return MultiTeacherDistiller(MLP(in_features=6, num_classes=3, hidden=[4]), teachers,
                                     create_strategy("mmkd", meta_freq=2, buffer_size=16),
                                     DistillConfig(epochs=3, milestones=[2]))

    full = make()
    full.fit(loader, run_dir=tmp_path / "full", progress=False)
    cut = make()
    cut.config.epochs = 2  # stop after two epochs, then resume to three with force (only `epochs` differs)
    cut.fit(loader, run_dir=tmp_path / "cut", progress=False)
    resumed = make()
    resumed.fit(loader, run_dir=tmp_path / "cut", resume=True, force=True, progress=False)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    for net in ("logit_net", "feat_net"):
        for (k, a), (_, b) in zip(getattr(full.strategy, net).state_dict().items(),
                                  getattr(resumed.strategy, net).state_dict().items()):
            assert torch.equal(a, b), (net, k)
    assert torch.equal(full.strategy.buffer.data, resumed.strategy.buffer.data)

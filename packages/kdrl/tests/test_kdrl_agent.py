"""MTKD-RL agent: valid weight distributions, response to the state, and the update direction."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdrl import MTKDRL, DistillConfig, MultiTeacherDistiller, TeacherWeightingAgent, create_strategy, list_strategies
from kdrl.features import ClassifierOutput
from kdrl.models import MLP
from kdrl.strategies.mtkd_rl import standardized_reward

K = 4


def _state(b=16, m=3, d=5):
    torch.manual_seed(0)
    infos = torch.randn(b, m * (d + K + 3))
    return infos, torch.rand(b, m) * 3, torch.rand(b, m), torch.rand(b, m) * 2 - 1


@pytest.mark.parametrize("dynamic", [False, True])
def test_weights_form_a_distribution_and_depend_on_state(dynamic):
    state = _state()
    agent = TeacherWeightingAgent(state[0].shape[1], 3, hidden=16, dynamic=dynamic)
    w_l, w_f = agent(state)
    for w in (w_l, w_f):
        assert w.shape == (16, 3)
        assert bool((w >= 0).all())
        assert torch.allclose(w.sum(1), torch.ones(16), atol=1e-6)
    # different states give different weights (per-sample, state-dependent policy)
    assert not torch.allclose(w_l[0], w_l[1])
    # the gap term: raising one teacher's KL raises its logit weight, all else equal
    infos, ce, kl, cos = state
    kl2 = kl.clone()
    kl2[:, 0] += 2.0
    w_l2, _ = agent((infos, ce, kl2, cos))
    assert bool((w_l2[:, 0] > w_l[:, 0]).all())
    # the confidence term: raising one teacher's CE lowers its weights
    ce2 = ce.clone()
    ce2[:, 1] += 3.0
    w_l3, w_f3 = agent((infos, ce2, kl, cos))
    assert bool((w_l3[:, 1] < w_l[:, 1]).all()) and bool((w_f3[:, 1] < w_f[:, 1]).all())


def test_reward_is_standardised_and_clamped():
    loss = torch.tensor([1.0, 2.0, 3.0, 10.0])
    r = standardized_reward(loss)
    raw = -loss
    z = (raw - raw.mean()) / raw.std()
    assert r.tolist() == pytest.approx(z.clamp(0, 1).tolist())
    assert r[-1] == 0 and r[0] > 0 and float(r.max()) <= 1.0
    assert standardized_reward(torch.ones(5)).tolist() == [0.0] * 5  # no spread: no signal, not NaN


def test_update_moves_policy_toward_rewarded_actions():
    torch.manual_seed(1)
    agent = TeacherWeightingAgent(12, 3, hidden=16)
    good = torch.randn(1, 12).repeat(32, 1) + 0.05 * torch.randn(32, 12)
    bad = -good
    state_of = lambda x: (x, torch.zeros(32, 3), torch.zeros(32, 3), torch.zeros(32, 3))  # noqa: E731
    rewards_good, rewards_bad = torch.ones(32), torch.zeros(32)

    def surrogate(x, r):
        with torch.no_grad():
            w_l, w_f = agent(state_of(x))
        return float((r[:, None] * (w_l.log() + w_f.log())).mean())

    before_good, before_bad = surrogate(good, rewards_good), surrogate(bad, torch.ones(32))
    strat = MTKDRL(hidden=16, lr=0.5)
    strat.agent, strat.device = agent, torch.device("cpu")
    strat.optimizer = torch.optim.SGD(agent.parameters(), lr=0.5)
    for _ in range(5):
        strat._buffer = [(state_of(good), rewards_good), (state_of(bad), rewards_bad)]
        strat.train_agent()
    after_good, after_bad = surrogate(good, rewards_good), surrogate(bad, torch.ones(32))
    # the reward-weighted log-likelihood (REINFORCE surrogate) of the rewarded samples went up ...
    assert after_good > before_good + 1e-3
    # ... more than for the unrewarded ones (their loss term had weight 0)
    assert after_good - before_good > after_bad - before_bad


def test_one_replay_step_is_the_official_sgd_step():
    # train_loops.py::train_agent: loss = BCE(pred[0], 1, weight=r) + BCE(pred[1], 1, weight=r); SGD(lr=0.1).step()
    import copy

    torch.manual_seed(3)
    agent = TeacherWeightingAgent(12, 3, hidden=16, dynamic=True)
    reference = copy.deepcopy(agent)
    state = (torch.randn(8, 12), torch.rand(8, 3) * 2, torch.rand(8, 3), torch.rand(8, 3) * 2 - 1)
    reward = standardized_reward(torch.rand(8) * 4)
    strat = MTKDRL(hidden=16, lr=0.1)
    strat.agent, strat.device = agent, torch.device("cpu")
    strat.optimizer = torch.optim.SGD(agent.parameters(), lr=0.1)
    strat._buffer = [(state, reward)]
    strat.train_agent()
    pred = reference(state)
    ones = torch.ones_like(pred[0])
    loss = (F.binary_cross_entropy(pred[0], ones, weight=reward.unsqueeze(-1))
            + F.binary_cross_entropy(pred[1], ones, weight=reward.unsqueeze(-1)))
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    moved = 0.0
    for (name, p_new), p_old, g in zip(agent.named_parameters(), reference.parameters(), grads):
        torch.testing.assert_close(p_new.detach(), p_old.detach() - 0.1 * g, rtol=1e-5, atol=1e-7, msg=name)
        moved += float((p_new - p_old).detach().abs().sum())
    assert moved > 1e-4  # the step is not empty (rewards are not all zero)


class _Oracle(nn.Module):
    """Teacher that reads the class from the first K inputs and predicts class + shift (shift 1: always wrong)."""

    def __init__(self, shift: int, scale: float = 6.0):
        super().__init__()
        self.shift, self.scale = shift, scale
        self.proj = nn.Linear(K, 8)
        self.head = nn.Linear(8, K)

    def forward_with_features(self, x):
        c = (x[:, :K].argmax(1) + self.shift) % K
        onehot = F.one_hot(c, K).float()
        emb = torch.relu(self.proj(onehot))
        return ClassifierOutput(self.scale * onehot, emb[:, :, None, None], emb)

    def forward_head(self, fmap):  # a classifier on the 8-d embedding (CA-MKD reads adapted student features)
        return self.head(fmap.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_with_features(x).logits


def _oracle_problem(seed=0):
    torch.manual_seed(seed)
    y = torch.randint(0, K, (384,))
    x = 0.5 * torch.randn(384, 16)
    x[:, :K] += 2.0 * F.one_hot(y, K)
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)


def test_always_wrong_teacher_ends_with_lower_agent_weight():
    loader = _oracle_problem()
    teachers = [_Oracle(0), _Oracle(0), _Oracle(1)]
    strat = MTKDRL(hidden=32)
    d = MultiTeacherDistiller(MLP(in_features=16, num_classes=K, hidden=[32]), teachers, strat,
                              DistillConfig(epochs=6, milestones=[]))
    hist = d.fit(loader, progress=False)
    heads = hist["agent_head_logit"]  # per epoch: mean agent-head logit-KD weight per teacher
    assert len(heads) == 6
    first, last = heads[0], heads[-1]
    assert last[2] < first[2]  # the agent learned to lower the wrong teacher ...
    assert last[2] < min(last[0], last[1])  # ... below both correct teachers
    # fused weights still sum to 1 per sample after warm-up (epoch 0 uses all ones, as the official code)
    assert hist["epochs"][0]["logit_weights"] == pytest.approx([1.0, 1.0, 1.0])
    assert sum(hist["epochs"][-1]["logit_weights"]) == pytest.approx(1.0, abs=1e-5)
    # the student learns the task from the pool despite the wrong teacher
    assert d.evaluate(loader)["top1"] > 90.0


def test_camkd_gives_always_wrong_teacher_lower_weight():
    loader = _oracle_problem(1)
    d = MultiTeacherDistiller(MLP(in_features=16, num_classes=K, hidden=[32]), [_Oracle(0), _Oracle(1)],
                              create_strategy("camkd"), DistillConfig(epochs=1, milestones=[]))
    hist = d.fit(loader, progress=False)
    w = hist["epochs"][-1]["logit_weights"]
    # official scale (1 - softmax(CE)) / ((M - 1) M): the correct teacher gets ~1/M, the wrong one ~0
    assert w[1] < 0.05 / 2 < 0.95 / 2 < w[0] <= 0.5


def test_dynamic_mix_moves_from_gap_to_confidence_with_a_wrong_teacher():
    loader = _oracle_problem(2)
    torch.manual_seed(2)
    d = MultiTeacherDistiller(MLP(in_features=16, num_classes=K, hidden=[32]), [_Oracle(0), _Oracle(0), _Oracle(1)],
                              MTKDRL(hidden=32, dynamic=True), DistillConfig(epochs=5, milestones=[], seed=2))
    eps = d.fit(loader, progress=False)["epochs"]
    conf = [e["mix_conf"] for e in eps]
    gap = [e["mix_gap"] for e in eps]
    assert all(abs(e["mix_agent"] + e["mix_conf"] + e["mix_gap"] - 1) < 1e-5 for e in eps)
    # the learned convex mix trusts the confidence term more and the divergence term less over training
    assert conf[-1] > conf[0] > 1 / 3 - 1e-3 and gap[-1] < gap[0]
    head = d.strategy.head_history
    assert head[-1][2] < min(head[-1][0], head[-1][1])


def _oracle_entropy_and_ce(scale: float, correct: bool) -> tuple[float, float]:
    """Entropy at T = 1 and CE of an oracle teacher with logits ``scale * onehot`` over K classes."""
    z = math.exp(scale) + (K - 1)
    probs = [math.exp(scale) / z] + [1 / z] * (K - 1)
    h = -sum(p * math.log(p) for p in probs)
    return h, (-math.log(probs[0]) if correct else math.log(z))


def test_every_strategy_weights_a_confident_right_and_a_vaguer_wrong_teacher_by_its_rule():
    """Teacher 0 is right and confident (logit 6 on the label), teacher 1 always wrong and vaguer (logit 2 on the
    next class): every per-sample quantity is the same for every sample, so each rule's weights are known exactly."""
    loader = _oracle_problem(3)
    h_r, ce_r = _oracle_entropy_and_ce(6.0, True)
    h_w, ce_w = _oracle_entropy_and_ce(2.0, False)
    ebkd = [(1 - h_r / (h_r + h_w)) / 2, (1 - h_w / (h_r + h_w)) / 2]
    p_r = math.exp(ce_r) / (math.exp(ce_r) + math.exp(ce_w))
    camkd = [(1 - p_r) / 2, p_r / 2]
    seen = {}
    for name in list_strategies():
        torch.manual_seed(0)
        d = MultiTeacherDistiller(MLP(in_features=16, num_classes=K, hidden=[16]), [_Oracle(0), _Oracle(1, 2.0)],
                                  create_strategy(name), DistillConfig(epochs=2, milestones=[]))
        seen[name] = [e["logit_weights"] for e in d.fit(loader, progress=False)["epochs"]]
    assert seen["student"][-1] == [0.0, 0.0]
    assert seen["aver"][-1] == pytest.approx([0.5, 0.5], abs=1e-6)
    assert seen["aver_warmup"] == [pytest.approx([1.0, 1.0]), pytest.approx([0.5, 0.5])]
    assert seen["ebkd"][-1] == pytest.approx(ebkd, abs=1e-5)
    assert seen["camkd"][-1] == pytest.approx(camkd, abs=1e-5)
    assert camkd[1] < 0.1 * camkd[0] and ebkd[0] > 2 * ebkd[1]  # both rules really separate the two teachers
    assert max(seen["aekd"][-1]) <= 0.6 + 1e-6 and sum(seen["aekd"][-1]) == pytest.approx(1.0, abs=1e-5)
    for name in ("mtkd_rl", "mtkd_rl_dynamic"):  # warm-up: all ones; then fused distributions
        assert seen[name][0] == pytest.approx([1.0, 1.0]) and sum(seen[name][1]) == pytest.approx(1.0, abs=1e-5)
    assert all(sum(w) == pytest.approx(1.0, abs=1e-5) for w in seen["mmkd"])  # softmax over teachers from epoch 0

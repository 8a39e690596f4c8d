"""CLS-ER: learns two tasks with its stable model; EMA models update at their rates with the official decay."""

import numpy as np
import pytest
import torch

from clfreq import CLSER, create_method, split_digits, train_continual
from clfreq.rehearsal import BEST_ARGS, QUICK_ARGS


def test_clser_learns_two_tasks_above_chance():
    bench = split_digits()
    bench.train, bench.test = [(x[:300], y[:300]) for x, y in bench.train[:2]], bench.test[:2]
    m = create_method("cls-er", nf=8, buffer_size=50, **QUICK_ARGS[("split-digits", 50)]["cls-er"])
    r = train_continual(m, bench, epochs=3, seed=0)
    final = r["cil_matrix"][1]
    assert final[0] > 0.4 and final[1] > 0.4, final  # Class-IL of the stable model; chance over 4 classes = 0.25
    assert min(r["til_matrix"][1]) > 0.7  # chance within a task = 0.5
    # the stable model is what is evaluated, and it differs from the working model
    diff = sum(float((a - b.detach()).abs().sum()) for a, b in zip(m.stable.parameters(), m.net.parameters()))
    assert diff > 0 and m.eval_net is m.stable


def _setup(**kw):
    m = CLSER(nf=2, buffer_size=4, **kw)
    return m.setup(num_classes=4, in_channels=3, classes_per_task=2, epochs=1, device=torch.device("cpu"), seed=0)


def test_ema_updates_follow_their_rates():
    m = _setup(stable_freq=0.1, plastic_freq=0.5)
    n = 3000
    for _ in range(n):
        m.after_step()
    for which, r in (("stable", 0.1), ("plastic", 0.5)):
        k = m.ema_updates[which]
        assert abs(k - n * r) < 4 * np.sqrt(n * r * (1 - r)), (which, k)  # binomial, 4 sigma
    never = _setup(stable_freq=0.0, plastic_freq=1.0)
    before = [p.clone() for p in never.stable.parameters()]
    with torch.no_grad():
        for p in never.net.parameters():
            p.add_(1.0)
    for _ in range(5):
        never.after_step()
    assert never.ema_updates == {"plastic": 5, "stable": 0}
    assert all(torch.equal(a, b) for a, b in zip(before, never.stable.parameters()))


@pytest.mark.parametrize("step,expected", [(3, 0.75), (100_000, 0.999)])
def test_ema_update_formula(step, expected):
    m = _setup(stable_alpha=0.999)
    with torch.no_grad():
        for p in m.net.parameters():
            p.normal_()
    old = [p.clone() for p in m.stable.parameters()]
    m.ema_step = step
    a = m.update_ema("stable")  # decay min(1 - 1/(step + 1), alpha): a warm-up, then the official 0.999
    assert a == pytest.approx(expected)
    for e, o, p in zip(m.stable.parameters(), old, m.net.parameters()):
        torch.testing.assert_close(e, expected * o + (1 - expected) * p)


def test_clser_best_args_and_errors():
    assert BEST_ARGS[("split-cifar10", 50)]["cls-er"] == {"lr": 0.1, "reg_weight": 0.15, "stable_freq": 0.1,
                                                          "plastic_freq": 0.5}
    with pytest.raises(ValueError, match="stable_freq"):
        CLSER(stable_freq=1.5)
    with pytest.raises(ValueError, match="plastic_alpha"):
        CLSER(plastic_alpha=1.0)
    assert create_method("cls-er", plugin="clfd").label == "clfd-cls-er"

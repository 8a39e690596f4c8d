"""KD losses and fixed weighting rules against hand-computed values."""

import math

import pytest
import torch

from kdrl.losses import cosine_per_sample, feature_mse_per_sample, kd_kl, kd_kl_per_sample, teacher_cross_entropy
from kdrl.strategies.simple import confidence_weights


def test_kd_kl_matches_hand_computation():
    T = 2.0
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])  # softmax(z/T) = [3/4, 1/4]
    student = torch.tensor([[0.0, 0.0]])  # [1/2, 1/2]
    expected = T * T * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert kd_kl_per_sample(student, teacher, T).item() == pytest.approx(expected, rel=1e-6)
    # identical distributions: zero; batch mean of two samples
    both_s = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    both_t = torch.tensor([[2 * math.log(3.0), 0.0], [1.0, 2.0]])
    per = kd_kl_per_sample(both_s, both_t, T)
    assert per[1].item() == pytest.approx(0.0, abs=1e-7)
    assert kd_kl(both_s, both_t, T).item() == pytest.approx(expected / 2, rel=1e-6)


def test_kd_kl_equals_torch_kl_div_times_t_squared():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    T = 4.0
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.softmax(t / T, 1), reduction="batchmean")
    ref = ref * T * T
    assert kd_kl(s, t, T).item() == pytest.approx(ref.item(), rel=1e-5)


def test_feature_mse_cosine_and_teacher_ce_by_hand():
    s = torch.zeros(2, 1, 2, 2)
    t = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    assert feature_mse_per_sample(s, t).tolist() == pytest.approx([1.0, 1.0])
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert cosine_per_sample(a, b).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert teacher_cross_entropy(logits, torch.tensor([0, 0])).tolist() == pytest.approx([math.log(2), math.log(4 / 3)])


def test_confidence_weights_by_hand():
    ce = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4] -> (1 - p) / (M - 1) = [3/4, 1/4]
    assert confidence_weights(ce).tolist()[0] == pytest.approx([0.75, 0.25])
    three = confidence_weights(torch.rand(4, 3) * 5)
    assert torch.allclose(three.sum(1), torch.ones(4))


@pytest.mark.parametrize("bad", [
    lambda: kd_kl_per_sample(torch.zeros(2, 3), torch.zeros(2, 4)),
    lambda: kd_kl_per_sample(torch.zeros(3), torch.zeros(3)),
    lambda: kd_kl_per_sample(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0),
    lambda: feature_mse_per_sample(torch.zeros(2, 3, 2, 2), torch.zeros(2, 4, 2, 2)),
])
def test_loss_bad_inputs_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()

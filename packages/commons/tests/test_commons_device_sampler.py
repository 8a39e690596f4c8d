"""The shuffled-loader sampler TrainingBackend.prepare installs under several processes follows the global RNG."""

import torch
from torch.utils.data import RandomSampler

from commons.device import _GlobalRNGRandomSampler


def test_each_pass_is_the_order_an_unseeded_sampler_draws_in_one_process():
    data = list(range(50))
    plain, ours = RandomSampler(data), _GlobalRNGRandomSampler(RandomSampler(data))
    for epoch in range(3):  # a loop that reseeds torch per epoch (resumable runs) controls both the same way
        torch.manual_seed(100 + epoch)
        a = list(plain)
        torch.manual_seed(100 + epoch)
        b = list(ours)
        assert a == b and sorted(b) == data
    # a resumed run (a fresh loader) that reseeds for epoch 1 gets epoch 1's order, not a first pass's
    torch.manual_seed(101)
    expected = list(plain)
    torch.manual_seed(101)
    assert list(_GlobalRNGRandomSampler(RandomSampler(data))) == expected

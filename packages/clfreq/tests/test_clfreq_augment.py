"""Train augmentation: crop windows and padding fill, flips, seeding, buffer keeps non-augmented inputs, CLFD map
transform fill, benchmark defaults."""

import pytest
import torch

from clfreq import CLFD, ER, Benchmark, create_method, split_digits, train_continual
from clfreq.rehearsal import Augment, random_crop_flip


def test_crop_is_a_window_of_the_padded_image():
    x = torch.randn(64, 3, 6, 5)
    fill = torch.tensor([-1.0, 7.0, 3.0])
    out = random_crop_flip(x, 2, False, fill, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = fill.view(1, 3, 1, 1).expand(64, 3, 10, 9).clone()
    padded[:, :, 2:8, 2:7] = x
    offsets = set()
    for i in range(64):  # every output equals exactly one 6x5 window of its padded input
        hits = [(a, b) for a in range(5) for b in range(5) if torch.equal(out[i], padded[i, :, a:a + 6, b:b + 5])]
        assert len(hits) == 1, i
        offsets.add(hits[0])
    assert len(offsets) > 10  # offsets vary per sample
    assert torch.equal(random_crop_flip(x, 0, False), x)  # no padding, no flip: identity


def test_flip_half_the_time_and_seeded():
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(2000, 1, 1, 1)
    out = random_crop_flip(x, 0, True, generator=torch.Generator().manual_seed(1))
    flipped = (out[:, 0, 0] == torch.tensor([3.0, 2.0, 1.0, 0.0])).all(1)
    kept = (out[:, 0, 0] == x[0, 0, 0]).all(1)
    assert bool((flipped | kept).all()) and 900 < int(flipped.sum()) < 1100
    a, b = Augment(2, True, seed=5), Augment(2, True, seed=5)
    y = torch.randn(8, 3, 8, 8)
    assert torch.equal(a(y), b(y)) and not torch.equal(a(y), b(torch.randn(1) + y))
    s = a.state_dict()
    first = a(y)
    a.load_state_dict(s)
    assert torch.equal(a(y), first)  # resumed runs repeat the same draws
    with pytest.raises(ValueError, match="fill"):
        random_crop_flip(y, 1, False, torch.zeros(2))
    with pytest.raises(ValueError, match="padding"):
        Augment(-1)


def _bench(n=40):
    b = split_digits(image_size=8)
    b.train, b.test = [(x[:n], y[:n]) for x, y in b.train[:2]], b.test[:2]
    return b


def test_buffer_keeps_non_augmented_inputs_and_replay_is_augmented():
    bench = _bench()
    m = ER(lr=0.05, buffer_size=16, nf=4)
    calls = []
    r = train_continual(m, bench, epochs=1, seed=0, augment={"padding": 2, "flip": True})
    assert r["augment"] == "Augment(padding=2, flip=True)"
    train = torch.cat([x for x, _ in bench.train])
    for ex in m.buffer.data["examples"]:  # each stored example is an exact training image
        assert (train == ex).flatten(1).all(1).any()
    m.replay_input = lambda ex: calls.append(ex) or ex  # replay goes through the transform
    m.loss(m.net.classify(train[:4], None), torch.zeros(4, dtype=torch.long))
    assert calls and calls[0].shape[1:] == train.shape[1:]
    off = train_continual(ER(nf=4, buffer_size=4), bench, epochs=1, seed=0)
    assert off["augment"] is None  # Split Digits: off by default


def test_clfd_replay_fill_is_the_encoded_black_image():
    bench = _bench()
    bench.mean, bench.std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    m = CLFD(ER(lr=0.05, buffer_size=4, nf=4))
    train_continual(m, bench, epochs=1, seed=0, augment={"padding": 4, "flip": False})
    aug = m.clfd_state["map_aug"]
    assert aug.padding == 2  # half the image padding on half-resolution maps
    black = (-torch.tensor(bench.mean) / torch.tensor(bench.std)).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    with torch.no_grad():
        fill_map = m.net.encoder(black)[0][0]  # constant per channel
    assert torch.allclose(fill_map, fill_map[:, :1, :1].expand_as(fill_map))
    ex = torch.full((50, 3, 4, 4), 123.0)
    out = m.replay_input(ex)
    pad = out != 123.0  # the padded border carries exactly the fill values
    assert pad.any()
    for c in range(3):
        assert torch.allclose(out[:, c][pad[:, c]], fill_map[c, 0, 0].expand(int(pad[:, c].sum())))


def test_benchmark_defaults():
    b = split_digits(image_size=8)
    assert b.augment is None
    cifar_like = Benchmark("x", [], [], 2, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2615),
                           augment={"padding": 4, "flip": True})
    torch.testing.assert_close(cifar_like.black, -torch.tensor(cifar_like.mean) / torch.tensor(cifar_like.std))
    with pytest.raises(ValueError, match="keys"):
        train_continual(create_method("er", nf=2), _bench(), epochs=1, augment={"crop": 4})

"""DualPrompt and CODA-Prompt against their official formulas (google-research/l2p, GT-RIPL/CODA-Prompt)."""

import math

import pytest
import torch
import torch.nn.functional as F

from clfreq.prompt import CODAPrompt, CODAPromptConfig, DualPrompt, DualPromptConfig, run_stream
from clfreq.prompt.dual_coda import coda_cosine_lr, gram_schmidt_block
from clfreq.prompt.vit import create_vit


def tiny_vit(depth=5):
    torch.manual_seed(0)
    return create_vit("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=depth, num_heads=2)


def _blobs(n_tasks=2, per_class=24, seed=0):
    """Two classes per task that differ in mean colour and texture (as test_clfreq_prompt's blobs)."""
    from clfreq.prompt import TaskData

    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for t in range(n_tasks):
        classes = (2 * t, 2 * t + 1)
        for split_n, out in ((per_class, train), (per_class // 2, test)):
            xs, ys = [], []
            for c in classes:
                base = torch.zeros(3, 16, 16)
                base[c % 3] = 0.8 if c % 2 else -0.8
                base += 0.3 * torch.sin(torch.arange(16.0) * (c + 1) / 2)
                xs.append(base + 0.3 * torch.randn(split_n, 3, 16, 16, generator=g))
                ys.append(torch.full((split_n,), c))
            out.append(TaskData(t, classes, torch.cat(xs), torch.cat(ys)))
    return train, test


def test_dualprompt_layout_training_prompt_and_top1_selection():
    model = DualPrompt(tiny_vit(), num_classes=4, num_tasks=2)
    assert model.vit.prefix_layers == [0, 1, 2, 3, 4] and model.g_slots == [0, 1] and model.e_slots == [2, 3, 4]
    assert model.e_prompt.shape == (3, 2, 2, 5, 2, 16) and model.g_prompt.shape == (2, 2, 5, 2, 16)
    q = torch.randn(3, 32)
    prefix, pull = model._prefix(q, task=1)  # training: the task's own E-prompt for every sample
    assert torch.equal(prefix[2:, :, 0], model.e_prompt[:, :, 1]) and torch.equal(prefix[:2, :, 2], model.g_prompt)
    cos = F.cosine_similarity(q, model.e_keys[1][None], dim=1)
    assert float(pull) == pytest.approx(float(cos.mean()), rel=1e-5)
    with torch.no_grad():  # inference: the key nearest in cosine similarity, per sample
        model.e_keys[0], model.e_keys[1] = q[0], -q[0]
    prefix, _ = model._prefix(torch.stack([q[0], -q[0]]), task=None)
    assert torch.equal(prefix[2:, :, 0], model.e_prompt[:, :, 0]) and torch.equal(prefix[2:, :, 1],
                                                                                  model.e_prompt[:, :, 1])


def test_dualprompt_new_e_prompt_starts_from_the_previous_one_and_learns():
    train, test = _blobs()
    model = DualPrompt(tiny_vit(), 4, 2, DualPromptConfig(epochs=6, batch_size=8, lr=0.5))
    result = run_stream(model, train, test)
    assert result.final_accuracy > 0.5  # chance 0.25
    fresh = DualPrompt(tiny_vit(), 4, 2, DualPromptConfig(epochs=1, batch_size=8, lr=1e-12))
    fresh.fit_task(train[0])
    fresh.fit_task(train[1])
    torch.testing.assert_close(fresh.e_prompt[:, :, 1], fresh.e_prompt[:, :, 0], atol=1e-6, rtol=0)


def test_gram_schmidt_block_is_orthonormal_and_keeps_earlier_rows():
    w = torch.zeros(6, 2, 5)
    g = torch.Generator().manual_seed(0)
    gram_schmidt_block(w, 0, 2, g)
    first = w[:2].clone()
    gram_schmidt_block(w, 2, 4, g)
    flat = w.reshape(6, -1)
    assert torch.equal(w[:2], first) and torch.equal(flat[4:], torch.zeros(2, 10))
    torch.testing.assert_close(flat[:4] @ flat[:4].T, torch.eye(4), atol=1e-5, rtol=0)


def test_coda_prompt_is_the_attended_sum_of_components_and_old_ones_are_frozen():
    model = CODAPrompt(tiny_vit(), num_classes=4, num_tasks=2, config=CODAPromptConfig(pool_size=4, prompt_length=4))
    assert model.per_task == 2 and model.p.shape == (5, 4, 4, 32)
    assert torch.equal(model.p[:, 2:], torch.zeros_like(model.p[:, 2:]))  # task 1's components come at its start
    model._new_components(1)
    q = torch.randn(3, 32)
    prefix, penalty = model._prefix(q, task=1)
    # by hand, block 0, sample 0: alpha_m = cos(q * a_m, k_m) over components 0..3, P = sum_m alpha_m p_m
    alpha = [float(F.cosine_similarity(q[0] * model.a[0, m], model.k[0, m], dim=0)) for m in range(4)]
    p = sum(alpha[m] * model.p[0, m] for m in range(4))
    torch.testing.assert_close(prefix[0, 0, 0].reshape(2, 32), p[:2], atol=1e-5, rtol=1e-5)  # keys: first L/2
    torch.testing.assert_close(prefix[0, 1, 0].reshape(2, 32), p[2:], atol=1e-5, rtol=1e-5)  # values: last L/2
    assert float(penalty) == 0.0
    prefix.sum().backward()  # training task 1: task 0's components get no gradient, task 1's do
    for param in (model.p, model.k, model.a):
        assert torch.count_nonzero(param.grad[:, :2]) == 0 and torch.count_nonzero(param.grad[:, 2:]) > 0


def test_coda_cosine_schedule_and_learning():
    assert coda_cosine_lr(1e-3, 0, 20) == pytest.approx(1e-3)
    assert coda_cosine_lr(1e-3, 19, 20) == pytest.approx(1e-3 * math.cos(99 * math.pi / 200))
    train, test = _blobs()
    cfg = CODAPromptConfig(pool_size=4, prompt_length=4, epochs=6, batch_size=8, lr=0.05)
    result = run_stream(CODAPrompt(tiny_vit(), 4, 2, cfg), train, test)
    assert result.final_accuracy > 0.5  # chance 0.25
    with pytest.raises(ValueError, match="divisible"):
        CODAPrompt(tiny_vit(), 4, 3, CODAPromptConfig(pool_size=4))
    with pytest.raises(ValueError, match="even"):
        CODAPromptConfig(prompt_length=5)

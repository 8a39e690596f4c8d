import numpy as np
import pytest
import torch

from vqcore.functional import (
    attention_token_weights,
    channel_kurtosis,
    diffusion_salience,
    frame_relation_kl,
    hessian_salience,
    omq_bit_allocation,
    select_salient,
    smoothquant_scales,
    sparsify_token_weights,
    spatial_relation_kl,
    tmd_loss,
    token_weighted_mse,
)


# -- TMD --
def test_frame_relation_is_zero_iff_inter_frame_structure_matches():
    torch.manual_seed(0)
    y = torch.randn(2, 4, 6, 3, 3)  # [b, c, t, h, w]
    assert frame_relation_kl(y, y).item() == pytest.approx(0.0, abs=1e-7)
    # scaling each frame by a positive factor keeps all cosine similarities: structure unchanged, MSE is not
    scaled = y * torch.rand(1, 1, 6, 1, 1).add(0.5)
    assert frame_relation_kl(scaled, y).item() == pytest.approx(0.0, abs=1e-6)
    assert tmd_loss(scaled, y).item() > 0.01
    # shuffling frames changes the structure
    shuffled = y[:, :, torch.tensor([1, 0, 3, 2, 5, 4])]
    assert frame_relation_kl(shuffled, y).item() > 1e-3


def test_per_frame_and_code_modes_differ_as_documented():
    torch.manual_seed(1)
    y = torch.randn(1, 8, 4, 2, 2)
    # frames scaled individually: the per-frame relation is unchanged, but the code's rows are channel chunks
    # that mix frames, so it sees a change
    scaled = y * torch.tensor([1.0, 3.0, 0.2, 5.0]).view(1, 1, 4, 1, 1)
    assert frame_relation_kl(scaled, y, mode="per_frame").item() < 1e-6
    assert frame_relation_kl(scaled, y, mode="code").item() > 1e-4
    # the code mode equals reshaping without permute
    q = torch.randn_like(y)
    fq = torch.nn.functional.normalize(q.reshape(1, 4, -1), dim=-1)
    ff = torch.nn.functional.normalize(y.reshape(1, 4, -1), dim=-1)
    p_fp = torch.softmax(ff @ ff.transpose(1, 2), -1)
    ref = (p_fp * (p_fp.log() - torch.log_softmax(fq @ fq.transpose(1, 2), -1))).mean()
    assert torch.allclose(frame_relation_kl(q, y, mode="code"), ref)
    with pytest.raises(ValueError, match="mode"):
        frame_relation_kl(q, y, mode="frames")


def test_tmd_gradient_flows_to_prediction():
    y = torch.randn(1, 2, 3, 2, 2)
    pred = torch.randn_like(y, requires_grad=True)
    tmd_loss(pred, y).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


# -- S²Q salient data selection --
def test_salience_scores_and_selection_find_the_constructed_salient_items():
    torch.manual_seed(0)
    n, tokens, ch = 12, 16, 8
    x_prev = torch.randn(n, tokens, ch)
    x_t = x_prev.clone()
    x_t[3] += 2.0 * torch.randn(tokens, ch)  # large change between steps
    x_t[7] += 2.0 * torch.randn(tokens, ch)
    x_t[7] *= 3.0  # and large Hessian norm
    x_t += 0.01 * torch.randn_like(x_t)
    d = diffusion_salience(x_t, x_prev)
    q = hessian_salience(x_t)
    assert int(d.argmax()) in (3, 7)
    assert int(q.argmax()) == 7
    idx, scores = select_salient(d, q, k=2)
    assert idx.tolist() == [7, 3]
    assert len(select_salient(d, q, k=5)[0]) == 5
    assert torch.equal(select_salient(d, q, k=5)[0], select_salient(d, q, k=5)[0])  # deterministic
    with pytest.raises(ValueError, match="k must be"):
        select_salient(d, q, k=13)


def test_hessian_salience_is_the_spectral_norm_of_the_gram_matrix():
    x = torch.randn(3, 5, 9)
    expected = torch.stack([torch.linalg.matrix_norm(xi.T @ xi, ord=2) for xi in x])
    assert torch.allclose(hessian_salience(x), expected, rtol=1e-4)
    assert torch.allclose(hessian_salience(x.transpose(1, 2)), expected, rtol=1e-4)


# -- S²Q token weights --
def test_tokens_with_more_attention_mass_get_higher_weights():
    logits = torch.zeros(1, 2, 5, 5)
    logits[..., 2] = 3.0  # every query attends to token 2
    logits[..., 4] = 1.0
    lam = attention_token_weights(logits.softmax(-1))
    assert int(lam.argmax()) == 2 and lam[0, 4] > lam[0, 0]
    assert lam.mean().item() == pytest.approx(1.0)


def test_uniform_attention_reduces_to_plain_mse():
    pred, target = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    lam = attention_token_weights(torch.full((2, 3, 6, 6), 1 / 6))
    assert torch.allclose(lam, torch.ones(2, 6))
    assert torch.allclose(token_weighted_mse(pred, target, lam), torch.nn.functional.mse_loss(pred, target))
    assert torch.allclose(token_weighted_mse(pred, target, None), torch.nn.functional.mse_loss(pred, target))


def test_sparsification_keeps_the_heavy_tokens():
    w = torch.tensor([[4.0, 0.5, 0.2, 3.0, 0.3]])
    sparse = sparsify_token_weights(w, keep=0.8)
    assert (sparse[0, [0, 3]] > 0).all() and (sparse[0, [1, 2, 4]] == 0).all()
    assert sparse.mean().item() == pytest.approx(1.0)
    assert torch.equal(sparsify_token_weights(w, keep=1.0), w)
    with pytest.raises(ValueError, match="keep"):
        sparsify_token_weights(w, keep=0.0)


# -- MPQ-DM --
def test_kurtosis_matches_scipy():
    from scipy.stats import kurtosis

    w = torch.randn(6, 3, 3, 3)
    w[2] = torch.distributions.StudentT(2.5).sample((27,)).view(3, 3, 3)
    flat = w.flatten(1).double().numpy()
    pearson = kurtosis(flat, axis=1, fisher=False, bias=True)
    np.testing.assert_allclose(channel_kurtosis(w, unbiased=False).numpy(), pearson, rtol=1e-5)
    n = flat.shape[1]
    np.testing.assert_allclose(channel_kurtosis(w).numpy(), pearson * ((n - 1) / n) ** 2, rtol=1e-5)


def test_omq_allocation_keeps_the_budget_and_favours_heavy_tails():
    torch.manual_seed(0)
    w = torch.randn(20, 64)
    heavy = [3, 11]
    for c in heavy:
        w[c] = torch.distributions.StudentT(1.5).sample((64,))
    bits = omq_bit_allocation(channel_kurtosis(w), n_bits=4, k=2)
    assert bits.float().mean().item() == 4.0
    assert set(bits[heavy].tolist()) == {5}
    assert (bits == 3).sum() == 2 and (bits == 5).sum() == 2
    assert omq_bit_allocation(channel_kurtosis(w), 4, 0).eq(4).all()
    with pytest.raises(ValueError, match="k must be"):
        omq_bit_allocation(channel_kurtosis(w), 4, 11)


def test_smoothquant_scales_balance_ranges():
    a = torch.tensor([100.0, 1.0, 4.0])
    wmax = torch.tensor([1.0, 1.0, 4.0])
    s = smoothquant_scales(a, wmax, alpha=0.5)
    assert torch.allclose(s, torch.sqrt(a / wmax))
    assert torch.allclose(a / s, wmax * s)  # alpha = 0.5 equalises the two ranges
    with pytest.raises(ValueError, match="alpha"):
        smoothquant_scales(a, wmax, alpha=2.0)


def test_spatial_relation_kl_zero_when_features_match_and_gives_gradients():
    fp = torch.randn(2, 8, 4, 4)
    assert spatial_relation_kl(fp, fp).item() == pytest.approx(0.0, abs=1e-5)
    q = fp + 0.5 * torch.randn_like(fp)
    q.requires_grad_(True)
    loss = spatial_relation_kl(q, fp)
    loss.backward()
    assert loss.item() > 0 and q.grad.abs().sum() > 0
    # channel-wise positive scaling per position keeps the normalised features: no loss
    assert spatial_relation_kl(fp * torch.rand(2, 1, 4, 4).add(0.5), fp).item() < 1e-4

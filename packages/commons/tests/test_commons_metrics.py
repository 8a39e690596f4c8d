import numpy as np
import pytest
import torch

from commons.metrics import AccuracyMatrix, RunningAverage, frechet_distance, psnr, ssim, topk_accuracy


def test_topk_accuracy_hand_computed():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    targets = torch.tensor([1, 2, 0, 1])
    top1, top2 = topk_accuracy(logits, targets, topk=(1, 2))
    assert top1 == pytest.approx(0.25)
    assert top2 == pytest.approx(0.5)
    assert topk_accuracy(logits, targets, topk=3) == 1.0
    with pytest.raises(ValueError, match="topk"):
        topk_accuracy(logits, targets, topk=4)
    with pytest.raises(ValueError, match="targets"):
        topk_accuracy(logits, targets[:2])


def test_psnr_matches_definition_and_skimage():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(0)
    a = rng.random((3, 20, 30))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    ours = psnr(torch.from_numpy(b), torch.from_numpy(a))
    assert ours == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
    assert ours == pytest.approx(10 * np.log10(1 / np.mean((a - b) ** 2)), abs=1e-9)
    assert psnr(torch.ones(4, 4), torch.ones(4, 4)) == float("inf")
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.ones(3, 4), torch.ones(4, 3))


@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.3])
def test_ssim_matches_skimage(sigma):
    from skimage.metrics import structural_similarity

    from commons.data import sample_photos

    img = sample_photos()["chelsea"][:96, :128].astype(np.float64) / 255
    rng = np.random.default_rng(1)
    noisy = np.clip(img + sigma * rng.standard_normal(img.shape), 0, 1)
    ref = structural_similarity(img, noisy, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    ours = ssim(torch.from_numpy(noisy).permute(2, 0, 1), torch.from_numpy(img).permute(2, 0, 1))
    assert abs(ours - ref) < 1e-3
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


def test_frechet_distance_matches_scipy_formula():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 8))
    b = rng.standard_normal((250, 8)) @ rng.standard_normal((8, 8)) * 0.5 + 1.0
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(a, torch.from_numpy(b)) == pytest.approx(ref, rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-8
    with pytest.raises(ValueError, match="feature dimension"):
        frechet_distance(a, b[:, :4])
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_accuracy_matrix_metrics_hand_computed():
    m = AccuracyMatrix(3)
    rows = [[0.9], [0.6, 0.8], [0.5, 0.7, 0.95]]
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            m.set(i, j, v)
    assert m.average_accuracy() == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert m.average_accuracy(after_task=1) == pytest.approx(0.7)
    assert m.backward_transfer() == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert m.forgetting() == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert m.forgetting("chaudhry") == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)  # no task improved at the end
    with pytest.raises(ValueError, match="fraction"):
        m.set(0, 0, 90)
    with pytest.raises(ValueError, match="eval_task"):
        m.set(0, 3, 0.5)
    with pytest.raises(ValueError, match="no complete row"):
        AccuracyMatrix(2).average_accuracy()


def _mammoth_forgetting(results):
    """mammoth utils/metrics.py::forgetting, transcribed (rows padded with 0, column max over all rows)."""
    n_tasks = len(results)
    results = [list(r) + [0.0] * (n_tasks - len(r)) for r in results]
    maxx = np.max(np.array(results), axis=0)
    return float(np.mean([maxx[i] - results[-1][i] for i in range(n_tasks - 1)]))


def test_forgetting_is_mammoths_by_default_and_chaudhrys_by_name():
    # the example: a task that improves after the last task is not forgotten in mammoth (0.0), while
    # Chaudhry's maximum over the earlier rows only gives max(.5) - .7 = -0.2
    m = AccuracyMatrix(2)
    for (i, j), v in {(0, 0): 0.5, (1, 0): 0.7, (1, 1): 0.9}.items():
        m.set(i, j, v)
    assert m.forgetting() == pytest.approx(0.0, abs=1e-12)
    assert m.forgetting(kind="mammoth") == pytest.approx(_mammoth_forgetting([[0.5], [0.7, 0.9]]), abs=1e-12)
    assert m.forgetting(kind="chaudhry") == pytest.approx(-0.2, abs=1e-12)
    # three tasks, hand computed: task 0 peaks at row 1 (.8), task 1 at the last row (.6 > .4)
    rows = [[0.6], [0.8, 0.4], [0.7, 0.6, 0.9]]
    m = AccuracyMatrix(3)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            m.set(i, j, v)
    assert m.forgetting() == pytest.approx(((0.8 - 0.7) + (0.6 - 0.6)) / 2, abs=1e-12)
    assert m.forgetting() == pytest.approx(_mammoth_forgetting(rows), abs=1e-12)
    assert m.forgetting("chaudhry") == pytest.approx(((0.8 - 0.7) + (0.4 - 0.6)) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="kind"):
        m.forgetting("avalanche")


def test_running_average():
    avg = RunningAverage()
    avg.update(1.0, n=1)
    avg.update(torch.tensor(4.0), n=3)
    assert avg.value == pytest.approx(13 / 4)
    with pytest.raises(ValueError, match="finite"):
        avg.update(float("nan"))
    with pytest.raises(ValueError, match="positive int"):
        avg.update(1.0, n=0)

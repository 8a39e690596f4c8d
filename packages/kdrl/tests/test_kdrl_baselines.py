"""EBKD, AEKD and CA-MKD against weights computed by hand from the official formulas (Rorozhl/CA-MKD
``helper/loops.py``, ``helper/optimization.py``, ``distiller_zoo/CAMKD.py``) on constructed batches."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from kdrl import DistillConfig, DistillContext, MultiTeacherDistiller, create_model, create_strategy
from kdrl.strategies.simple import (
    ConfidenceAware,
    EntropyBased,
    GradientSpace,
    aekd_gradients,
    min_norm_capped_simplex,
)


def _ctx(teacher_logits, targets, student_logits=None, teacher_ce=None, head_ce=None, epoch=1):
    b, k = teacher_logits[0].shape
    m = len(teacher_logits)
    z = torch.zeros(b, m)
    return DistillContext(
        epoch=epoch, targets=targets, student_logits=torch.zeros(b, k) if student_logits is None else student_logits,
        teacher_logits=teacher_logits, teacher_embeddings=[torch.zeros(b, 1)] * m,
        student_embeddings=[torch.zeros(b, 1)] * m, kd=z, feat=z,
        teacher_ce=z if teacher_ce is None else teacher_ce, cosine=z, temperature=4.0, head_ce=head_ce)


# ---------------------------------------------------------------- EBKD
def test_ebkd_is_one_minus_entropy_share_over_m():
    # teacher 0: uniform over 2 classes, H0 = log 2; teacher 1: p = [3/4, 1/4]; teacher 2: p = [1/2, 1/2] too
    h0 = math.log(2.0)
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    logits = [torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[1.0, 1.0]])]
    total = 2 * h0 + h1
    expected = [(1 - h0 / total) / 3, (1 - h1 / total) / 3, (1 - h0 / total) / 3]
    w_l, w_f = EntropyBased().weights(_ctx(logits, torch.tensor([0])))
    assert w_l[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(w_l, w_f)
    # two confident teachers (p_max = 0.999 and 0.99): softmax(-H) would be ~uniform (0.52/0.48); the official
    # rule gives the more confident one ~7x the weight of the other
    hs = []
    conf = []
    for pmax in (0.999, 0.99):
        conf.append(torch.tensor([[math.log(pmax / (1 - pmax)), 0.0]]))
        hs.append(-(pmax * math.log(pmax) + (1 - pmax) * math.log(1 - pmax)))
    w, _ = EntropyBased().weights(_ctx(conf, torch.tensor([0])))
    assert w[0].tolist() == pytest.approx([(1 - hs[0] / sum(hs)) / 2, (1 - hs[1] / sum(hs)) / 2], rel=1e-5)
    assert float(w[0, 0] / w[0, 1]) > 5.0


def test_ebkd_matches_the_official_loop_on_a_random_batch():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(8, 5, generator=g) * s for s in (1.0, 3.0, 0.3)]
    # verbatim arithmetic of helper/loops.py, ensemble_method == 'EBKD' (weight per teacher and sample, then / M)
    entropy_list = []
    for logit_t in logits:
        p = F.softmax(logit_t, dim=1)
        entropy_list.append((-(p) * (torch.log(p))).sum(1))
    entropy_sum = torch.stack(entropy_list, dim=0).sum(dim=0).squeeze(dim=0)
    official = torch.stack([1.0 - (e / entropy_sum) for e in entropy_list]).T / 3
    w_l, _ = EntropyBased().weights(_ctx(logits, torch.zeros(8, dtype=torch.long)))
    torch.testing.assert_close(w_l, official, rtol=1e-5, atol=1e-6)
    # confident teachers weigh more, and the weights sum to (M - 1) / M
    assert bool((w_l[:, 1] > w_l[:, 2]).all())
    torch.testing.assert_close(w_l.sum(1), torch.full((8,), 2 / 3))


# ---------------------------------------------------------------- AEKD
def test_aekd_gradients_are_what_the_official_hook_records():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(6, 4, generator=g, requires_grad=True)
    teachers = [torch.randn(6, 4, generator=g) for _ in range(3)]
    T = 4.0
    grads = []
    s.register_hook(lambda grad: grads.append(grad.clone()))
    for t in teachers:  # DistillKL(T) with reduction='batchmean', one backward per teacher
        loss = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
        loss.backward(retain_graph=True)
    vec_mean = torch.stack(grads).reshape(3, 6, -1).mean(dim=1)  # find_optimal_svm's vec_mean
    torch.testing.assert_close(aekd_gradients(s.detach(), teachers, T).float(), vec_mean, rtol=1e-5, atol=1e-8)


def test_min_norm_capped_simplex_by_hand():
    # orthogonal g1 = e1, g2 = 2 e2: min |a g1 + (1-a) g2|^2 = a^2 + 4 (1-a)^2 at a = 4/5
    gram = np.array([[1.0, 0.0], [0.0, 4.0]])
    assert min_norm_capped_simplex(gram, 1.0).tolist() == pytest.approx([0.8, 0.2], abs=1e-12)
    assert min_norm_capped_simplex(gram, 0.6).tolist() == pytest.approx([0.6, 0.4], abs=1e-12)
    # three orthogonal gradients with |g|^2 = 1, 4, 4: free optimum a ~ 1/|g|^2 = [2/3, 1/6, 1/6]; capped at 0.6
    # the first weight sits at the cap and the other two split the rest 1:1 (equal norms)
    gram3 = np.diag([1.0, 4.0, 4.0])
    assert min_norm_capped_simplex(gram3, 1.0).tolist() == pytest.approx([2 / 3, 1 / 6, 1 / 6], abs=1e-12)
    assert min_norm_capped_simplex(gram3, 0.6).tolist() == pytest.approx([0.6, 0.2, 0.2], abs=1e-12)
    # a gradient inside the hull of the others: weights on the two opposite ones give the zero vector
    gram_c = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert min_norm_capped_simplex(gram_c, 0.6).tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-12)


def test_aekd_cap_follows_the_official_nu_clipping():
    assert GradientSpace(C=0.6).cap(3) == pytest.approx(0.6)  # nu = 1/(0.6*3)
    assert GradientSpace(C=2.0).cap(3) == pytest.approx(1.0)  # nu < 1/M -> 1/M: no cap
    assert GradientSpace(C=0.2).cap(3) == pytest.approx(1 / 3)  # nu > 1 -> 1: uniform


def test_aekd_matches_the_official_one_class_svm_on_a_constructed_batch():
    svm = pytest.importorskip("sklearn.svm")
    g = torch.Generator().manual_seed(3)
    student = torch.randn(16, 10, generator=g)
    teachers = [student + 0.3 * torch.randn(16, 10, generator=g),  # close to the student: small gradient
                torch.randn(16, 10, generator=g) * 2, torch.randn(16, 10, generator=g) * 2]
    vec = aekd_gradients(student, teachers, 4.0)
    G = (vec @ vec.T).numpy()
    # official find_optimal_svm with nu = 1 / (C M), C = 0.6; G rescaled so libsvm's absolute tolerance (1e-6)
    # is tight relative to it (the argmin does not depend on the scale of G)
    m, nu = 3, 1 / (0.6 * 3)
    oc = svm.OneClassSVM(kernel="precomputed", nu=nu, tol=1e-10).fit(G / np.abs(G).max())
    ret = np.zeros(m)
    ret[oc.support_] = oc.dual_coef_ / (m * nu)
    ours = GradientSpace(C=0.6).batch_weights(student, teachers, 4.0).numpy()
    assert ret.max() <= 0.6 + 1e-9 and ours.max() <= 0.6 + 1e-6
    np.testing.assert_allclose(ours, ret, atol=1e-4)
    assert ours[0] == pytest.approx(0.6, abs=1e-6)  # the agreeing teacher is capped


# ---------------------------------------------------------------- CA-MKD
def test_camkd_weights_by_hand():
    ce = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4] -> (1 - p) / (M - 1) / M = [3/8, 1/8]
    head = torch.tensor([[math.log(3.0), 0.0]])
    logits = [torch.zeros(1, 3)] * 2
    w_l, w_f = ConfidenceAware().weights(_ctx(logits, torch.tensor([0]), teacher_ce=ce, head_ce=head, epoch=1))
    assert w_l[0].tolist() == pytest.approx([0.375, 0.125])
    assert w_f[0].tolist() == pytest.approx([0.125, 0.375])  # from the heads, not the teacher CE
    _, w_f0 = ConfidenceAware().weights(_ctx(logits, torch.tensor([0]), teacher_ce=ce, head_ce=head, epoch=0))
    assert w_f0.abs().sum() == 0  # no feature term in the first epoch, as the official loop


class _RecordingCAMKD(ConfidenceAware):
    def __init__(self):
        self.seen = []

    def weights(self, ctx):
        w_l, w_f = super().weights(ctx)
        self.seen.append((ctx, w_l, w_f))
        return w_l, w_f


def test_camkd_feature_weights_come_from_each_teachers_head_on_the_adapted_student_feature():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    teachers = [create_model("digits_convnet_wide").eval(), create_model("digits_resnet14").eval()]
    strat = _RecordingCAMKD()
    cfg = DistillConfig(epochs=2, milestones=[], lr=1e-12, momentum=0.0, nesterov=False, weight_decay=0.0)
    d = MultiTeacherDistiller(create_model("digits_convnet_tiny"), teachers, strat, cfg)
    d.fit(loader, progress=False)
    ctx, w_l, w_f = strat.seen[-1]
    assert ctx.head_ce.requires_grad and w_f.requires_grad  # the official weights are not detached
    d.model.train()
    with torch.no_grad():
        _, _, adapted = d.model(x)
    head_ce = torch.stack([F.cross_entropy(t.fc(a.mean(dim=(2, 3))), y, reduction="none")
                           for t, a in zip(teachers, adapted)], dim=1)
    torch.testing.assert_close(ctx.head_ce.detach(), head_ce, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w_f.detach(), (1 - torch.softmax(head_ce, 1)) / 2, rtol=1e-4, atol=1e-5)
    t_ce = torch.stack([F.cross_entropy(t(x), y, reduction="none") for t in teachers], dim=1)
    torch.testing.assert_close(w_l, (1 - torch.softmax(t_ce, 1)) / 2, rtol=1e-4, atol=1e-5)


def test_camkd_refuses_a_teacher_without_a_head():
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 10))
    from kdrl import TeacherPool

    pool = TeacherPool([seq, create_model("digits_mlp")], feature_layers=["1", None])
    d = MultiTeacherDistiller(create_model("digits_convnet_tiny"), pool, create_strategy("camkd"),
                              DistillConfig(epochs=1, milestones=[]))
    with pytest.raises(ValueError, match="forward_head"):
        d.setup(torch.randn(2, 1, 8, 8))

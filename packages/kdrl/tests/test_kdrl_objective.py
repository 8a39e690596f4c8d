"""The student objective and the agent's update schedule, checked term by term against the official code's recipe."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from kdrl import MTKDRL, DistillConfig, DistillContext, MultiTeacherDistiller, WeightingStrategy, create_model
from kdrl.losses import cosine_per_sample, feature_mse_per_sample, kd_kl_per_sample, teacher_cross_entropy


class _Recorder(WeightingStrategy):
    """Fixed, per-sample random weights; records what the distiller hands to ``observe``."""

    name = "recorder"

    def __init__(self):
        self.seen = []
        self._g = torch.Generator().manual_seed(7)

    def weights(self, ctx):
        w_l = torch.rand(ctx.batch_size, ctx.num_teachers, generator=self._g)
        w_f = torch.rand(ctx.batch_size, ctx.num_teachers, generator=self._g)
        return w_l, w_f

    def observe(self, ctx, logit_weights, feat_weights, per_sample_loss):
        self.seen.append((ctx, logit_weights, feat_weights, per_sample_loss))


def test_student_loss_is_ce_plus_weighted_kd_plus_five_times_weighted_feature_mse():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    teachers = [create_model("digits_convnet_wide").eval(), create_model("digits_mlp").eval()]
    rec = _Recorder()
    # lr tiny, no momentum/decay: the weights after the step are those of the step, so the forward can be redone
    cfg = DistillConfig(epochs=1, milestones=[], lr=1e-12, momentum=0.0, nesterov=False, weight_decay=0.0)
    assert cfg.feat_weight == 5.0 and cfg.temperature == 4.0 and cfg.kd_weight == 1.0  # official defaults
    d = MultiTeacherDistiller(create_model("digits_convnet_tiny"), teachers, rec, cfg)
    hist = d.fit(loader, progress=False)
    ((ctx, w_l, w_f, per_sample),) = rec.seen
    t_outs = d.teachers(x)
    d.model.train()
    with torch.no_grad():
        logits, _fmap, adapted = d.model(x)
    # every per-teacher term recomputed from the networks
    for m, t in enumerate(t_outs):
        torch.testing.assert_close(ctx.kd[:, m], kd_kl_per_sample(logits, t.logits, 4.0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ctx.feat[:, m], feature_mse_per_sample(adapted[m], t.feature_map),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ctx.teacher_ce[:, m], teacher_cross_entropy(t.logits, y))
        s_emb = adapted[m].mean(dim=(2, 3))  # GAP of the adapted student map (the agent's cosine state)
        torch.testing.assert_close(ctx.cosine[:, m], cosine_per_sample(s_emb, t.embedding), rtol=1e-4, atol=1e-5)
    expected = (F.cross_entropy(logits, y, reduction="none") + (w_l * ctx.kd).sum(1)
                + 5.0 * (w_f * ctx.feat).sum(1))
    torch.testing.assert_close(per_sample, expected, rtol=1e-4, atol=1e-5)
    assert hist["epochs"][0]["train_loss"] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert hist["epochs"][0]["train_feat"] == pytest.approx(float((w_f * ctx.feat).sum(1).mean()), rel=1e-4)


def _ctx(epoch, b=6, m=2, k=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(b, k, generator=g) for _ in range(m)]
    emb = [torch.randn(b, d, generator=g) for _ in range(m)]
    return DistillContext(
        epoch=epoch, targets=torch.randint(0, k, (b,), generator=g), student_logits=torch.randn(b, k, generator=g),
        teacher_logits=logits, teacher_embeddings=emb, student_embeddings=[torch.randn(b, d, generator=g)] * m,
        kd=torch.rand(b, m, generator=g), feat=torch.rand(b, m, generator=g), teacher_ce=torch.rand(b, m, generator=g),
        cosine=torch.rand(b, m, generator=g) * 2 - 1, temperature=4.0)


def _run_epoch(strat, epoch, batches):
    updates = []
    for i in range(batches):
        ctx = _ctx(epoch, seed=100 * epoch + i)
        w_l, w_f = strat.weights(ctx)
        strat.observe(ctx, w_l, w_f, torch.rand(ctx.batch_size))
        updates.append(strat.updates)
    strat.end_epoch(epoch)
    updates.append(strat.updates)
    return updates, w_l, w_f


def test_agent_is_trained_every_agent_step_batches_and_at_epoch_end_as_the_code():
    # official: `if batch_idx % agent_step == 0 and batch_idx != 0: train_agent(buffer)`, then at epoch end if non-empty
    strat = MTKDRL(hidden=8, agent_step=2)
    strat.setup(2, [3, 3], 4, torch.device("cpu"))
    updates, w_l, _ = _run_epoch(strat, 0, 5)
    assert updates == [0, 0, 3, 3, 5, 5]  # batches 0-2 replayed after batch 2, 3-4 after batch 4, nothing left
    assert torch.equal(w_l, torch.ones_like(w_l))  # epoch 0: all weights 1 (warm-up)
    # default agent_step (1000) on a short epoch: one replay of every buffered batch, at the end of the epoch
    strat = MTKDRL(hidden=8)
    strat.setup(2, [3, 3], 4, torch.device("cpu"))
    updates, _, _ = _run_epoch(strat, 0, 4)
    assert updates == [0, 0, 0, 0, 4]
    updates, w_l, w_f = _run_epoch(strat, 1, 3)  # the batch counter restarts every epoch
    assert updates == [4, 4, 4, 7]
    for w in (w_l, w_f):  # after warm-up the fused weights are distributions over teachers
        torch.testing.assert_close(w.sum(1), torch.ones(w.shape[0]))

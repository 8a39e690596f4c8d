"""Rehearsal core, CLFD and FDINet: buffer statistics, DWT parity, selection masks, learning, errors."""

import numpy as np
import pytest
import torch

from clfreq import (
    CLFD,
    ER,
    CLFDNet,
    DERpp,
    FDINet,
    ReservoirBuffer,
    ResNet18,
    create_method,
    haar_dwt,
    split_digits,
    train_continual,
)
from clfreq.rehearsal import kwta


def _tiny(bench, n_tasks=2, n=60):
    bench.train = [(x[:n], y[:n]) for x, y in bench.train[:n_tasks]]
    bench.test = bench.test[:n_tasks]
    return bench


def test_reservoir_is_uniform():
    # 200 streams of 100 items into a 10-slot buffer: each item kept with p = 0.1; chi-square over positions
    counts = np.zeros(100)
    for s in range(200):
        buf = ReservoirBuffer(10, seed=s)
        buf.add(examples=torch.arange(100.0)[:, None], labels=torch.arange(100))
        counts[buf.data["labels"].numpy()] += 1
    expected = 200 * 10 / 100
    chi2 = ((counts - expected) ** 2 / expected).sum()
    from scipy.stats import chi2 as chi2_dist

    assert chi2_dist.sf(chi2, df=99) > 0.01, chi2
    # early and late items are equally likely (non-uniform schemes such as FIFO fail this)
    assert abs(counts[:50].sum() - counts[50:].sum()) < 0.2 * counts.sum()


def test_buffer_errors_and_sampling():
    with pytest.raises(ValueError, match="capacity"):
        ReservoirBuffer(0)
    buf = ReservoirBuffer(5)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(3)
    buf.add(examples=torch.zeros(3, 2), labels=torch.arange(3))
    assert len(buf) == 3 and buf.sample(10)["examples"].shape == (3, 2)


def test_dwt_matches_pywavelets():
    pywt = pytest.importorskip("pywt")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 6))
    cA, (cH, cV, cD) = pywt.dwt2(x, "haar")
    ll, lh, hl, hh = (t.numpy() for t in haar_dwt(torch.tensor(x)))
    # CLFD order: LL, LH (low rows / high cols = pywt vertical detail), HL (pywt horizontal), HH
    for ours, ref in ((ll, cA), (lh, cV), (hl, cH), (hh, cD)):
        np.testing.assert_allclose(ours, ref, atol=1e-12)
    energy = sum((t ** 2).sum() for t in (ll, lh, hl, hh))
    assert np.isclose(energy, (x ** 2).sum())
    with pytest.raises(ValueError, match="even"):
        haar_dwt(torch.zeros(1, 3, 5, 4))


def test_kwta_and_class_mask():
    h = torch.randn(4, 100)
    out = kwta(h, 0.6)
    assert ((out != 0).sum(1) == 60).all()
    kept = out != 0
    for i in range(4):  # the kept units are exactly the 60 largest |h|
        assert set(torch.topk(h[i].abs(), 60).indices.tolist()) == set(kept[i].nonzero().flatten().tolist())
    net = CLFDNet(4, nf=4).train()
    d = net.dim
    net.select_probs[0] = 0.0
    net.select_probs[0, :5] = 1.0  # class 0 may only use units 0..4
    z = torch.randn(6, 3, 8, 8)
    y = torch.zeros(6, dtype=torch.long)
    net.classify(z, y)
    assert net.select_counts[0, 5:].sum() == 0 and net.select_counts[0, :5].sum() > 0
    assert net.select_counts[1:].sum() == 0 and d == 32


def test_clfd_schedule_and_freeze():
    bench = _tiny(split_digits(image_size=8), n_tasks=2, n=64)
    m = CLFD(ER(lr=0.05, buffer_size=10, nf=4))
    r = train_continual(m, bench, epochs=3, seed=0)
    net = m.net
    assert all(not p.requires_grad for p in net.encoder.parameters())
    assert m.buffer.capacity == 40  # 4x encoded maps for the same bytes
    assert m.buffer.data["examples"].shape[1:] == (3, 4, 4)  # 3 channels at half resolution
    # task-0 classes: units never counted keep probability 0 (the reserved units stay off, notes §1.8)
    reserved = m.clfd_state["reserved"]
    assert (net.select_probs[:2, reserved:] == 0).all()
    assert net.select_probs.min() >= 0 and net.select_probs[:4].max() <= 1 - np.exp(-2) + 1e-6
    assert len(r["per_task_class_il"]) == 2


def test_fdinet_is_smaller_and_runs():
    host = ResNet18(10, nf=20)
    f = FDINet(10, nf_low=7, nf_high=7)
    ratio = (sum(p.numel() for p in f.low.parameters()) + sum(p.numel() for p in f.high.parameters())) / sum(
        p.numel() for p in host.features.parameters())
    assert ratio < 0.3
    assert f(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("name", ["er", "der++", "er-ace", "cls-er"])
@pytest.mark.parametrize("plugin", [None, "clfd", "fdinet"])
def test_each_method_runs_one_epoch(name, plugin):
    bench = _tiny(split_digits(image_size=8), n_tasks=2, n=40)
    r = train_continual(create_method(name, plugin=plugin, nf=4, buffer_size=10), bench, epochs=1, seed=0)
    assert np.isfinite(r["class_il"]) and r["params"] > 0


def test_two_tasks_learn_above_chance():
    bench = _tiny(split_digits(), n_tasks=2, n=300)
    r = train_continual(DERpp(lr=0.05, buffer_size=50, nf=8), bench, epochs=3, seed=0)
    final = r["cil_matrix"][1]
    assert final[0] > 0.4 and final[1] > 0.4, final  # chance over 4 classes = 0.25
    assert min(r["til_matrix"][1]) > 0.7  # chance within a task = 0.5


def test_resume_continues(tmp_path):
    bench = _tiny(split_digits(image_size=8), n_tasks=2, n=40)
    train_continual(ER(nf=4, buffer_size=10), bench, epochs=1, seed=0, out_dir=tmp_path)
    assert (tmp_path / "state.pt").exists()
    r = train_continual(ER(nf=4, buffer_size=10), bench, epochs=1, seed=0, out_dir=tmp_path, resume=True)
    assert r["cil_matrix"][1][0] is not None  # matrix restored, nothing left to train
    with pytest.raises(ValueError, match="belongs to a 'er' run"):  # another method/plugin cannot load this state
        train_continual(CLFD(ER(nf=4, buffer_size=10)), bench, epochs=1, seed=0, out_dir=tmp_path, resume=True)


def test_bad_inputs():
    with pytest.raises(ValueError, match="method must be one of"):
        create_method("ewc")
    with pytest.raises(ValueError, match="plugin"):
        create_method("er", plugin="wavelet")
    with pytest.raises(TypeError, match="CLFD wraps"):
        CLFD(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="already has plugin"):
        CLFD(CLFD(ER()))
    with pytest.raises(ValueError, match="lr"):
        ER(lr=0)
    with pytest.raises(ValueError, match="epochs"):
        train_continual(ER(), split_digits(image_size=8), epochs=0)
    with pytest.raises(ValueError, match="image_size"):
        split_digits(image_size=7)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name,plugin", [("cls-er", "clfd"), ("der++", "fdinet")])
def test_interrupted_run_resumes_exactly(tmp_path, name, plugin):
    # crash after task 0, resume: the end state equals an uninterrupted run (net, buffer, RNGs, EMA models)
    def run(out, stop=False, resume=False):
        def hook(t, *_):
            if stop and t == 0:
                raise _Stop
        m = create_method(name, plugin=plugin, nf=4, buffer_size=10, lr=0.05)
        r = train_continual(m, _tiny(split_digits(image_size=8), n_tasks=2, n=40), epochs=2, seed=0, out_dir=out,
                            resume=resume, on_task_end=hook, augment={"padding": 2, "flip": True})
        return m, r

    ref, r_ref = run(tmp_path / "a")
    with pytest.raises(_Stop):
        run(tmp_path / "b", stop=True)
    m, r = run(tmp_path / "b", resume=True)
    sa, sb = ref.state_dict(), m.state_dict()
    for key in ("net", "stable", "plastic"):
        for a, b in zip(sa.get(key, {}).values(), sb.get(key, {}).values()):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(ref.buffer.data["examples"], m.buffer.data["examples"])
    assert r["cil_matrix"] == r_ref["cil_matrix"]


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_clfd_selection_schedule_follows_the_official_formulas():
    """Drive CLFD's hooks by hand (notes §1.4) and recompute every probability independently in numpy."""
    epochs = 3  # warm-up recomputation from epoch e > 0.4 * 3 = 1.2, i.e. epochs 2 and 3
    m = CLFD(ER(lr=0.05, buffer_size=4, nf=2))
    m.setup(num_classes=4, in_channels=3, classes_per_task=2, epochs=epochs, device=torch.device("cpu"), seed=0)
    net, d = m.net, m.net.dim
    reserved = int(d * 1.1 * 0.6)
    g = torch.Generator().manual_seed(0)
    x0, y0 = torch.randn(8, 3, 4, 4, generator=g), torch.tensor([0, 1] * 4)
    # task 0, epoch 1: task-0 classes may use only the first int(1.1 * 0.6 * D) units
    m.begin_task(0, x0, y0)
    m.begin_epoch(1)
    expected0 = np.r_[np.ones(reserved), np.zeros(d - reserved)]
    np.testing.assert_array_equal(net.select_probs[:2].numpy(), np.tile(expected0, (2, 1)))
    m.buffer.add(examples=torch.zeros(6, 3, 2, 2), labels=torch.zeros(6, dtype=torch.long))
    # last epoch of task 0: encoder frozen, buffer emptied (refilled with frozen-encoder maps), counter restored later
    m.begin_epoch(epochs)
    assert all(not p.requires_grad for p in net.encoder.parameters()) and len(m.buffer) == 0
    m.buffer.add(examples=torch.zeros(2, 3, 2, 2), labels=torch.zeros(2, dtype=torch.long))
    m.end_epoch(epochs)
    m.end_task(0)
    assert m.buffer.num_seen == 6 + 2  # every sample offered in task 0, as if the buffer had never been emptied
    ll0 = haar_dwt(x0)[0].flatten(1).numpy()  # class signatures: summed LL sub-band of the non-augmented images
    for c in (0, 1):
        np.testing.assert_allclose(m.clfd_state["ll"][c].numpy(), ll0[y0.numpy() == c].sum(0), rtol=1e-5)
    # task 1
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 50, (2, d)).astype(np.float32)
    net.select_counts[:2] = torch.from_numpy(counts)
    x1, y1 = torch.randn(8, 3, 4, 4, generator=g), torch.tensor([2, 3] * 4)
    m.begin_task(1, x1, y1)
    m.begin_epoch(1)
    assert torch.all(net.select_probs[2:] == 0.6)  # new classes start uniform at the k-WTA keep ratio
    m.end_epoch(1)  # similarity-based initialisation of the new classes
    ll1 = haar_dwt(x1)[0].flatten(1).numpy()
    for c in (2, 3):
        sig = ll1[y1.numpy() == c].sum(0)
        s = np.array([_cos(sig, ll0[y0.numpy() == j].sum(0)) for j in (0, 1)])
        jmin, jmax = int(s.argmin()), int(s.argmax())
        mean = (s + 1).mean()
        f_min, f_max = mean / (s[jmin] + 1), (s[jmax] + 1) / mean
        assert f_min >= 1 and f_max >= 1
        p_min = np.exp(-counts[jmin] * f_min / counts[jmin].max())  # avoid units the dissimilar class uses
        p_max = 1 - np.exp(-counts[jmax] * f_max / counts[jmax].max())  # reuse units the similar class uses
        np.testing.assert_allclose(net.select_probs[c].numpy(), 0.5 * p_min + 0.5 * p_max, rtol=1e-5, atol=1e-6)
    before3 = net.select_probs[3].clone()
    counts2 = rng.integers(0, 30, d).astype(np.float32)
    net.select_counts[2] = torch.from_numpy(counts2)  # class 3 has no counts yet: it keeps its probabilities
    m.end_epoch(2)  # warm-up over: p = 1 - exp(-rho * a / max a), rho = 2, for every seen class with counts
    for c, a in ((0, counts[0]), (1, counts[1]), (2, counts2)):
        np.testing.assert_allclose(net.select_probs[c].numpy(), 1 - np.exp(-2 * a / a.max()), rtol=1e-5, atol=1e-6)
    assert torch.equal(net.select_probs[3], before3)
    # the class mask acts only in training on labelled current data; evaluation applies k-WTA alone
    net.eval()
    z = torch.randn(3, 3, 2, 2)
    counts_before = net.select_counts.clone()
    h = kwta(net.features(z), 0.6)
    torch.testing.assert_close(net.classify(z, torch.tensor([0, 1, 2])), net.classifier(h))
    assert torch.equal(net.select_counts, counts_before)


def test_clfd_encoder_frozen_after_task0_and_buffer_holds_its_maps():
    bench = _tiny(split_digits(image_size=8), n_tasks=2, n=64)
    m = CLFD(ER(lr=0.1, buffer_size=10, nf=4))
    snaps = {}
    hooked = {}

    def on_task_end(t, *_):
        snaps[t] = [p.detach().clone() for p in m.net.encoder.parameters()]
        hooked[t] = m.buffer.num_seen

    base_begin_epoch = None

    def begin_epoch(e):
        if m.task == 0 and e == 1:
            snaps["init"] = [p.detach().clone() for p in m.net.encoder.parameters()]
        base_begin_epoch(e)

    base_setup = m.setup

    def setup(*a, **kw):  # wrap the hook after CLFD installed its own
        nonlocal base_begin_epoch
        out = base_setup(*a, **kw)
        base_begin_epoch = m.begin_epoch
        m.begin_epoch = begin_epoch
        return out

    m.setup = setup
    train_continual(m, bench, epochs=3, seed=0, on_task_end=on_task_end)
    assert any(not torch.equal(a, b) for a, b in zip(snaps["init"], snaps[0]))  # trained during task 0
    assert all(torch.equal(a, b) for a, b in zip(snaps[0], snaps[1]))  # then frozen
    assert hooked[0] == 3 * 64  # reservoir counter restored after the refill
    # every buffered example is the frozen encoder's map of a training image of its task (3 x H/2 x W/2)
    with torch.no_grad():
        maps = {t: m.net.encode(bench.train[t][0]) for t in range(2)}
    ex, tids = m.buffer.data["examples"], m.buffer.data["task_ids"]
    assert ex.shape == (40, 3, 4, 4) and set(tids.tolist()) == {0, 1}
    for e, t in zip(ex, tids.tolist()):
        assert (maps[t] - e).flatten(1).abs().max(1).values.min() < 1e-5


def test_plugin_mixin_in_a_class_statement_equals_the_wrapper():
    from clfreq.rehearsal import ERACE, CLFDMixin

    class CLFDERACE(CLFDMixin, ERACE):
        pass

    static = CLFDERACE(lr=0.05, nf=4, buffer_size=10, kwta_keep=0.5)
    wrapped = CLFD(ERACE(lr=0.05, nf=4, buffer_size=10), kwta_keep=0.5)
    runs = []
    for m in (static, wrapped):
        assert m.label == "clfd-er-ace" and isinstance(m, ERACE) and m.buffer_factor == 4 and not m.concat_replay
        r = train_continual(m, _tiny(split_digits(image_size=8), n_tasks=2, n=40), epochs=2, seed=0)
        runs.append((m, r))
    (a, ra), (b, rb) = runs
    assert ra["cil_matrix"] == rb["cil_matrix"]
    for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)  # same process, same operations: bit-identical

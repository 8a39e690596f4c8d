"""Calibration statistics do not depend on the order of the calibration items (channel-balancing maxima, static
activation ranges); the official ViDiT-Q EMA stays available as ``act_momentum=0.95`` and is order-dependent."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import torch

import vqcore
from vqcore.calib import Capture, activation_channel_absmax, root_items
from vqcore.quant import prepare, preset

_spec = importlib.util.spec_from_file_location("vq_quant_tests_st", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox = _mod.tiny_cogvideox


def _calib(model):
    """8 denoising calls of batch 1 ordered by timestep, with input scales that grow along the trajectory (as the
    early/late steps of a real sampler differ), captured like a user would."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for i, t in enumerate(range(950, 0, -120)):
            model(hidden_states=torch.randn(1, 3, 4, 8, 8, generator=g) * (0.5 + 0.3 * i),
                  encoder_hidden_states=torch.randn(1, 4, 16, generator=g), timestep=torch.tensor([t]))
    return cap.result


def _shuffled(calib):
    out = type(calib)({k: list(v) for k, v in calib.items.items()})
    for v in out.items.values():
        random.Random(3).shuffle(v)
    return out


def test_channel_maxima_and_quantized_model_are_identical_for_a_shuffled_calibration_set():
    model = tiny_cogvideox()
    calib = _calib(model)
    shuffled = _shuffled(calib)
    assert [i.timestep for i in shuffled["__model__"]] != [i.timestep for i in calib["__model__"]]
    q = prepare(tiny_cogvideox(), preset("dit", 4, 8))

    def stats(c, momentum=None):
        return {id(m): v for m, v in activation_channel_absmax(q, root_items(c), momentum=momentum).items()}

    a, b = stats(calib), stats(shuffled)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ema_a, ema_b = stats(calib, 0.95), stats(shuffled, 0.95)
    assert any(not torch.allclose(ema_a[k], ema_b[k], rtol=1e-3) for k in a)  # the EMA depends on the order
    # ... and so do the methods built on them: the default vidit-q / q-vdit models are identical
    x = dict(hidden_states=torch.randn(2, 3, 4, 8, 8), encoder_hidden_states=torch.randn(2, 4, 16),
             timestep=torch.tensor([500, 500]))
    for method, opts in (("vidit-q", {}), ("rtn", {})):
        qa = vqcore.quantize(model, method, w_bits=4, a_bits=6, calib=calib, **opts)
        qb = vqcore.quantize(model, method, w_bits=4, a_bits=6, calib=shuffled, **opts)
        with torch.no_grad():
            assert torch.equal(qa(**x).sample, qb(**x).sample), method
    ea = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=6, calib=calib, act_momentum=0.95)
    eb = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=6, calib=shuffled, act_momentum=0.95)
    with torch.no_grad():
        assert not torch.equal(ea(**x).sample, eb(**x).sample)


def test_the_mean_weighs_every_sample_the_same():
    """With the EMA, the first of 8 batches holds 0.95^7 ≈ 70 % of the statistic; the default is the plain mean."""
    lin = torch.nn.Sequential(torch.nn.Linear(4, 4))
    q = prepare(lin, preset("dit", 8, 8))
    xs = [torch.full((1, 3, 4), float(i + 1)) for i in range(8)]  # per-sample token max = i + 1 on every channel
    mean = next(iter(activation_channel_absmax(q, root_items(xs), batch_size=1).values()))
    ema = next(iter(activation_channel_absmax(q, root_items(xs), momentum=0.95, batch_size=1).values()))
    assert torch.equal(mean, torch.full((4,), 4.5))
    expected = 1.0
    for i in range(1, 8):
        expected = 0.95 * expected + 0.05 * (i + 1)
    torch.testing.assert_close(ema, torch.full((4,), expected))

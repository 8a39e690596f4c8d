"""A converted model saved by an earlier vqcore (``tests/data/int_v2``, written by ``tests/data/make_int_v2.py``
before ``vqcore.convert`` became a package) still loads into a fresh float model and computes what it computed then.

Tolerance: the stored outputs come from the same CPU reference kernels on the same codes; only the float32 summation
order can differ between machines/BLAS builds (one ulp-level change per layer, three chained layers, where an
activation code may flip at a rounding boundary): relative L2 < 1e-4, as for chained layers in
``test_vqcore_convert_mpqdm.py``. The integer codes themselves are compared exactly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file

from vqcore.convert import QConv2dInt, QLinearInt, load_converted

DATA = Path(__file__).parent / "data"


def _maker():
    spec = importlib.util.spec_from_file_location("make_int_v2", DATA / "make_int_v2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_previous_format_checkpoint_loads_and_computes_the_same():
    mk = _maker()
    net = load_converted(mk.LegacyNet(), DATA / "int_v2")
    assert isinstance(net.conv, QConv2dInt) and isinstance(net.lin, QLinearInt) and isinstance(net.head, QLinearInt)
    assert net.conv.spec.split_rows == 2 and net.lin.spec.timesteps == 3 and net.head.spec.group_size == 64
    assert net.vq_step_tables.timesteps == mk.TIMESTEPS
    saved = load_file(str(DATA / "int_v2" / "model.safetensors"))
    for name, t in net.state_dict().items():
        assert torch.equal(t, saved[name]), name  # codes, scales and tables exactly as stored
    expected = load_file(str(DATA / "int_v2" / "expected.safetensors"))
    with torch.no_grad():
        for t in mk.CALLS:
            y, ref = net(mk.inputs(), t), expected[f"y_{t}"]
            assert y.shape == ref.shape
            assert ((y - ref).norm() / ref.norm()).item() < 1e-4


def test_build_objects_and_from_codes_keywords_make_the_same_layer():
    import pytest

    from vqcore.convert import ActQuant, IntWeights, LayerExtras

    g = torch.Generator().manual_seed(0)
    codes, scale = torch.randint(0, 16, (24, 64), generator=g), torch.rand(24, generator=g) + 0.1
    zp, bias = torch.full((24,), 8.0), torch.randn(24, generator=g)
    a_sc, a_zp = torch.tensor([0.05]), torch.tensor([100.0])
    built = QLinearInt.build(IntWeights(codes, scale, zp, bits=4), ActQuant(bits=8, symmetric=False, scale=a_sc,
                             zero_point=a_zp), LayerExtras(bias=bias))  # fmt: skip
    flat = QLinearInt.from_codes(codes, scale, zp, w_bits=4, a_bits=8, a_symmetric=False, act_scale=a_sc,
                                 act_zero_point=a_zp, bias=bias)  # fmt: skip
    assert built.spec == flat.spec and built.spec.a_static and built.spec.weight_zero_point
    for (name, a), (_, b) in zip(built.state_dict().items(), flat.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="per-channel scale must have 24 elements"):
        IntWeights(codes, torch.rand(24, 2), bits=4)
    with pytest.raises(ValueError, match="act_timesteps needs act_scale"):
        ActQuant(timesteps=3)
    with pytest.raises(TypeError, match="w_bits"):
        QLinearInt.from_codes(codes, scale)

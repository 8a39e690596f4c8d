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

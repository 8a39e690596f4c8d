"""vqcore.convert for MPQ-DM-style models: static per-tensor activations with per-denoising-step tables, OMQ
mixed-width weights (split / padded layouts), integer 2-D convolutions (im2col), the Triton kernels of the new cases
in the interpreter, and the zoo ``digits-unet`` quantized with ``mpq-dm`` end to end.

Tolerances (float32, CPU reference path unless said otherwise):

* one converted layer vs its fake-quant layer on the same input: relative L2 error < 1e-5. The activation and weight
  codes are identical; only the float32 summation order differs (measured 5e-8 – 7e-7 on the zoo UNet's layers).
* whole models: a 1e-7 difference in one layer's output can move an input of the next quantized layer across a rounding
  boundary (one activation step), so errors grow with depth. Zoo digits-unet W4A8 (43 integer layers), one denoiser
  call: < 1e-2 relative (measured 1.2e-3 – 3.5e-3; the fake-quant model itself moves by up to 2.8e-3 when its input is
  perturbed by 1e-6 relative). Four DDIM steps: the converted model's samples are within 5e-2 relative of the
  fake-quant samples and closer to them than a third of the fake-quant-vs-FP distance (measured 2.3e-2 vs 1.2e-1).
* Triton kernels (interpreter) vs references: static quantizer codes bit-identical; layer outputs < 1e-5 relative.
"""

from __future__ import annotations

import copy
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from torch import nn  # noqa: E402

from vqcore import kernels  # noqa: E402
from vqcore.convert import (  # noqa: E402
    IntLinearSpec,
    QConv2dInt,
    QLinearInt,
    Unsupported,
    convert,
    int_weight_bytes,
    load_converted,
    mixed_width_container,
    save_converted,
)
from vqcore.kernels import ops  # noqa: E402
from vqcore.kernels import reference as ref  # noqa: E402
from vqcore.methods.mpqdm_layers import OMQQuantizer  # noqa: E402
from vqcore.methods.timerange import attach_step_tables  # noqa: E402
from vqcore.quant import QConv2d, QLinear, QuantSpec  # noqa: E402
from vqcore.quant.modules import QuantModule  # noqa: E402


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _calibrate_table(q, xs):
    """Fill row i of a static (tabled) activation quantizer from xs[i] (different ranges per row)."""
    with torch.no_grad():
        for i, x in enumerate(xs):
            q.calibrate(x, timestep=i if q.spec.timesteps else None)


def _omq(layer, n_bits, k, symmetric=False, seed=0):
    """Install an OMQ quantizer with k channels at n+1 and k at n−1 bits (random channels)."""
    out = layer.weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(out, generator=g)
    bits = torch.full((out,), n_bits, dtype=torch.long)
    bits[perm[:k]] = n_bits + 1
    bits[perm[k : 2 * k]] = n_bits - 1
    q = OMQQuantizer(QuantSpec(bits=n_bits, granularity="per_channel", symmetric=symmetric), bits)
    with torch.no_grad():
        q.calibrate(layer.effective_weight().detach())
    layer.weight_quantizer = q
    return bits


# ---- static activations and step tables ------------------------------------------------------------------------------
@pytest.mark.parametrize("a_sym", [False, True])
@pytest.mark.parametrize("table", [0, 3])
def test_static_activation_linear_matches_fake_quant_per_row(a_sym, table):
    torch.manual_seed(0)
    q = QLinear.from_float(nn.Linear(96, 40), QuantSpec(bits=4, granularity="per_channel"),
                           QuantSpec(bits=6, symmetric=a_sym, granularity="per_tensor", timesteps=table))
    q.set_smooth_scale(torch.rand(96) + 0.5)
    rows = max(table, 1)
    _calibrate_table(q.input_quantizer, [torch.randn(30, 96) * (1 + i) + 0.3 * i for i in range(rows)])
    with torch.no_grad():
        q.quantized_weight()
    net = nn.Sequential(q).eval()
    x = torch.randn(2, 9, 96) * 1.5 + 0.2
    y_fq = []
    with torch.no_grad():
        for r in range(rows):
            q.input_quantizer.set_timestep(r)
            y_fq.append(net(x))
        convert(net)
        layer = net[0]
        assert isinstance(layer, QLinearInt) and layer.spec.a_static and layer.spec.timesteps == table
        assert layer.act_scale.shape == (rows,) and layer.act_zero_point.dtype == torch.int32  # T scalars each
        for r in range(rows):
            layer.set_timestep(r)
            assert _rel(net(x), y_fq[r]) < 1e-5
    if table:
        assert _rel(y_fq[0], y_fq[-1]) > 1e-2  # the rows really differ: freezing one would be wrong
        with pytest.raises(ValueError, match="timestep index"):
            layer.set_timestep(table)
    assert "static per-tensor" in repr(layer)


class _TimedNet(nn.Module):
    """Two layers with 3-row activation tables (a linear and a conv), called as ``net(x, timestep)``."""

    def __init__(self, w_bits=4):
        super().__init__()
        torch.manual_seed(0)
        a = QuantSpec(bits=8, granularity="per_tensor", timesteps=3)
        self.conv = QConv2d.from_float(nn.Conv2d(3, 16, 3, padding=1), QuantSpec(bits=w_bits,
                                                                                granularity="per_channel"), a)
        self.lin = QLinear.from_float(nn.Linear(16, 8), QuantSpec(bits=w_bits, granularity="per_channel"), a)

    def forward(self, x, timestep):
        h = torch.relu(self.conv(x))
        return self.lin(h.permute(0, 2, 3, 1))


def _timed_net():
    net = _TimedNet().eval()
    with torch.no_grad():
        for i, scale in enumerate((4.0, 1.0, 0.25)):  # step k sees inputs of another magnitude
            x = torch.randn(2, 3, 6, 6) * scale
            net.conv.input_quantizer.calibrate(x, timestep=i)
            h = torch.relu(net.conv(x))
            net.lin.input_quantizer.calibrate(h.permute(0, 2, 3, 1), timestep=i)
        net.conv.quantized_weight()
        net.lin.quantized_weight()
    attach_step_tables(net, [999.0, 500.0, 1.0])
    return net


def test_step_selector_drives_the_converted_tables_and_save_load_keeps_it(tmp_path):
    net = _timed_net()
    x = torch.randn(2, 3, 6, 6)
    ts = (999, 700, 500, 1)
    with torch.no_grad():
        y_fq = [net(x, t) for t in ts]
        convert(net)
        assert isinstance(net.conv, QConv2dInt) and isinstance(net.lin, QLinearInt)
        y_int = []
        for t in ts:
            y_int.append(net(x, t))
            assert net.conv._t == net.vq_step_tables.index_of(t) == net.lin._t  # the selector set the rows
    for a, b in zip(y_int, y_fq):
        assert _rel(a, b) < 1e-4  # two chained layers (a code of the second may flip; see module docstring)
    assert _rel(y_int[0], y_int[-1]) > 1e-2
    save_converted(net, tmp_path / "ck")
    fresh = _TimedNet()
    fresh.conv, fresh.lin = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 8)  # a float model of the architecture
    load_converted(fresh, tmp_path / "ck")
    assert fresh.vq_step_tables.timesteps == [999.0, 500.0, 1.0]
    with torch.no_grad():
        for t, y in zip(ts, y_int):
            assert torch.equal(fresh(x, t), y)


# ---- OMQ mixed-width weights -----------------------------------------------------------------------------------------
def test_mixed_width_container_rules():
    def cb(*b):
        return torch.tensor(b)

    w, s = mixed_width_container(cb(3, 4, 4, 5))
    assert w == 4 and s.tolist() == [False, False, False, True]  # W4 OMQ: int4 + one split channel
    w, s = mixed_width_container(cb(3, 4, 4, 5), "padded")
    assert w == 5 and not s.any()  # int8 container, no split
    assert mixed_width_container(cb(2, 3, 4))[0] == 4 and not mixed_width_container(cb(2, 3, 4))[1].any()  # W3: int4
    assert mixed_width_container(cb(1, 2, 3))[0] == 3  # W2 (1-bit group): int4
    assert mixed_width_container(cb(5, 5, 5))[0] == 5  # all channels 5-bit: int8 beats splitting every row
    w, s = mixed_width_container(cb(7, 8, 9), "padded")
    assert w == 8 and s.tolist() == [False, False, True]  # 9 bits: always split (no 9-bit container)
    assert mixed_width_container(cb(5, 6, 7))[0] == 7
    with pytest.raises(ValueError, match="1, 9"):
        mixed_width_container(cb(8, 9, 10))
    with pytest.raises(ValueError, match="mixed_layout"):
        mixed_width_container(cb(4), "grouped")


@pytest.mark.parametrize(("n_bits", "w_sym"), [(2, False), (3, False), (4, False), (4, True), (8, False), (8, True)])
@pytest.mark.parametrize("layout", ["split", "padded"])
def test_omq_linear_matches_fake_quant(n_bits, layout, w_sym):
    """(Symmetric W2 is left out: its 1-bit group has no symmetric form, qmax = 0.)"""
    torch.manual_seed(n_bits)
    n, k = 40, 200
    layer = QLinear.from_float(nn.Linear(k, n), QuantSpec(bits=n_bits, granularity="per_channel"),
                               QuantSpec(bits=8, granularity="per_tensor", timesteps=2))  # fmt: skip
    layer.set_smooth_scale(torch.rand(k) + 0.5)
    bits = _omq(layer, n_bits, 4, symmetric=w_sym)
    _calibrate_table(layer.input_quantizer, [torch.randn(16, k), torch.randn(16, k) * 3])
    net = nn.Sequential(layer).eval()
    x = torch.randn(3, 11, k)
    with torch.no_grad():
        w_fq = layer.quantized_weight().detach().clone()
        layer.input_quantizer.set_timestep(1)
        y_fq = net(x)
        convert(net, mixed_layout=layout)
    m = net[0]
    width, split = mixed_width_container(bits, layout)
    assert m.spec.w_bits == width and m.spec.split_rows == int(split.sum())
    assert m.spec.packed == (width <= 4)
    if n_bits == 4:
        assert (m.spec.split_rows, m.spec.packed) == ((4, True) if layout == "split" else (0, False))
    if n_bits == 8:
        assert m.spec.split_rows == 4 and not m.spec.packed  # the 9-bit channels as two int8 rows
    if m.spec.split_rows:
        assert torch.equal(m.split_index.sort().values, torch.nonzero(split).flatten())
    codes = m.weight_codes()
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    assert int(codes.min()) >= lo and int(codes.max()) <= hi  # every stored code fits its container
    assert _rel(m.dequantized_weight(), w_fq) < 1e-6
    with torch.no_grad():
        m.set_timestep(1)
        assert _rel(net(x), y_fq) < 1e-5


def test_omq_split_storage_vs_padded_and_plain():
    """Storage of a W4 OMQ layer (k = 10 % at 5 and 3 bits): split = (N + k) int4 rows, padded = N int8 rows, a
    plain W4 layer N int4 rows; measured through the integer layers' buffers."""
    torch.manual_seed(0)
    n, k = 320, 1152

    def make(bits_k):
        layer = QLinear.from_float(nn.Linear(k, n, bias=False), QuantSpec(bits=4, granularity="per_channel"),
                                   QuantSpec(bits=8, granularity="per_tensor"))  # fmt: skip
        with torch.no_grad():
            layer.input_quantizer.calibrate(torch.randn(8, k))
        if bits_k:
            _omq(layer, 4, bits_k)
        return nn.Sequential(layer)

    plain = int_weight_bytes(convert(make(0)))
    split = int_weight_bytes(convert(make(32)))
    padded = int_weight_bytes(convert(make(32), mixed_layout="padded"))
    fp16 = n * k * 2
    codes_plain, codes_split, codes_padded = n * k // 2, (n + 32) * k // 2, n * k
    assert plain == codes_plain + 3 * 4 * n + 8  # + fp32 scale, Σŵ, scale·zp per row + one (Δ, zp)
    assert split == codes_split + 3 * 4 * (n + 32) + 8 * 32 + 8  # + the int64 split index
    assert padded == codes_padded + 3 * 4 * n + 8
    assert split / plain == pytest.approx(1.1, abs=0.01) and padded / plain == pytest.approx(2.0, abs=0.03)
    assert split / fp16 < 0.29 and padded / fp16 > 0.5
    st = OMQQuantizer(QuantSpec(bits=4, granularity="per_channel"),
                      torch.tensor([5] * 32 + [3] * 32 + [4] * 256)).storage_bits(k)  # fmt: skip
    assert st["int_split"] == codes_split * 8 and st["int_padded"] == codes_padded * 8 and st["packed"] == 4 * n * k


# ---- integer convolutions --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "geom",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=1),
        dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=2),
        dict(kernel_size=3, padding="same"),
    ],
)
@pytest.mark.parametrize("omq", [False, True])
def test_qconv2d_int_matches_fake_quant(geom, omq):
    torch.manual_seed(0)
    conv = QConv2d.from_float(nn.Conv2d(12, 24, **geom), QuantSpec(bits=4, granularity="per_channel"),
                              QuantSpec(bits=8, granularity="per_tensor"))  # fmt: skip
    conv.set_smooth_scale(torch.rand(12) + 0.5)
    if omq:
        _omq(conv, 4, 3)
    else:
        with torch.no_grad():
            conv.quantized_weight()
    x = torch.randn(2, 12, 9, 10) + 0.4
    with torch.no_grad():
        conv.input_quantizer.calibrate(x / conv.smooth_scale.view(1, -1, 1, 1))
        net = nn.Sequential(conv).eval()
        y_fq = net(x)
        convert(net)
        y = net(x)
    assert isinstance(net[0], QConv2dInt) and net[0].spec.split_rows == (3 if omq else 0)
    assert y.shape == y_fq.shape and y.is_contiguous()
    assert _rel(y, y_fq) < 1e-5
    with pytest.raises(ValueError, match=r"\[B, 12, H, W\]"):
        net[0](torch.randn(2, 11, 9, 10))


def test_convert_refuses_what_integer_convs_cannot_run(caplog):
    from vqcore.quant import QConv3d

    def conv(mod, a=None):
        q = (QConv3d if isinstance(mod, nn.Conv3d) else QConv2d).from_float(
            mod, QuantSpec(bits=4, granularity="per_channel"), QuantSpec(**(a or dict(granularity="per_tensor"))))
        with torch.no_grad():
            q.input_quantizer.calibrate(torch.randn(2, mod.in_channels, *([5] * (mod.weight.dim() - 2))))
            q.quantized_weight()
        return q

    cases = [
        (conv(nn.Conv2d(4, 8, 3, groups=2)), "grouped convolutions"),
        (conv(nn.Conv3d(4, 8, 3)), "3-D convolutions"),
        (conv(nn.Conv2d(4, 8, 3), dict(granularity="per_token")), "dynamic per_token activations"),
        (conv(nn.Conv2d(4, 8, 2, padding="same")), "asymmetric"),
    ]
    for q, why in cases:
        net = nn.Sequential(nn.Identity(), q)
        with pytest.raises(Unsupported, match=rf"^1: .*{why}"):
            convert(net)
        with caplog.at_level("WARNING"):
            convert(net, strict=False)
        assert net[1] is q  # kept fake-quant
    spec = dict(in_features=27, out_features=4, w_bits=4, kernel_size=(3, 3), in_channels=3)
    with pytest.raises(ValueError, match="static activations"):
        IntLinearSpec(**spec)
    with pytest.raises(ValueError, match="in_channels"):
        IntLinearSpec(**{**spec, "in_channels": 2, "a_static": True})


def test_static_quantizer_refusals():
    layer = QLinear.from_float(nn.Linear(32, 8), QuantSpec(bits=4, granularity="per_channel"),
                               QuantSpec(bits=8, granularity="per_tensor"))  # fmt: skip
    with torch.no_grad():
        layer(torch.randn(4, 32))
    layer.input_quantizer.zero_point = layer.input_quantizer.zero_point + 0.5  # a fractional (learned) zero point
    with pytest.raises(Unsupported, match="^0: .*zero points must be integers"):
        convert(nn.Sequential(layer))


# ---- Triton kernels (interpreter on CPU) -----------------------------------------------------------------------------
@pytest.mark.parametrize(("m", "k", "bits", "zp"), [(1, 7, 8, 0), (13, 96, 8, -37), (33, 300, 4, 3), (5, 2100, 6, 0)])
@pytest.mark.parametrize("smooth", [False, True])
def test_static_quantizer_triton_equals_reference(m, k, bits, zp, smooth):
    from vqcore.kernels import triton_kernels as tk

    g = torch.Generator().manual_seed(m * k)
    x = torch.randn(m, k, generator=g) * 3
    x[0, : min(k, 4)] = torch.tensor([0.5, -0.5, 1.5, 2.5])[: min(k, 4)] * 0.05  # exact .5 ties: round half to even
    s = torch.rand(k, generator=g) + 0.5 if smooth else None
    sc, z = torch.tensor([0.05]), torch.tensor([zp], dtype=torch.int32)
    want = ref.quantize_static_ref(x, s, sc, z, bits)
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the compiled kernel on a GPU, the interpreter on CPU
    for cfg in (None, {"ROWS": 2, "BLOCK_K": 32}):  # one K block, and a K loop over several
        got = tk.quantize_static(x.to(dev), None if s is None else s.to(dev), sc.to(dev), z.to(dev), bits, config=cfg)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and torch.equal(a.cpu(), b)
    lo, hi = ref.qrange(bits, True)
    assert int(want[0].min()) >= lo and int(want[0].max()) <= hi


def test_static_quantizer_public_api_and_opcheck():
    x = torch.randn(6, 2, 40)
    a = kernels.quantize_static(x, torch.tensor([0.02]), torch.tensor([-3], dtype=torch.int32), 8)
    assert a.codes.shape == (12, 40) and torch.equal(a.scale, torch.full((12,), 0.02))
    assert torch.equal(a.zero_point, torch.full((12,), -3, dtype=torch.int32))
    torch.library.opcheck(ops.quantize_static_op, (x.reshape(12, 40), torch.rand(40) + 0.5, torch.tensor([0.02]),
                                                   torch.tensor([5], dtype=torch.int32), 6))  # fmt: skip
    with pytest.raises(ValueError, match="one element"):
        kernels.quantize_static(x, torch.ones(2), torch.zeros(1, dtype=torch.int32))


def test_converted_omq_and_conv_layers_on_the_triton_path(monkeypatch):
    """The converted layers with the Triton kernels equal the reference path: split OMQ rows with a static step table,
    and an integer conv with zero-point padding and split 9-bit rows. Without a GPU the kernels run in the interpreter
    (``kernels._direct`` forced on for CPU tensors); with one, the layers run on CUDA (the normal dispatch)."""
    torch.manual_seed(0)
    lin = QLinear.from_float(nn.Linear(144, 48), QuantSpec(bits=4, granularity="per_channel"),
                             QuantSpec(bits=8, granularity="per_tensor", timesteps=2))  # fmt: skip
    _omq(lin, 4, 5)
    _calibrate_table(lin.input_quantizer, [torch.randn(8, 144), torch.randn(8, 144) * 2 + 1])
    conv = QConv2d.from_float(nn.Conv2d(8, 24, 3, padding=1, stride=2), QuantSpec(bits=8, granularity="per_channel"),
                              QuantSpec(bits=8, granularity="per_tensor"))  # fmt: skip
    _omq(conv, 8, 3)  # 9-bit channels as split int8 rows
    xc = torch.randn(2, 8, 7, 9) + 0.5
    with torch.no_grad():
        conv.input_quantizer.calibrate(xc)
    net = convert(nn.Sequential(lin, conv))
    net[0].set_timestep(1)
    x = torch.randn(30, 144)
    with torch.no_grad():
        y_ref, yc_ref = net[0](x), net[1](xc)
        if torch.cuda.is_available():
            net.cuda()
            x, xc = x.cuda(), xc.cuda()
        else:
            monkeypatch.setattr(kernels, "_direct", lambda t: True)
        y_tri, yc_tri = net[0](x).cpu(), net[1](xc).cpu()
    assert net[0].spec.split_rows == 5 and net[1].spec.split_rows == 3
    assert _rel(y_tri, y_ref) < 1e-5 and _rel(yc_tri, yc_ref) < 1e-5


def test_converted_static_and_conv_layers_compile_fullgraph():
    net = convert(_timed_net())
    x = torch.randn(2, 3, 6, 6)
    f = torch.compile(lambda a: net.lin(torch.relu(net.conv(a)).permute(0, 2, 3, 1)), backend="aot_eager",
                      fullgraph=True)  # fmt: skip
    with torch.no_grad():
        net.conv.set_timestep(2)
        net.lin.set_timestep(2)
        assert torch.allclose(f(x), net(x, 1), rtol=1e-5, atol=1e-6)


# ---- the zoo digits-unet quantized with mpq-dm -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_mpqdm():
    import vqcore
    from vqcore.zoo import load
    from vqcore.zoo.bench import _calibration

    torch.manual_seed(0)
    gen = load("digits-unet")
    calib = _calibration(gen, torch.tensor([1, 4]), 4, 1.0, 50_000, 2**28)
    q = vqcore.quantize(gen, method="mpq-dm", w_bits=4, a_bits=8, calib=calib, iters=1, batch_size=2,
                        search_items=4, k_fractions=(0.1,), progress=False)  # fmt: skip
    return gen, q


@pytest.mark.slow
def test_zoo_digits_unet_mpqdm_converts_samples_and_round_trips(zoo_mpqdm, tmp_path):
    from vqcore.zoo import load
    from vqcore.zoo.sampling import sample

    gen, q = zoo_mpqdm
    qi = convert(copy.deepcopy(q))
    fq_layers = {n: m for n, m in q.named_modules() if isinstance(m, QuantModule)}
    int_layers = {n: m for n, m in qi.named_modules() if isinstance(m, QLinearInt)}
    assert set(int_layers) == set(fq_layers)  # every quantized layer converted (convs included)
    assert sum(isinstance(m, QConv2dInt) for m in int_layers.values()) >= 25
    assert all(m.spec.timesteps == 4 for m in int_layers.values())
    assert sum(m.spec.split_rows > 0 for m in int_layers.values()) >= 30  # OMQ n+1 channels as split int4 rows
    assert sum(m.spec.w_bits == 8 for m in int_layers.values()) == 4  # first three + last layer: W8A8
    # each integer layer on the inputs its fake-quant layer saw (timestep 499 → row 2)
    seen, hooks = {}, []
    for n, m in fq_layers.items():
        hooks.append(m.register_forward_hook(lambda mod, a, o, n=n: seen.__setitem__(n, (a[0], o))))
    x, lab = torch.randn(2, 1, 16, 16), torch.tensor([3, 5])
    t = torch.full((2,), 499)
    with torch.no_grad():
        y_fq = q(x, t, lab)
        y_int = qi(x, t, lab)
        for h in hooks:
            h.remove()
        worst = max(_rel(int_layers[n](a), o) for n, (a, o) in seen.items())
    assert all(m._t == 2 for m in int_layers.values())
    assert worst < 1e-5
    assert _rel(y_int, y_fq) < 1e-2
    # a few DDIM steps: the converted model follows the fake-quant model (see module docstring)
    labels = torch.tensor([3, 5, 7])
    s_fp = sample(gen, labels, num_steps=4, seed=1)
    s_fq = sample(q, labels, num_steps=4, seed=1)
    s_int = sample(qi, labels, num_steps=4, seed=1)
    assert _rel(s_int, s_fq) < 5e-2 and _rel(s_int, s_fq) < _rel(s_fq, s_fp) / 3
    # storage: integer layers vs the fp16 weights of the same layers
    fp16 = sum(m.weight.numel() * 2 for m in fq_layers.values())
    assert sum(int_weight_bytes(m) for m in int_layers.values()) < 0.40 * fp16
    # save / load into a fresh float zoo model
    save_converted(qi, tmp_path / "int")
    fresh = load("digits-unet")
    load_converted(fresh, tmp_path / "int")
    assert fresh.vq_step_tables.timesteps == qi.vq_step_tables.timesteps
    assert torch.equal(sample(fresh, labels, num_steps=4, seed=1), s_int)

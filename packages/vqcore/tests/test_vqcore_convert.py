"""vqcore.convert: fake-quant linears → QLinearInt (packed integer weights), outputs, save/load, sizes, refusals.

``_StandInQLinear`` implements the fake-quant contract that ``convert`` reads (``weight``, ``bias``,
``weight_quantizer``/``input_quantizer`` with ``bits``/``symmetric``/``granularity``/``group_size``/``dynamic``,
optional ``smooth_scale`` and ``side_branch.down/.up``, ``integer_weight() -> (codes, scale, zero_point)``) with the
ViDiT-Q / Q-VDiT numerics (per-token dynamic activations, min-max weights, y = Q(x/s)·Q(W·s)ᵀ + up(down(x̂ or x/s)));
the last tests convert H1's real ``vqcore.quant.QLinear``.

Tolerance of converted vs fake-quant outputs (float32, CPU reference path): relative L2 error < 1e-4 for the two-layer
stand-in net (the integer codes of one layer are identical; float32 summation order can move a code of the next layer
across a rounding boundary) and < 1e-5 for single real ``QLinear`` layers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vqcore.convert import IntLinearSpec, QLinearInt, convert, linear_weight_bytes, load_converted, save_converted


class _Quantizer(nn.Module):
    def __init__(self, bits, symmetric, granularity, group_size=0, dynamic=True):
        super().__init__()
        self.bits, self.symmetric, self.granularity = bits, symmetric, granularity
        self.group_size, self.dynamic = group_size, dynamic


class _SideBranch(nn.Module):
    def __init__(self, k, n, r, on_quantized_input):
        super().__init__()
        self.down = nn.Linear(k, r, bias=False)
        self.up = nn.Linear(r, n, bias=False)
        self.on_quantized_input = on_quantized_input


class _StandInQLinear(nn.Module):
    def __init__(
        self,
        lin: nn.Linear,
        *,
        w_bits=4,
        a_bits=8,
        w_sym=True,
        a_sym=True,
        group=0,
        smooth=False,
        rank=0,
        side_on_q=True,
    ):
        super().__init__()
        self.weight, self.bias = lin.weight, lin.bias
        gran = "per_group" if group else "per_channel"
        self.weight_quantizer = _Quantizer(w_bits, w_sym, gran, group, dynamic=False)
        self.input_quantizer = _Quantizer(a_bits, a_sym, "per_token")
        k, n = lin.in_features, lin.out_features
        self.smooth_scale = nn.Parameter(torch.rand(k) + 0.5) if smooth else None
        self.side_branch = _SideBranch(k, n, rank, side_on_q) if rank else None

    def _w(self):
        return self.weight * self.smooth_scale if self.smooth_scale is not None else self.weight

    def integer_weight(self):
        wq = self.weight_quantizer
        w = self._w().detach()
        n, k = w.shape
        g = wq.group_size or k
        wg = w.reshape(n, k // g, g)
        if wq.symmetric:
            qmax = 2 ** (wq.bits - 1) - 1
            scale = wg.abs().amax(-1).clamp_min(1e-8) / qmax
            codes = torch.round(wg / scale[..., None]).clamp(-qmax - 1, qmax)
            zp = torch.zeros_like(scale)
        else:
            levels = 2**wq.bits - 1
            lo, hi = wg.amin(-1).clamp_max(0), wg.amax(-1).clamp_min(0)
            scale = (hi - lo).clamp_min(1e-8) / levels
            zp = torch.round(-lo / scale)
            codes = (torch.round(wg / scale[..., None]) + zp[..., None]).clamp(0, levels)
        return codes.reshape(n, k), scale.squeeze(-1) if not wq.group_size else scale, zp.squeeze(-1)

    def forward(self, x):
        codes, scale, zp = self.integer_weight()
        n, k = codes.shape
        g = self.weight_quantizer.group_size or k
        w_hat = ((codes.reshape(n, k // g, g) - zp.reshape(n, -1, 1)) * scale.reshape(n, -1, 1)).reshape(n, k)
        xs = x / self.smooth_scale if self.smooth_scale is not None else x
        aq = self.input_quantizer
        if aq.symmetric:
            qmax = 2 ** (aq.bits - 1) - 1
            s = xs.abs().amax(-1, keepdim=True).clamp_min(1e-8) / qmax
            x_hat = torch.round(xs / s).clamp(-qmax - 1, qmax) * s
        else:
            levels = 2**aq.bits - 1
            lo, hi = xs.amin(-1, keepdim=True).clamp_max(0), xs.amax(-1, keepdim=True).clamp_min(0)
            s = (hi - lo).clamp_min(1e-8) / levels
            z = torch.round(-lo / s)
            x_hat = ((torch.round(xs / s) + z).clamp(0, levels) - z) * s
        y = x_hat @ w_hat.t()
        if self.bias is not None:
            y = y + self.bias
        if self.side_branch is not None:
            y = y + self.side_branch.up(self.side_branch.down(x_hat if self.side_branch.on_quantized_input else xs))
        return y


class _Net(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = _StandInQLinear(nn.Linear(256, 384), **kw)
        self.act = nn.GELU()
        self.fc2 = _StandInQLinear(nn.Linear(384, 256), **kw)
        self.head = nn.Linear(256, 10)  # stays float

    def forward(self, x):
        return self.head(self.fc2(self.act(self.fc1(x))))


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(
    "kw",
    [
        dict(w_bits=4, a_bits=8),
        dict(w_bits=8, a_bits=8, a_sym=False, smooth=True),
        dict(w_bits=4, a_bits=6, w_sym=False, a_sym=False, rank=8),
        dict(w_bits=3, a_bits=8, group=64, smooth=True, rank=4),
        dict(w_bits=4, a_bits=8, group=128, smooth=True, rank=4, side_on_q=False),
        dict(w_bits=6, a_bits=8, group=128),
    ],
)
def test_convert_matches_fake_quant(kw):
    net = _Net(**kw).eval()
    x = torch.randn(3, 7, 256)
    with torch.no_grad():
        y_fq = net(x)
        convert(net)
        assert isinstance(net.fc1, QLinearInt) and isinstance(net.fc2, QLinearInt) and isinstance(net.head, nn.Linear)
        assert net.fc1.spec.packed == (kw["w_bits"] <= 4)
        y_int = net(x)
    assert y_int.shape == y_fq.shape
    assert _rel(y_int, y_fq) < 1e-4


def test_save_load_roundtrip_and_size(tmp_path):
    net = _Net(w_bits=4, a_bits=8, rank=4, a_sym=False).eval()
    fp16_bytes = sum(m.weight.numel() * 2 for m in (net.fc1, net.fc2))
    convert(net)
    x = torch.randn(5, 256)
    with torch.no_grad():
        y = net(x)
    save_converted(net, tmp_path / "ckpt")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert state["fc1.qweight"].dtype == torch.int8 and state["fc1.qweight"].shape == (384, 128)  # 2 codes/byte
    assert "fc1.weight" not in state
    fresh = _Net(w_bits=4, a_bits=8, rank=4, a_sym=False)  # a different float model of the same architecture
    torch.manual_seed(123)
    for p in fresh.parameters():
        p.data.normal_()
    load_converted(fresh, tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
    ratio = linear_weight_bytes(nn.ModuleList([net.fc1, net.fc2])) / fp16_bytes
    assert 0.25 < ratio < 0.27  # int4 codes (1/4 of fp16) + fp32 scale and Σŵ per output channel
    assert linear_weight_bytes(net) > linear_weight_bytes(nn.ModuleList([net.fc1, net.fc2]))  # float head counted
    with pytest.raises(ValueError, match="QLinearInt"):
        save_converted(nn.Sequential(nn.Linear(2, 2)), tmp_path / "none")


def test_convert_refuses_what_kernels_cannot_run():
    net = _Net(w_bits=4, a_bits=8)
    net.fc1.input_quantizer.dynamic = False  # static, but one range per token: no stored per-tensor (Δ, zp)
    with pytest.raises(ValueError, match="^fc1: static per_token activation quantization"):
        convert(net)
    assert isinstance(net.fc2, _StandInQLinear)  # nothing swapped when a layer is refused
    net = _Net(w_bits=4, a_bits=8, w_sym=False, group=64)
    with pytest.raises(ValueError, match="per-group"):
        convert(net)
    net = _Net(w_bits=4, a_bits=8)
    net.fc2.input_quantizer.granularity = "per_tensor"
    with pytest.raises(ValueError, match="fc2"):
        convert(net)
    with pytest.raises(TypeError):
        convert("model")
    with pytest.raises(ValueError, match="group_size"):
        IntLinearSpec(in_features=8, out_features=8, w_bits=4, group_size=32)


def test_qlinearint_from_linear_bf16_and_shapes():
    lin = nn.Linear(300, 70).to(torch.bfloat16)
    q = QLinearInt.from_linear(lin, w_bits=4, a_bits=8)
    x = torch.randn(2, 3, 300, dtype=torch.bfloat16)
    y = q(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 70)
    assert _rel(y.float(), lin(x).float()) < 0.15  # W4 round-to-nearest error on random weights
    assert "W4(packed int4)" in repr(q)
    with pytest.raises(ValueError, match="300"):
        q(torch.randn(4, 299, dtype=torch.bfloat16))


@pytest.mark.gpu
@pytest.mark.parametrize("kw", [dict(w_bits=4, a_bits=8, smooth=True, rank=8), dict(w_bits=8, a_bits=8, a_sym=False)])
def test_convert_gpu_triton_matches_cpu_reference(kw):
    """Triton (GPU) vs reference (CPU) path of the same converted model.

    One layer: the quantizer's codes are bit-identical (IEEE divisions in the kernel), so only float32 summation order
    differs (measured ~1e-6; bound 5e-5). Two chained quantized layers: a 1e-6 difference in fc1's output can move an
    fc2 input across a rounding boundary (one 8-bit step, 1/127 of the row range), so the network bound is 1e-3
    (measured 1.4e-4 for the first case on an H100, 2026-11-24)."""
    net = _Net(**kw).eval()
    x = torch.randn(4, 300, 256)
    with torch.no_grad():
        y_fq = net(x)
        convert(net)
        y_cpu = net(x)
        h_cpu = net.fc1(x)
        net.cuda()
        h_gpu = net.fc1(x.cuda()).cpu()
        y_gpu = net(x.cuda()).cpu()
    assert _rel(h_gpu, h_cpu) < 5e-5
    assert _rel(y_gpu, y_cpu) < 1e-3
    assert _rel(y_gpu, y_fq) < 1e-3


def test_converted_model_compiles_fullgraph():
    """QLinearInt goes through the registered custom ops, so torch.compile traces it without graph breaks."""
    net = convert(_Net(w_bits=4, a_bits=8, a_sym=False, smooth=True, rank=4).eval())
    x = torch.randn(6, 256)
    with torch.no_grad():
        y = net(x)
        y_c = torch.compile(net, backend="aot_eager", fullgraph=True)(x)
    assert torch.allclose(y_c, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    [
        # weight spec, activation spec, smoothing, side branch (rank, on_quantized_input)
        (dict(bits=4, granularity="per_channel"), dict(bits=8, granularity="per_token"), True, (8, True)),
        (
            dict(bits=4, symmetric=True, granularity="per_group", group_size=128),
            dict(bits=8, symmetric=True, granularity="per_token"),
            False,
            None,
        ),
        (dict(bits=8, granularity="per_channel"), dict(bits=6, granularity="per_token_shared"), True, (4, False)),
        (dict(bits=3, granularity="per_tensor"), dict(bits=8, granularity="per_token"), False, None),
    ],
)
def test_convert_real_qlinear_matches_fake_quant(case):
    """vqcore.quant.QLinear (H1's fake-quant layer) → QLinearInt: one layer, same codes, float32 rounding only."""
    from vqcore.quant import LowRankBranch, QLinear, QuantSpec

    w_kw, a_kw, smooth, side = case
    torch.manual_seed(1)
    q = QLinear.from_float(nn.Linear(256, 96), QuantSpec(**w_kw), QuantSpec(**a_kw))
    if smooth:
        q.set_smooth_scale(torch.rand(256) + 0.5)
    if side:
        q.side_branch = LowRankBranch(256, 96, side[0], on_quantized_input=side[1])
        nn.init.normal_(q.side_branch.up.weight, std=0.05)
    net = nn.Sequential(q).eval()
    x = torch.randn(2, 50, 256) * 2 + 0.2
    with torch.no_grad():
        y_fq = net(x)
        convert(net)
        assert isinstance(net[0], QLinearInt)
        y_int = net(x)
    assert _rel(y_int, y_fq) < 1e-5


def test_convert_real_qlinear_refusals_and_non_strict(caplog):
    from vqcore.quant import QLinear, QuantSpec

    def layer(a_kw, w_kw=None):
        return QLinear.from_float(nn.Linear(128, 64), QuantSpec(**(w_kw or dict(bits=4, granularity="per_channel"))),
                                  QuantSpec(**a_kw))  # fmt: skip

    net = nn.Sequential(layer(dict(bits=8, granularity="per_token")), layer(dict(bits=8, granularity="per_tensor")))
    with pytest.raises(ValueError, match=r"^1: static activation quantizer is not calibrated"):
        convert(net)  # a static range that was never calibrated has no integer form yet
    assert not isinstance(net[0], QLinearInt)  # nothing swapped
    with caplog.at_level("WARNING"):
        convert(net, strict=False)
    assert isinstance(net[0], QLinearInt) and not isinstance(net[1], QLinearInt)
    assert "kept fake-quant" in caplog.text
    with torch.no_grad():
        net[1](torch.randn(4, 128))  # calibrates the static per-tensor range on first use
    convert(net)
    assert isinstance(net[1], QLinearInt) and net[1].spec.a_static
    per_channel_act = nn.Sequential(layer(dict(bits=8, granularity="per_channel")))
    with torch.no_grad():
        per_channel_act(torch.randn(128, 128))
    with pytest.raises(ValueError, match=r"^0: static per_channel activation quantization"):
        convert(per_channel_act)
    wonly = nn.Sequential(layer(dict(bits=8, granularity="per_token")))
    wonly[0].quant_input = False
    with pytest.raises(ValueError, match="weight-only"):
        convert(wonly)
    asym_group = nn.Sequential(layer(dict(bits=8, granularity="per_token"), dict(bits=4, granularity="per_group",
                                                                                 group_size=64)))  # fmt: skip
    with torch.no_grad():
        asym_group[0].quantized_weight()
    with pytest.raises(ValueError, match="per-group"):
        convert(asym_group)


def _timerange_net():
    """Two real QLinears, the first switched per timestep range by a ViDiT-Q ``TimeRangeSwitch`` (as
    ``vidit-q(timeranges=...)`` builds it), the second plain."""
    from vqcore.methods.timerange import TimeRangeSwitch
    from vqcore.quant import QLinear, QuantSpec

    torch.manual_seed(0)
    wspec, aspec = QuantSpec(bits=4, granularity="per_channel"), QuantSpec(bits=8, granularity="per_token")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = QLinear.from_float(nn.Linear(128, 64), wspec, aspec)
            self.b = QLinear.from_float(nn.Linear(64, 32), wspec, aspec)

        def forward(self, x, timestep):
            return self.b(self.a(x))

    net = Net()
    with torch.no_grad():
        net.a.set_smooth_scale(torch.ones(128))
        net.a.quantized_weight()
        net.b.quantized_weight()
        wq = net.a.weight_quantizer
        shapes = [("a", {"s": [2, 128], "ws": [2, *wq.scale.shape], "wz": [2, *wq.zero_point.shape]})]
        sw = TimeRangeSwitch([[0, 500], [501, 1000]], shapes)
        sw.bind(net)
        sw.record(0)
        net.a.set_smooth_scale(torch.rand(128) + 0.5)
        net.a.weight_quantizer.initialized = False
        net.a.quantized_weight()
        sw.record(1)
    sw.vq_attach(net)
    net.add_module("vq_timerange", sw)
    return net


def test_convert_refuses_vidit_q_time_ranges(caplog):
    net = _timerange_net()
    x = torch.randn(4, 128)
    with torch.no_grad():
        y0, y1 = net(x, timestep=100), net(x, timestep=900)
    assert _rel(y0, y1) > 1e-3  # the two ranges really differ: freezing one would be wrong
    with pytest.raises(ValueError, match=r"^a: .*2 vidit-q time ranges"):
        convert(net)
    assert not isinstance(net.a, QLinearInt) and not isinstance(net.b, QLinearInt)  # nothing swapped
    with caplog.at_level("WARNING"):
        convert(net, strict=False)
    assert not isinstance(net.a, QLinearInt) and isinstance(net.b, QLinearInt)
    assert "time ranges" in caplog.text
    with torch.no_grad():  # the kept layer still switches: outputs follow the timestep again
        assert _rel(net(x, timestep=100), y0) < 1e-4 and _rel(net(x, timestep=900), y1) < 1e-4


def test_convert_refuses_per_timestep_weight_tables():
    from vqcore.methods.timerange import attach_step_tables
    from vqcore.quant import QLinear, QuantSpec

    torch.manual_seed(0)
    w_table = QuantSpec(bits=4, granularity="per_channel", timesteps=3)
    net = nn.Sequential(
        QLinear.from_float(
            nn.Linear(64, 32), QuantSpec(bits=4, granularity="per_channel"), QuantSpec(bits=8, granularity="per_token")
        ),
        QLinear.from_float(nn.Linear(32, 16), w_table, QuantSpec(bits=8, granularity="per_token")),
    )
    with torch.no_grad():
        net[0].quantized_weight()
        net[1].weight_quantizer.calibrate(net[1].weight)
    attach_step_tables(net, [999.0, 500.0, 1.0])
    with pytest.raises(ValueError, match=r"^1: weight_quantizer has a per-timestep step table \(3 rows"):
        convert(net)
    assert not isinstance(net[0], QLinearInt)
    convert(net, strict=False)
    assert isinstance(net[0], QLinearInt) and not isinstance(net[1], QLinearInt)
    # a static *activation* table converts (the integer layer keeps every row; see test_vqcore_convert_mpqdm.py),
    # but only once calibrated
    act_table = nn.Sequential(
        QLinear.from_float(
            nn.Linear(64, 32),
            QuantSpec(bits=4, granularity="per_channel"),
            QuantSpec(bits=8, granularity="per_tensor", timesteps=2),
        )
    )
    with pytest.raises(ValueError, match=r"^0: static activation quantizer is not calibrated"):
        convert(act_table)
    with torch.no_grad():
        act_table[0].input_quantizer.calibrate(torch.randn(8, 64))
    convert(act_table)
    assert isinstance(act_table[0], QLinearInt) and act_table[0].spec.timesteps == 2

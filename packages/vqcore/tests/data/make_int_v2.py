"""Writes ``tests/data/int_v2/``: a tiny model converted and saved by vqcore's ``vqcore-int/2`` writer as it was
before ``vqcore.convert`` became a package (2026-12-08), plus the integer model's outputs on a fixed input.
``test_vqcore_convert_legacy.py`` loads it with the current code. Rerun only to refresh the file on purpose:
``.venv/bin/python packages/vqcore/tests/data/make_int_v2.py``.

The model covers every kind of stored layer: a 2-D convolution with a 3-row static activation table and mixed-width
(OMQ, split-layout) weights, a linear on the same table, and a dynamic per-token linear with a smoothing vector, a
per-group W4 weight and a low-rank side branch."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from vqcore.convert import convert, save_converted
from vqcore.methods.mpqdm_layers import OMQQuantizer
from vqcore.methods.timerange import attach_step_tables
from vqcore.quant import QConv2d, QLinear, QuantSpec

TIMESTEPS = [999.0, 500.0, 1.0]
CALLS = (999, 700, 1)


class LegacyNet(nn.Module):
    """The float architecture (the test rebuilds it and loads the saved integer layers into it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.lin = nn.Linear(16, 64)
        self.head = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor, timestep: float) -> torch.Tensor:
        h = torch.relu(self.conv(x)).permute(0, 2, 3, 1)
        return self.head(torch.relu(self.lin(h)))


def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))


def build() -> nn.Module:
    torch.manual_seed(0)
    net = LegacyNet().eval()
    table = QuantSpec(bits=8, granularity="per_tensor", timesteps=3)
    net.conv = QConv2d.from_float(net.conv, QuantSpec(bits=4, granularity="per_channel"), table)
    net.lin = QLinear.from_float(net.lin, QuantSpec(bits=4, granularity="per_channel"), table)
    net.head = QLinear.from_float(net.head, QuantSpec(bits=4, granularity="per_group", group_size=64, symmetric=True),
                                  QuantSpec(bits=8, granularity="per_token"))  # fmt: skip
    net.head.set_smooth_scale(torch.rand(64) + 0.5)
    bits = torch.full((16,), 4, dtype=torch.long)
    bits[:2], bits[2:4] = 5, 3
    omq = OMQQuantizer(QuantSpec(bits=4, granularity="per_channel", symmetric=False), bits)
    with torch.no_grad():
        omq.calibrate(net.conv.effective_weight().detach())
        net.conv.weight_quantizer = omq
        for i, scale in enumerate((4.0, 1.0, 0.25)):
            x = torch.randn(2, 3, 6, 6) * scale
            net.conv.input_quantizer.calibrate(x, timestep=i)
            h = torch.relu(net.conv(x)).permute(0, 2, 3, 1)
            net.lin.input_quantizer.calibrate(h, timestep=i)
        net.lin.quantized_weight()
        net.head.quantized_weight()
    attach_step_tables(net, TIMESTEPS)
    return net


def main() -> None:
    out = Path(__file__).parent / "int_v2"
    net = convert(build())
    with torch.no_grad():
        ys = {f"y_{t}": net(inputs(), t).contiguous() for t in CALLS}
    save_converted(net, out)
    save_file(ys, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main()

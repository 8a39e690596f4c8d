"""``python -m vqcore.smoke``: quantize, save/load and convert a small model in seconds, with core dependencies only."""

from __future__ import annotations

import tempfile

import torch
from torch import nn


def main() -> None:
    import vqcore

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)).eval()
    x = torch.randn(4, 10, 64)
    calib = [{"input": torch.randn(8, 10, 64)}]
    q = vqcore.quantize(model, method="rtn", w_bits=4, a_bits=8, calib=calib, kind="dit")
    with torch.no_grad():
        ref, fake = model(x), q(x)
        rel = ((fake - ref).pow(2).mean() / ref.pow(2).mean()).item()
        if not 0 < rel < 0.05:
            raise RuntimeError(f"W4A8 relative error {rel:.4f} is out of the expected range")
        with tempfile.TemporaryDirectory() as tmp:
            vqcore.save(q, f"{tmp}/q")
            fresh = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32))
            fresh.load_state_dict(model.state_dict())
            if not torch.equal(vqcore.load(f"{tmp}/q", fresh)(x), fake):
                raise RuntimeError("save/load round trip changed the outputs")
        integer = vqcore.convert(q)(x)
        if not torch.allclose(integer, fake, atol=1e-4, rtol=1e-3):
            raise RuntimeError("integer model (CPU reference kernels) differs from the fake-quant model")
    print(f"vqcore smoke OK: W4A8 relative error {rel:.4f}; save/load and integer conversion match")


if __name__ == "__main__":
    main()

"""``python -m walmafa.smoke``: a tiny end-to-end check (build, scan check, 2 training steps, eval, save/load, the
shipped weights)."""

from __future__ import annotations

import tempfile

import torch


def main() -> None:
    from commons.data.lol import SyntheticLowLightDataset

    from . import Enhancer, TrainConfig, selective_scan_chunked, selective_scan_sequential

    g = torch.Generator().manual_seed(0)
    x, dt = torch.randn(1, 4, 19, generator=g), torch.rand(1, 4, 19, generator=g)
    A, B, C = -torch.rand(4, 3, generator=g), torch.randn(1, 3, 19, generator=g), torch.randn(1, 3, 19, generator=g)
    if not torch.allclose(selective_scan_chunked(x, dt, A, B, C, chunk_size=4),
                          selective_scan_sequential(x, dt, A, B, C), atol=1e-5):
        raise RuntimeError("chunked scan disagrees with the sequential reference")
    train = SyntheticLowLightDataset("train", size=32, variants=1)
    test = SyntheticLowLightDataset("test", size=32, variants=1)
    enh = Enhancer("walmafa", device="cpu", dim=8, num_blocks=(1, 1, 1), d_state=4)
    hist = enh.fit(train, TrainConfig(steps=2, batch_size=2, patch_size=32, warmup_steps=1, log_every=1),
                   progress=False)
    if not all(torch.isfinite(torch.tensor(hist["loss"]))):
        raise RuntimeError(f"non-finite training loss: {hist['loss']}")
    res = enh.evaluate(test)
    with tempfile.TemporaryDirectory() as tmp:
        enh.save(tmp, overwrite=True)
        again = Enhancer.load(tmp, device="cpu")
        if not torch.allclose(again.enhance(test[0][0]), enh.enhance(test[0][0]), atol=1e-6):
            raise RuntimeError("save/load round trip changed the output")
    shipped = Enhancer.pretrained(device="cpu").enhance(test[0][0])  # the shipped weights load and run
    if shipped.shape != test[0][0].shape or not torch.isfinite(shipped).all():
        raise RuntimeError("the shipped weights produced a wrong or non-finite output")
    print(f"walmafa smoke OK: loss {hist['loss'][-1]:.3f}, PSNR {res['psnr']:.2f} dB; shipped weights load")


if __name__ == "__main__":
    main()

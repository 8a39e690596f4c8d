"""``python -m commons.smoke``: a few-second end-to-end check of an installed ``commons``."""

from __future__ import annotations

import tempfile

import torch


def main() -> None:
    from commons.device import resolve_device, seed_everything
    from commons.io import load_checkpoint, save_checkpoint
    from commons.metrics import psnr, topk_accuracy

    seed_everything(0)
    device = resolve_device("auto")
    x = torch.rand(2, 3, 16, 16, device=device)
    if not psnr(x, x) == float("inf"):
        raise RuntimeError("psnr of identical images must be inf")
    if topk_accuracy(torch.eye(4), torch.arange(4), topk=1) != 1.0:
        raise RuntimeError("top-1 accuracy of a perfect classifier must be 1")
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, {"w": x.cpu()}, {"name": "smoke"}, overwrite=True)
        state, config = load_checkpoint(tmp)
        if not torch.equal(state["w"], x.cpu()) or config["name"] != "smoke":
            raise RuntimeError("checkpoint round trip changed the data")
    print(f"commons smoke OK on {device}")


if __name__ == "__main__":
    main()

"""Regenerate ``repdistiller_manifest.json`` from the official RepDistiller model code (not shipped here).

    git clone https://github.com/HobbitLong/RepDistiller /tmp/RepDistiller
    python packages/kdrl/tests/data/make_repdistiller_manifest.py /tmp/RepDistiller

For every official ``model_dict`` architecture it records the number of state-dict entries and a SHA-256 of the
sorted ``key:shape`` list; for the small ones it also records every key with its shape and the official model's
logits (eval mode, 100 classes) on a fixed input with weights filled by :func:`fill_deterministic` (no RNG, so the
test can rebuild the same state dict on any machine). ``tests/test_kdrl_official.py`` checks kdrl's models against it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import torch

FULL = ["resnet8", "resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"]


def fill_deterministic(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights from sines of the entry index (BN variances in [0.5, 1.5], counters 0): same on every machine."""
    out = {}
    for i, (key, value) in enumerate(sorted(state.items())):
        if not value.is_floating_point():
            out[key] = torch.zeros_like(value)
            continue
        t = torch.arange(value.numel(), dtype=torch.float64)
        wave = torch.sin(0.37 * t + 0.91 * i)
        scale = 1.0 / math.sqrt(max(1, value[0].numel() if value.dim() > 1 else 1))
        if key.endswith("running_var"):
            v = 1.0 + 0.5 * wave
        elif key.endswith("running_mean"):
            v = 0.1 * wave
        elif key.endswith(".weight") and value.dim() == 1:  # BN gamma
            v = 1.0 + 0.2 * wave
        else:
            v = 1.7 * scale * wave
        out[key] = v.reshape(value.shape).to(value.dtype)
    return out


def fixed_input() -> torch.Tensor:
    t = torch.arange(2 * 3 * 32 * 32, dtype=torch.float64)
    return torch.sin(0.013 * t).reshape(2, 3, 32, 32).float()


def layout_digest(state: dict[str, torch.Tensor]) -> str:
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def main(root: str) -> None:
    sys.path.insert(0, root)
    from models import model_dict  # the official RepDistiller package

    torch.set_grad_enabled(False)
    manifest = {"source": "HobbitLong/RepDistiller models/ (model_dict), num_classes=100", "archs": {}}
    for arch, ctor in model_dict.items():
        if arch == "ResNet50":  # the ImageNet-style ResNet50 is not part of the CIFAR family here
            continue
        model = ctor(num_classes=100).eval()
        state = model.state_dict()
        entry = {"entries": len(state), "sha256": layout_digest(state)}
        if arch in FULL:
            entry["keys"] = [[k, list(v.shape)] for k, v in state.items()]
            model.load_state_dict(fill_deterministic(state))
            entry["logits"] = model(fixed_input()).double().tolist()
        manifest["archs"][arch] = entry
    out = Path(__file__).with_name("repdistiller_manifest.json")
    out.write_text(json.dumps(manifest, separators=(",", ":")))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])

"""Tiny end-to-end check (< 30 s on CPU): train two small teachers on digits for a few epochs, distil a tiny
student with MTKD-RL for two epochs, check the weights and that the student beats chance. Raises on failure."""

from __future__ import annotations

import tempfile


def main() -> None:
    import torch

    from .config import TeacherTrainConfig, digits_recipe
    from .data import digits_loaders
    from .distiller import MultiTeacherDistiller
    from .teachers import TeacherPool
    from .training import load_or_train_teachers

    torch.manual_seed(0)
    train, test = digits_loaders(64, seed=0)
    names = ["digits_convnet_wide", "digits_mlp"]
    teachers = load_or_train_teachers(names, train, None, TeacherTrainConfig(epochs=3, milestones=[]), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        d = MultiTeacherDistiller("digits_convnet_tiny", TeacherPool(teachers, names=names), "mtkd_rl",
                                  digits_recipe(epochs=3))
        hist = d.fit(train, test, run_dir=tmp, progress=False)
    acc = d.evaluate(test)["top1"]
    w = hist["epochs"][-1]["logit_weights"]
    if abs(sum(w) - 1.0) > 1e-3:
        raise RuntimeError(f"MTKD-RL weights after warm-up should sum to 1 over teachers, got {w}")
    if acc <= 30.0:
        raise RuntimeError(f"distilled student accuracy {acc:.1f}% is not above chance (10%)")
    print(f"kdrl smoke ok: student top-1 {acc:.1f}% with teacher weights {[round(v, 3) for v in w]}")


if __name__ == "__main__":
    main()

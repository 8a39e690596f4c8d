"""Learning-rate budget rule shared by the trained recipes (issue 20, "defaults that train").

Adam moves a parameter by about ``lr`` per step whatever the gradient's size, so the *amount* a recipe can move a
parameter is ``lr × steps`` (times the schedule's mean: ½ for cosine or linear decay to 0). The official recipes run
thousands of steps (Q-VDiT 5 000–15 000, MPQ-DM 16 000); a small-model run with fewer steps at the official rates moves
its parameters a small fraction of what the official run does — on the zoo DiT, S²Q-VDiT's old 20 iterations moved
its LoRA ~1 % of a weight step and Δ ~0.07 %. :func:`lr_budget_scale` returns the factor that restores
``lr × steps`` to the official value, with two caps:

* at most ``cap`` (×100): beyond it a few steps of Adam would each move 8-bit weight steps by ~10 % (measured with
  Q-VDiT at W8A8, 10 iterations × 100: PSNR vs FP 14.5 against RTN's 24.6; 25.1 with the second cap);
* at most ``steps`` below 100 steps, so the per-step move never exceeds what ``100 × official lr`` would be at 100 steps
  and very short runs are not turned into a few huge jumps.
"""

from __future__ import annotations

__all__ = ["lr_budget_scale"]


def lr_budget_scale(official_steps: int, steps: int, cap: float = 100.0) -> float:
    """``official_steps / steps`` capped at ``cap`` and at ``steps`` (module docstring). A run longer than the
    official one gets a factor below 1, so ``lr × steps`` still equals the official amount."""
    if official_steps < 1:
        raise ValueError(f"official_steps must be >= 1, got {official_steps}")
    steps = max(int(steps), 1)
    return min(official_steps / steps, float(cap), float(steps))

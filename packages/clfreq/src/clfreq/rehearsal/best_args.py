"""Best hyper-parameters as data (``best_args.json`` beside this file): keyword arguments of the method classes
(:func:`~clfreq.rehearsal.registry.create_method`) keyed by ``(benchmark, buffer size)`` then method name.

* :data:`BEST_ARGS`: mammoth's ``utils/best_args.py`` (notes §1.6) for the settings we reproduce — plain SGD, batch
  32; CLS-ER: lr, consistency weight λ, stable/plastic update probabilities, α = 0.999 for both EMA models.
* :data:`BEST_EPOCHS`, :data:`BEST_EPOCHS_BY_METHOD`: mammoth's epochs per task (50; Tiny-ImageNet ER/DER++ 100,
  ER-ACE and CLS-ER 50).
* :data:`QUICK_ARGS`: our quick CPU setting on Split Digits (2 epochs/task ≈ 18 steps per task, nf 8): mammoth's
  CIFAR-10 best args, except (not mammoth settings; see the README):

  - ER-ACE at lr 0.1: at lr 0.03 and 2–3 epochs ER-ACE's task 0 (plain CE, no replay yet) stays at chance
    (Task-IL 0.50 on task 0 after 3 epochs; 0.99 at lr 0.1; measured 2026-11-24).
  - CLS-ER with faster EMA models: the official rates average over 10 000 / 2 000 steps, far longer than this whole
    run (90 steps), so the stable model stays near its random init (Class-IL 19 %). Scaled so the averaging windows
    keep roughly the official ratio to the steps per task (stable ≈ 1.1 task, plastic ≈ 0.14 task).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["BEST_ARGS", "BEST_EPOCHS", "BEST_EPOCHS_BY_METHOD", "QUICK_ARGS", "best_epochs"]


def _by_setting(table: dict) -> dict[tuple[str, int], dict[str, dict]]:
    """``{benchmark: {buffer size (str): {method: kwargs}}}`` → ``{(benchmark, buffer size): {method: kwargs}}``."""
    return {(bench, int(size)): methods for bench, sizes in table.items() for size, methods in sizes.items()}


_DATA = json.loads((Path(__file__).with_name("best_args.json")).read_text(encoding="utf-8"))
BEST_ARGS: dict[tuple[str, int], dict[str, dict]] = _by_setting(_DATA["best_args"])
QUICK_ARGS: dict[tuple[str, int], dict[str, dict]] = _by_setting(_DATA["quick_args"])
BEST_EPOCHS: dict[str, int] = _DATA["best_epochs"]
#: per-method exceptions to BEST_EPOCHS
BEST_EPOCHS_BY_METHOD: dict[tuple[str, str], int] = {
    (bench, method): e for bench, methods in _DATA["best_epochs_by_method"].items() for method, e in methods.items()}


def best_epochs(benchmark: str, method: str) -> int:
    """mammoth's epochs per task for ``benchmark`` and ``method`` (``BEST_EPOCHS`` with per-method exceptions)."""
    if benchmark not in BEST_EPOCHS:
        raise ValueError(f"no best epochs for benchmark {benchmark!r}; known: {sorted(BEST_EPOCHS)}")
    return BEST_EPOCHS_BY_METHOD.get((benchmark, method), BEST_EPOCHS[benchmark])

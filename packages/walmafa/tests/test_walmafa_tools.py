"""The repository's GPU scripts (tools/walmafa_train.py through tools/bench/walmafa.py --full) start and finish on
CPU at the tiniest budget, and --full resumes from its per-seed file. Skipped outside the repository checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "tools" / "bench" / "walmafa.py"
TRAIN_ARGS = ("--batch-size 2 --crop 32 --eval-size 48 --eval-variants 1 --dim 4 --num-blocks 1,1,1 --steps 2 "
              "--warmup-steps 1")


def _full(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(BENCH), "--full", "--seeds", "0,1", "--budget-s", "40", "--device", "cpu",
           "--out", str(out), "--train-args", TRAIN_ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.is_file(), reason="needs the repository's tools/")
def test_full_comparison_stops_between_seeds_and_resumes(tmp_path):
    # seed 0 starts (0 + 40·1.05 + 15 = 57 s <= 58), seed 1 does not (seed 0 alone takes longer than 1 s)
    first = _full(tmp_path / "a", "--max-seconds", "58")
    assert first.returncode == 0, first.stderr[-2000:]
    seeds = tmp_path / "a" / "walmafa_full_seeds.jsonl"
    assert [json.loads(s)["seed"] for s in seeds.read_text().splitlines()] == [0]
    assert not (tmp_path / "a" / "walmafa" / "walmafa_full.json").exists()
    other = _full(tmp_path / "b", "--resume-from", str(seeds), "--budget-s", "41")
    assert other.returncode != 0 and "--budget-s" in other.stderr  # another budget is refused
    second = _full(tmp_path / "c", "--resume-from", str(seeds))
    assert second.returncode == 0, second.stderr[-2000:]
    res = json.loads((tmp_path / "c" / "walmafa" / "walmafa_full.json").read_text())
    assert [r["method"] for r in res["rows"]] == ["input (no enhancement)", "WalMaFa", "Retinex U-Net"]
    assert all(r["seeds"] == 2 and r["steps"] == 2 for r in res["rows"])
    # seed 0 comes from the first call, unchanged
    assert res["extra"]["per_seed"]["0"] == json.loads(seeds.read_text().splitlines()[0])["heldout"]

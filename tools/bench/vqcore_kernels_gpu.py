"""One time-boxed GPU session for vqcore's integer kernels (issue 4): the ``-m gpu`` tests of the kernels and of
``convert``, then a reduced benchmark (large-M GEMM shapes with the before/after kernel variants side by side, and the
CogVideoX-2B-size block). Everything is written under ``--out`` as it finishes, so a time-out keeps what was done.

    python3 tools/bench/vqcore_kernels_gpu.py --out "$OUT/H-K" --budget-s 100

Files: ``pytest_gpu.log``, ``bench.log`` (+ summary), ``results.json`` (``tools/bench/vqcore_kernels.py`` turns it into
the markdown tables).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=100.0, help="wall-clock budget of the whole script")
    ap.add_argument("--test-s", type=float, default=None, help="time box of the GPU tests (default 45%% of budget)")
    args = ap.parse_args(argv)
    t0 = time.time()
    test_s = args.test_s if args.test_s is not None else 0.45 * args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "packages/commons/src"), str(ROOT / "packages/vqcore/src"), env.get("PYTHONPATH", "")]
    )
    env["PYTHONUNBUFFERED"] = "1"
    summary = []

    def run(cmd: list[str], log: Path, timeout: float) -> str:
        start = time.time()
        with open(log, "w") as f:
            try:
                rc = subprocess.run(
                    cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
                ).returncode
                status = f"rc={rc}"
            except subprocess.TimeoutExpired:
                status = f"TIMEOUT after {timeout:.0f}s"
        line = f"{log.name}: {status} in {time.time() - start:.1f}s"
        summary.append(line)
        (out / "summary.txt").write_text("\n".join(summary) + "\n")
        print(line, flush=True)
        return status

    tests = ["packages/vqcore/tests/test_vqcore_convert.py", "packages/vqcore/tests/test_vqcore_kernels.py"]
    run([sys.executable, "-m", "pytest", *tests, "-m", "gpu", "-v", "--tb=short", "-p", "no:cacheprovider",
         "--durations=10"], out / "pytest_gpu.log", test_s)  # fmt: skip
    left = args.budget_s - (time.time() - t0) - 4.0
    if left > 15:
        bench_budget = max(10.0, left - 12.0)  # model building, block construction, writing: outside the time box
        run([sys.executable, str(ROOT / "tools/bench/vqcore_kernels.py"), "--large-only", "--no-plot",
             "--budget-s", f"{bench_budget:.0f}", "--warmup", "10", "--rep", "10", "--variant-shapes", "3",
             "--block-first", "--out", str(out)],
            out / "bench.log", left)  # fmt: skip
    else:
        summary.append(f"bench skipped: only {left:.0f}s left")
        (out / "summary.txt").write_text("\n".join(summary) + "\n")
    md = out / "results.md"
    text = md.read_text() if md.exists() else ""
    md.unlink(missing_ok=True)  # derivable from results.json; keeps the files that come back to three
    (out / "summary.txt").unlink(missing_ok=True)
    with open(out / "bench.log", "a") as f:
        f.write("\n== summary ==\n" + "\n".join(summary) + "\n")
    print("\n".join(summary))
    keep = [ln for ln in text.splitlines() if "Median" in ln or ln.startswith(("GPU:", "| W", "| bf16", "| no "))]
    print("\n".join(keep) if keep else "no results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

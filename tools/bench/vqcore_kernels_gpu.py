"""One time-boxed GPU session for vqcore's integer kernels (issues 4 and 19): the ``-m gpu`` tests of the kernels and
of ``convert`` (plus the converted-layer tests that take the CUDA dispatch), then the benchmark
(``tools/bench/vqcore_kernels.py``: the CogVideoX-2B-size block first, the large-M GEMM shapes with the kernel
variants side by side and the bf16 / ``torch._int_mm`` / FP8 ``torch._scaled_mm`` baselines, the small-M shapes
M ∈ {256, 64, 16} with the weight-only kernel's single-pass and opt-in split-K variants, then a 30-block denoiser
step). Everything is written under ``--out`` as it finishes, so a time-out keeps what was done. Nothing is installed:
the packages are put on ``PYTHONPATH``.

    PAPERLAB_GIT_COMMIT=<commit> python3 tools/bench/vqcore_kernels_gpu.py --out "$OUT/vqk" --budget-s 540
    # small M only (weight-only split-K), the GPU tests restricted with a pytest -k expression:
    PAPERLAB_GIT_COMMIT=<commit> python3 tools/bench/vqcore_kernels_gpu.py --out "$OUT" --budget-s 420 \
        --test-s 150 --test-k "weight_only" --parts small

Files (≤ 6): ``pytest_gpu.log``, ``bench.log`` (+ summary), ``results.json`` (raw rows; ``vqcore_kernels.py
--from-json`` prints the markdown tables), ``vqcore/vqcore_kernels.json`` (``commons.results`` rows; copy it to
``results/vqcore/``), ``speedup.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_FILES = ("test_vqcore_kernels.py", "test_vqcore_convert.py", "test_vqcore_kernels_attention.py",
              "test_vqcore_kernels_weight_only.py")  # fmt: skip
CUDA_TESTS = (  # not gpu-marked, but they take the real CUDA dispatch (or run the Triton kernels) on a GPU
    "test_vqcore_kernels_attention.py",
    "test_vqcore_kernels_weight_only.py",
    "test_vqcore_convert_mpqdm.py::test_converted_omq_and_conv_layers_on_the_triton_path",
    "test_vqcore_convert_mpqdm.py::test_static_quantizer_triton_equals_reference",
)
#: block variants of the first run: the measured kinds, the opt-in kernels, int8 attention (no torch.compile)
FIRST_BLOCK_VARIANTS = ("W8A8;W4A8;W4A8 g128;W8A8 TMA kernel (opt-in);W4A8 unpack + TMA (opt-in);"
                        "bf16 + int8 attention;W8A8 + int8 attention;W4A8 + int8 attention")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=100.0, help="wall-clock budget of the whole script")
    ap.add_argument("--test-s", type=float, default=None,
                    help="time box of the GPU tests (default 30%% of budget; 0: no tests)")
    ap.add_argument("--test-k", default="", help="pytest -k expression selecting the GPU tests ('' = all)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test of this script (bench --quick)")
    ap.add_argument("--parts", default="block,step,attention,large,small", help="bench parts, in order")
    ap.add_argument("--block-variants", default=FIRST_BLOCK_VARIANTS, help="';'-separated ('' = all)")
    ap.add_argument("--step-variants", default="W8A8;W4A8;W8A8 + int8 attention", help="';'-separated ('' = all)")
    ap.add_argument("--small-ms", default="256 64 16", help="small-M token counts")
    ap.add_argument("--variant-shapes", type=int, default=2, help="large-M shapes that time every kernel variant")
    args = ap.parse_args(argv)
    t0 = time.time()
    test_s = args.test_s if args.test_s is not None else 0.30 * args.budget_s
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

    if "PAPERLAB_GIT_COMMIT" not in env:  # the GPU machine's copy of the tree may have no .git
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            env["PAPERLAB_GIT_COMMIT"] = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                                                        capture_output=True, text=True, timeout=10,
                                                        check=True).stdout.strip()  # fmt: skip
    tdir = "packages/vqcore/tests/"
    pytest = [sys.executable, "-m", "pytest", "-v", "--tb=short", "-p", "no:cacheprovider", "--durations=10",
              "-o", "timeout=240"]  # fmt: skip
    select = ["-k", args.test_k] if args.test_k else []
    if test_s > 0:
        run([*pytest, *(tdir + f for f in TEST_FILES), "-m", "gpu", *select], out / "pytest_gpu.log", test_s)
    left = test_s - (time.time() - t0)
    if test_s > 0 and left > 20:  # kernel tests / converted layers that take the CUDA dispatch
        run([*pytest, *(tdir + t for t in CUDA_TESTS), *select], out / "pytest_cuda_layers.log", left)
    left = args.budget_s - (time.time() - t0) - 4.0
    if left > 15:
        bench_budget = max(10.0, left - 15.0)  # model building, block construction, writing: outside the time box
        run([sys.executable, str(ROOT / "tools/bench/vqcore_kernels.py"),
             "--budget-s", f"{bench_budget:.0f}", "--warmup", "10", "--rep", "10", "--variant-shapes",
             str(args.variant_shapes), "--no-eager", "--parts", args.parts, "--block-variants", args.block_variants,
             "--step-variants", args.step_variants, "--small-ms", *args.small_ms.split(), "--out", str(out),
             *(["--quick"] if args.quick else [])],
            out / "bench.log", left)  # fmt: skip
    else:
        summary.append(f"bench skipped: only {left:.0f}s left")
        (out / "summary.txt").write_text("\n".join(summary) + "\n")
    md = out / "results.md"
    text = md.read_text() if md.exists() else ""
    md.unlink(missing_ok=True)  # derivable from results.json; keeps the files that come back few
    (out / "summary.txt").unlink(missing_ok=True)
    extra = out / "pytest_cuda_layers.log"
    if extra.exists():  # one test log
        with open(out / "pytest_gpu.log", "a") as f:
            f.write("\n\n== converted layers on the CUDA dispatch ==\n" + extra.read_text())
        extra.unlink()
    with open(out / "bench.log", "a") as f:
        f.write("\n== summary ==\n" + "\n".join(summary) + "\n")
    print("\n".join(summary))
    for log in ("pytest_gpu.log",):
        tail = [ln for ln in (out / log).read_text().splitlines() if " passed" in ln or " failed" in ln
                or ln.startswith(("FAILED", "ERROR"))] if (out / log).exists() else []  # fmt: skip
        print("\n".join(tail[-12:]))
    keep = [ln for ln in text.splitlines() if "Median" in ln or "Slowest" in ln
            or ln.startswith(("GPU:", "| W", "| bf16", "| no ", "| same"))]  # fmt: skip
    print("\n".join(keep) if keep else "no results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

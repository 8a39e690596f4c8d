"""Ahead-of-time compile check of every vqcore Triton kernel configuration for Hopper (sm_90), without a GPU.

The CPU test-suite runs the kernels in Triton's interpreter (numerics only), which never lowers them to PTX, so a
kernel that does not *compile* for the GPU would only show up for users. This script compiles, on a machine without a
GPU, every configuration the dispatch code can launch and checks what the compiler emitted:

* **Enumeration from the code, not from a parallel list.** The launch points of :mod:`vqcore.kernels.triton_kernels`
  (``_quant_per_token_kernel``, ``_quant_static_kernel``, ``_unpack_int4_kernel``, ``_int_gemm_kernel``,
  ``_int_gemm_tma_kernel``, the autotuner ``_int_gemm_tuned()``, the weight-only ``_wonly_gemm_kernel`` and its
  opt-in split-K reduction ``_wonly_splitk_reduce_kernel``) are replaced by recorders, and the *public* API
  (``vqcore.kernels.quantize_per_token`` / ``quantize_static`` / ``int_linear``, with ``vqcore.kernels._direct``
  forced on so CPU tensors take the CUDA launch path) plus the converted layers (``QLinearInt``, ``QConv2dInt``) are
  called over a grid of shapes, dtypes, flags and :data:`~vqcore.kernels.triton_kernels.POLICY` settings. Whatever
  the launch code passes — the ``PTR_TILES`` / ``TMA_TILES`` entry, every autotune config of ``_hopper_configs()``
  that ``_prune`` keeps for that M, the constexpr flags W4 / GROUP_SIZE / HAS_ZP / HAS_WZP / HAS_BIAS / HAS_LR / RP /
  EVEN_K / SWAP, the quantizers' BITS / SMOOTH / SYMMETRIC / ROWS / BLOCK_K and num_warps — is recorded as launched.
  Explicit ``config=`` overrides are taken from the GEMM benchmark's variant lists (``tools/bench/vqcore_kernels.py``:
  ``BEFORE_W8``, ``BEFORE_W4``, ``TMA_W8``, ``G128_TMA``, ``G128_AFTER``) and its quantizer ROWS/warps candidates.
* **Triton's own specialisation.** Each recorded launch is bound by the binder Triton builds for that kernel at run
  time (``create_function_from_signature`` + ``JITFunction._pack_args``), for the target the CUDA driver reports on an
  H100/H200 (``GPUTarget("cuda", 90, 32)``; the third field is the warp size). So the signature (pointer dtypes,
  ``tensordesc<i8[BM, BK]>`` for TMA descriptors), the integer specialisations (``== 1`` → constexpr,
  ``% 16 == 0`` → ``tt.divisibility``) and the options are exactly what the JIT would compile on the GPU; launches
  with the same specialisation are compiled once ("calls" column).
* **Checks** on each compiled kernel: ``triton.compile`` succeeds down to a cubin (the ptxas bundled with Triton ran);
  the GEMMs use the int8 tensor-core MMA (``wgmma.mma_async ... s32.s8.s8``; ``mma.sync ... s8`` is reported but
  fails the check, since every vqcore tile is warpgroup-sized); the TMA kernel loads with ``cp.async.bulk.tensor``
  (and, with ``STORE_DESC``, stores with it); the quantizers divide with IEEE ``div.rn.f32`` (their codes must equal
  PyTorch's bit for bit) and no approximate division; the static shared memory fits an sm_90 block (227 KiB, what
  the launcher checks at load time). Registers and spill (local) bytes come from ``cuobjdump --dump-resource-usage``
  on the cubin.

What is *not* checked: that the kernels run or are fast on a GPU (no GPU here), and ``launch_cooperative_grid``-style
runtime limits. Not a kernel of its own: ``vqcore.kernels.conv`` (im2col is PyTorch ``unfold``; ``QConv2dInt``
launches ``quantize_static`` + ``int_linear``, enumerated through the layer), and the low-rank branch's row period
(applied to ``t`` in PyTorch before the GEMM; the kernel sees the same arguments).

    .venv/bin/python tools/vqcore_kernels_compile_check.py                      # full enumeration (minutes)
    .venv/bin/python tools/vqcore_kernels_compile_check.py --subset test        # the pytest's subset (~20 s)
    .venv/bin/python tools/vqcore_kernels_compile_check.py --list               # enumerate only, no compile
    .venv/bin/python tools/vqcore_kernels_compile_check.py --out runs/bench/vqcore_kernels_compile

Exit code 1 if any configuration fails a check, 0 otherwise. ``--out DIR`` writes ``compile_check_<UTC>.json`` (every
row, with the specialisation, the failing message and the MMA instructions seen) and the table as ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
for _p in ("packages/vqcore/src", "packages/commons/src"):
    if str(ROOT / _p) not in sys.path:
        sys.path.insert(0, str(ROOT / _p))

SM90_MAX_SHARED = 232448  # bytes of shared memory an sm_90 block may opt in to (227 KiB), checked by the launcher
H100_SMS = 132  # what _num_sms() returns on an H100/H200: the persistent TMA kernel's program count
KERNELS = ("_quant_per_token_kernel", "_quant_static_kernel", "_unpack_int4_kernel", "_int_gemm_kernel",
           "_int_gemm_tma_kernel", "_wonly_gemm_kernel", "_wonly_splitk_reduce_kernel")  # fmt: skip
GEMMS = ("_int_gemm_kernel", "_int_gemm_tma_kernel")  # int8 MMA required (the weight-only GEMM is bf16/fp16)
QUANTS = ("_quant_per_token_kernel", "_quant_static_kernel")


# ---- recording the launches ------------------------------------------------------------------------------------------
@dataclass
class Launch:
    kernel: str
    args: tuple
    kwargs: dict
    call: str


@dataclass
class _Sink:
    launches: list = field(default_factory=list)
    call: str = ""


class _Recorder:
    """Stands in for a ``JITFunction`` in ``triton_kernels``' namespace: ``kernel[grid](*args, **kw)`` records."""

    def __init__(self, name: str, sink: _Sink):
        self.name, self.sink = name, sink

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.sink.launches.append(Launch(self.name, args, dict(kwargs), self.sink.call))

        return launch


class _TunedRecorder:
    """Stands in for the autotuner: records one launch of ``_int_gemm_kernel`` per config that the autotuner would
    benchmark (``_hopper_configs()`` after ``_prune`` for these arguments), i.e. every config it compiles."""

    def __init__(self, tk, sink: _Sink):
        self.tk, self.sink = tk, sink
        self.arg_names = tk._int_gemm_kernel.arg_names  # read before the kernel itself is replaced

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            names = self.arg_names
            named = dict(zip(names, args))
            named.update(kwargs)
            for cfg in self.tk._prune(self.tk._hopper_configs(), named):
                kw = {**kwargs, **cfg.all_kwargs()}
                self.sink.launches.append(Launch("_int_gemm_kernel", args, kw, self.sink.call + " [autotune]"))

        return launch


def _patch_everywhere(st: contextlib.ExitStack, tk, name: str, value) -> None:
    """Patch ``name`` in ``triton_kernels`` and in every implementation module that binds it (``triton_kernels``
    re-exports the names of ``vqcore.kernels.triton_*``; each is looked up in the module that uses it)."""
    for mod in [tk] + [m for k, m in sorted(sys.modules.items()) if k.startswith("vqcore.kernels.triton_")
                       and m is not tk]:  # fmt: skip
        if name in vars(mod):
            st.enter_context(mock.patch.object(mod, name, value))


@contextlib.contextmanager
def recording(tk, sink: _Sink):
    import vqcore.kernels as vk

    tuned = _TunedRecorder(tk, sink)
    with contextlib.ExitStack() as st:
        for name in KERNELS:
            _patch_everywhere(st, tk, name, _Recorder(name, sink))
        _patch_everywhere(st, tk, "_int_gemm_tuned", lambda: tuned)
        _patch_everywhere(st, tk, "_num_sms", lambda device: H100_SMS)
        tma_ok = tk._tma_ok

        def tma_ok_sm90(xq, w, k):  # the function's own alignment tests; its device test taken as "sm_90"
            with mock.patch.object(sys.modules[tma_ok.__module__], "INTERPRET", True):
                return tma_ok(xq, w, k)

        _patch_everywhere(st, tk, "_tma_ok", tma_ok_sm90)
        st.enter_context(mock.patch.object(vk, "_direct", lambda t: True))  # CPU tensors take the CUDA launch path
        yield


# ---- the calls -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gemm:
    m: int
    k: int
    n: int
    w4: bool = False
    group: int = 0
    wzp: bool = False
    a_asym: bool = False
    bias: bool = False
    rank: int = 0
    dtype: str = "bfloat16"  # the model's dtype (bias, low-rank factors)
    out: str = "bfloat16"
    policy: tuple = ()  # POLICY overrides, as ((key, value), ...)
    config: tuple = ()  # explicit tk.int_linear config, as ((key, value), ...)

    def name(self) -> str:
        w = f"W{4 if self.w4 else 8}" + (f" g{self.group}" if self.group else " pc") + (" wzp" if self.wzp else "")
        ep = ("azp " if self.a_asym else "") + ("bias " if self.bias else "") + (f"lr{self.rank} " if self.rank else "")
        pol = ",".join(f"{k}={v}" for k, v in self.policy) or "default"
        cfg = f" cfg={dict(self.config)}" if self.config else ""
        return (f"int_linear M={self.m} K={self.k} N={self.n} {w} {ep}{self.dtype}->{self.out} "
                f"policy[{pol}]{cfg}")  # fmt: skip


def _dt(name: str):
    import torch

    return getattr(torch, name)


def call_gemm(tk, g: Gemm) -> None:
    """One call of the public ``vqcore.kernels.int_linear`` with tensors of the dtypes/shapes a converted layer
    passes (``QLinearInt`` buffers: int8/packed codes, fp32 scales and sums, bias and low-rank factors in the model's
    dtype); an explicit ``config`` is passed on to ``triton_kernels.int_linear``."""
    import torch

    import vqcore.kernels as vk
    from vqcore.kernels.packing import padded_k

    m, k, n = g.m, g.k, g.n
    act = vk.QuantizedActivation(torch.empty(m, k, dtype=torch.int8), torch.empty(m), torch.empty(m, dtype=torch.int32),
                                 torch.empty(m, dtype=torch.int32))  # fmt: skip
    w = torch.empty(n, padded_k(k) // 2 if g.w4 else k, dtype=torch.int8)
    ws = torch.empty(n, -(-k // g.group)) if g.group else torch.empty(n)
    md = _dt(g.dtype)
    kw: dict[str, Any] = {"in_features": k, "w4": g.w4, "group_size": g.group, "asymmetric_act": g.a_asym,
                          "out_dtype": _dt(g.out)}  # fmt: skip
    if g.a_asym or g.wzp:
        kw["weight_sum"] = torch.empty(n)
    if g.wzp:
        kw["weight_zp_scaled"] = torch.empty(n)
    if g.bias:
        kw["bias"] = torch.empty(n, dtype=md)
    if g.rank:
        kw["lowrank_t"] = torch.empty(m, g.rank, dtype=md)
        kw["lowrank_up"] = torch.empty(n, g.rank, dtype=md)
    with contextlib.ExitStack() as st:
        st.enter_context(mock.patch.dict(tk.POLICY, dict(g.policy)))
        if g.config:
            orig = tk.int_linear
            cfg = dict(g.config)
            st.enter_context(mock.patch.object(tk, "int_linear", lambda *a, **k_: orig(*a, **k_, config=dict(cfg))))
        vk.int_linear(act, w, ws, **kw)


def call_quant(kind: str, m: int, k: int, dtype: str, smooth: bool, bits: int, symmetric: bool = True,
               config: dict | None = None) -> None:  # fmt: skip
    """One call of the public quantizer (``config``: ``triton_kernels`` launch override, e.g. the bench's ROWS)."""
    import torch

    import vqcore.kernels as vk
    from vqcore.kernels import triton_kernels as tk

    x = torch.empty(m, k, dtype=_dt(dtype))
    s = torch.ones(k) if smooth else None
    with contextlib.ExitStack() as st:
        if config:
            name = "quantize_per_token" if kind == "per_token" else "quantize_static"
            orig = getattr(tk, name)
            st.enter_context(mock.patch.object(tk, name, lambda *a: orig(*a, config=dict(config))))
        if kind == "per_token":
            vk.quantize_per_token(x, bits, symmetric, smooth=s)
        else:
            vk.quantize_static(x, torch.ones(1), torch.zeros(1, dtype=torch.int32), bits, smooth=s)


def call_quant_lowrank(m: int, k: int, rank: int, smooth: bool, symmetric: bool) -> None:
    """The per-token quantizer with the fused low-rank side branch (``quantize_per_token_lowrank``, ranks ≤ 4)."""
    import torch

    import vqcore.kernels as vk

    vk.quantize_per_token_lowrank(torch.empty(m, k, dtype=torch.bfloat16), 8, symmetric,
                                  torch.ones(k) if smooth else None, torch.empty(rank, k))  # fmt: skip


def call_wonly(m: int, k: int, n: int, w4: bool, group: int, dtype: str, bias: bool, split=None) -> None:
    """The weight-only small-M GEMM (``triton_kernels.weight_only_linear``, the kernel QLinearInt takes when
    ``vqcore.kernels.WEIGHT_ONLY_MAX_M >= M`` on CUDA); ``split``: its opt-in split-K (``config={"SPLIT_K": ...}``,
    ``"auto"`` as ``VQCORE_WONLY_SPLIT_K=auto`` picks it for 132 SMs), which adds the reduction kernel."""
    import torch

    from vqcore.kernels import packing
    from vqcore.kernels import triton_kernels as tk

    w = torch.zeros(n, packing.padded_k(k) // 2 if w4 else k, dtype=torch.int8)
    sw = torch.ones(n, -(-k // group)) if group else torch.ones(n)
    tk.weight_only_linear(torch.empty(m, k, dtype=_dt(dtype)), w, sw, group, w4, k,
                          torch.zeros(n, dtype=_dt(dtype)) if bias else None, _dt(dtype),
                          config=None if split is None else {"SPLIT_K": split})  # fmt: skip


def _bench_module():
    spec = importlib.util.spec_from_file_location("_vqcore_kernels_bench", ROOT / "tools/bench/vqcore_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _model_shapes(bench, models: list[str], ms: list[int] | None = None) -> list[tuple[int, int, int]]:
    """(M, K, N) of the benchmark's model linears (qkv/proj, fc1, fc2) at its token counts (M = tokens, 2048, 64)."""
    out = []
    for name in models:
        hidden, mlp, tokens = bench.MODELS[name]
        for m in ms or [tokens, 2048, 64]:
            out += [(m, hidden, hidden), (m, hidden, mlp), (m, mlp, hidden)]
    return out


# weight layouts the converter produces: int8 per channel / per group (multiple of 128), packed int4 per channel /
# per group (multiple of 64: 64 takes the kernel's two-scales-per-chunk branch, 128 the one-scale branch)
WEIGHTS = [(False, 0), (False, 128), (True, 0), (True, 64), (True, 128)]


def policies(tk) -> dict[str, dict]:
    """Every dispatch the POLICY switches select (read from :data:`POLICY`'s keys, so a new switch fails loudly)."""
    known = {"tma", "tma_min_m", "w4_unpack_min_m", "autotune", "tma_group"}
    if set(tk.POLICY) != known:
        raise RuntimeError(f"POLICY has keys {sorted(tk.POLICY)}; this script knows {sorted(known)}: update it")
    # (vqcore.kernels.WEIGHT_ONLY_MAX_M is decided in QLinearInt, CUDA tensors only: its kernel is enumerated directly)
    off = {"tma": False, "tma_min_m": 0, "tma_group": False, "w4_unpack_min_m": 1 << 62}
    return {
        "autotune": {**off, "autotune": True},  # the autotuned pointer kernel, W4 unpacked in the K loop (M < 4096)
        "fixed": {**off, "autotune": False},  # VQCORE_AUTOTUNE=0: PTR_TILES
        "tma": {**off, "autotune": False, "tma": True},
        "tma+group": {**off, "autotune": False, "tma": True, "tma_group": True},
        "unpack": {**off, "autotune": True, "w4_unpack_min_m": 256},
        "unpack+fixed": {**off, "autotune": False, "w4_unpack_min_m": 256},
        "unpack+tma": {"autotune": False, "tma": True, "tma_min_m": 0, "tma_group": True, "w4_unpack_min_m": 256},
        "shipped": {"autotune": True, "tma": True, "tma_min_m": 4096, "tma_group": True, "w4_unpack_min_m": 4096},
    }


def _p(d: dict) -> tuple:
    return tuple(sorted(d.items()))


def enumerate_calls(subset: str, tk) -> list[tuple[str, Any]]:
    """(description, thunk) of every call of the chosen subset; each thunk runs one public-API call."""
    bench = _bench_module()
    pol = policies(tk)
    calls: list[tuple[str, Any]] = []

    def gemm(g: Gemm):
        calls.append((g.name(), lambda g=g: call_gemm(tk, g)))

    def quant(kind, m, k, dtype="bfloat16", smooth=False, bits=8, symmetric=True, config=None):
        desc = (
            f"quantize_{kind} M={m} K={k} {dtype} smooth={int(smooth)} bits={bits}"
            + (f" sym={int(symmetric)}" if kind == "per_token" else "")
            + (f" cfg={config}" if config else "")
        )
        calls.append((desc, lambda: call_quant(kind, m, k, dtype, smooth, bits, symmetric, config)))

    cog = _model_shapes(bench, ["CogVideoX-2B"], [17776])[0]  # (17776, 1920, 1920): qkv/proj
    if subset == "test":
        # every kernel function at least once, and the default dispatch of a CogVideoX-2B-size W8A8 and W4A8 layer
        # (QLinearInt, bf16, bias; the autotuner compiles every config _prune keeps on the first call, and the fixed
        # PTR_TILES entries that VQCORE_AUTOTUNE=0 takes are among them)
        calls += layer_calls(tk, quick=True, policy=pol["autotune"])
        gemm(Gemm(*cog, bias=True, rank=32, a_asym=True, policy=_p(pol["fixed"])))
        gemm(Gemm(*cog, group=128, policy=_p(pol["tma+group"])))
        gemm(Gemm(*cog, w4=True, policy=_p(pol["unpack+tma"]), config=_p({"PATH": "tma", "STORE_DESC": True})))
        quant("per_token", cog[0], cog[1], symmetric=False)
        quant("static", cog[0], cog[1], smooth=True)
        calls.append(("quantize_per_token_lowrank rank 1", lambda: call_quant_lowrank(cog[0], cog[1], 1, True, True)))
        calls.append(("weight_only M=64 W4 g128", lambda: call_wonly(64, cog[1], cog[2], True, 128, "bfloat16", True)))
        calls.append(("weight_only M=64 W4 g128 split-K auto",
                      lambda: call_wonly(64, cog[1], cog[2], True, 128, "bfloat16", True, "auto")))  # fmt: skip
        return calls

    # -- the quantizer's fused low-rank side branch and the weight-only small-M GEMM --
    for k, rank, smooth, sym in itertools.product((1152, 1920, 4608, 7680, 1000), (1, 2, 4), (False, True),
                                                  (True, False)):  # fmt: skip
        calls.append((f"quantize_per_token_lowrank M=17776 K={k} rank={rank} smooth={int(smooth)} sym={int(sym)}",
                      lambda a=(17776, k, rank, smooth, sym): call_quant_lowrank(*a)))  # fmt: skip
    for m, (k, n), (w4, group), dtype in itertools.product(
        (1, 16, 64, 256), ((1920, 1920), (1920, 7680), (7680, 1920), (1152, 4608), (1000, 300)), WEIGHTS,
        ("bfloat16", "float16"),
    ):  # fmt: skip
        if group and k <= group:
            continue
        calls.append((f"weight_only M={m} K={k} N={n} W{4 if w4 else 8} g{group} {dtype}",
                      lambda a=(m, k, n, w4, group, dtype, True): call_wonly(*a)))  # fmt: skip
    # the opt-in split-K: "auto" at every shape, and the benchmark's fixed splits (bf16, with and without bias)
    for m, (k, n), (w4, group), split in itertools.product(
        (1, 16, 64, 256), ((1920, 1920), (1920, 7680), (7680, 1920), (1152, 4608), (1000, 300)), WEIGHTS,
        bench.WONLY_SPLITS,
    ):  # fmt: skip
        if group and k <= group:
            continue
        calls.append((f"weight_only M={m} K={k} N={n} W{4 if w4 else 8} g{group} split-K {split}",
                      lambda a=(m, k, n, w4, group, "bfloat16", m != 16, split): call_wonly(*a)))  # fmt: skip

    # -- quantizers: every BLOCK_K the launch code can pick, with its default ROWS/num_warps table --
    for e in range(16):  # K up to the kernel's 32768 limit
        for smooth, sym in itertools.product((False, True), (True, False)):
            quant("per_token", 333, 2**e, smooth=smooth, symmetric=sym)
    for k in (77, 1000, 1920, 7680):  # K not a power of two / not a multiple of 16
        for dtype, bits in itertools.product(("bfloat16", "float16", "float32"), range(2, 9)):
            quant("per_token", 1 if k == 77 else 17776, k, dtype, True, bits, bits % 2 == 0)
    for k in (1152, 1920, 4608, 7680):  # the bench's ROWS / num_warps candidates (tools/bench/vqcore_kernels.py)
        cands = [(2, 4), (4, 8), (8, 8)] if k <= 2048 else [(2, 8), (4, 16)]
        for rows, warps in cands:
            quant("per_token", 17776, k, config={"ROWS": rows, "num_warps": warps})
            quant("per_token", 17776, k, config={"ROWS": rows, "num_warps": warps, "RECIP": True})
        quant("per_token", 17776, k, symmetric=False, config={"RECIP": True})
    for k in (3, 16, 27, 64, 128, 320, 576, 1024, 1025, 1152, 1920, 2880, 7680):  # conv K = 9·C and linear K
        for smooth, bits in itertools.product((False, True), (8, 4)):
            quant("static", 4096, k, smooth=smooth, bits=bits)
    for dtype, bits in itertools.product(("float16", "float32"), range(2, 9)):
        for k in (576, 1920):
            quant("static", 1 if bits == 2 else 4097, k, dtype, True, bits)

    # -- GEMM main loops: every policy x shape class x weight layout, plain epilogue --
    shapes = _model_shapes(bench, list(bench.MODELS))
    shapes += [(1, 1920, 1920), (333, 1000, 1930), (4096, 576, 320), (17777, 1920, 1937), (8, 27, 64)]
    for p in pol.values():
        for (m, k, n), (w4, group) in itertools.product(shapes, WEIGHTS):
            if group and k <= group:
                continue
            gemm(Gemm(m, k, n, w4=w4, group=group, policy=_p(p)))

    # -- epilogues: every flag combination at the default dispatch anchors, then the dtypes --
    anchors = [("fixed", (17776, 1920, 1920)), ("fixed", (64, 1920, 7680)), ("tma", (17776, 1920, 1920))]
    for (name, (m, k, n)), (w4, group) in itertools.product(anchors, WEIGHTS):
        if name == "tma" and w4:
            continue
        for a_asym, wzp, bias, rank in itertools.product((False, True), (False, True), (False, True), (0, 8, 32, 64)):
            if wzp and group:
                continue  # weight zero points are per-channel only (the public API refuses them per group)
            gemm(Gemm(m, k, n, w4, group, wzp, a_asym, bias, rank, policy=_p(pol[name])))
        for dtype, out in (("float16", "float16"), ("float32", "float32"), ("bfloat16", "float32"),
                           ("float16", "float32"), ("float32", "bfloat16")):  # fmt: skip
            for rank in (0, 64):
                gemm(Gemm(m, k, n, w4, group, not group, True, True, rank, dtype, out, policy=_p(pol[name])))

    # -- the benchmark's explicit variants (tools/bench/vqcore_kernels.py) and the TMA options --
    m, k, n = cog
    for cfg in [*bench.BEFORE_W8, *bench.TMA_W8]:  # bf16 output, as the benchmark runs them (explicit num_stages)
        gemm(Gemm(m, k, n, config=_p(cfg)))
    gemm(Gemm(m, k, n, w4=True, config=_p(bench.BEFORE_W4)))
    for cfg in [bench.G128_AFTER, *bench.G128_TMA]:
        gemm(Gemm(m, k, n, w4=True, group=128, config=_p(cfg)))
    # TMA options on the TMA_TILES entries (table num_stages, which the dispatch fits to shared memory), every dtype
    for size_m, (flat, store), out in itertools.product((17776, 2048, 64), itertools.product((False, True), repeat=2),
                                                        ("bfloat16", "float16", "float32")):  # fmt: skip
        gemm(Gemm(size_m, k, n, out=out, bias=True, rank=16, config=_p({"PATH": "tma", "FLATTEN": flat,
                                                                          "STORE_DESC": store})))  # fmt: skip
    for pair, bk, group in itertools.product((False, True), (64, 128), (128, 256)):
        gemm(Gemm(m, k, n, group=group, config=_p({"PATH": "tma", "PAIR": pair, "BLOCK_K": bk})))
    calls += layer_calls(tk, quick=False, policy=pol["autotune"])
    calls += layer_calls(tk, quick=False, policy=pol["unpack+tma"])
    calls += layer_calls(tk, quick=False, policy=pol["shipped"])  # the shipped default (TMA + unpack at M >= 4096)
    return calls


def layer_calls(tk, quick: bool, policy: dict) -> list[tuple[str, Any]]:
    """Converted layers as a model runs them, under ``policy``: ``QLinearInt.from_linear`` (CogVideoX-2B qkv size,
    W8A8 / W4A8, bf16) and a static-activation ``QConv2dInt`` (im2col + int_linear: vqcore.kernels.conv has no kernel
    of its own)."""
    import torch
    from torch import nn

    from vqcore.convert import QLinearInt

    out = []
    tag = (
        "default policy"
        if policy.get("autotune") and not policy.get("tma")
        else "policy "
        + ",".join(k for k, v in sorted(policy.items()) if v is True or (k == "w4_unpack_min_m" and v < 1 << 40))
    )

    def run_linear(w_bits, group, m):
        torch.manual_seed(0)
        lin = nn.Linear(1920, 1920, bias=True, dtype=torch.bfloat16)
        layer = QLinearInt.from_linear(lin, w_bits=w_bits, a_bits=8, group_size=group)
        layer(torch.randn(m, 1920, dtype=torch.bfloat16))

    def run_conv(w_bits, dtype):
        torch.manual_seed(0)
        c, o = 64, 128
        codes = torch.randint(-8, 8, (o, c * 9))
        layer = QLinearInt.from_codes(
            codes, torch.rand(o) + 0.1, None, w_bits=w_bits, a_bits=8, a_symmetric=False, bias=torch.randn(o),
            dtype=dtype, act_scale=torch.tensor([0.05]), act_zero_point=torch.tensor([128.0]),
            conv={"kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1), "in_channels": c},
        )  # fmt: skip
        layer(torch.randn(2, c, 16, 16, dtype=dtype))

    def under_policy(fn):
        def run():
            with mock.patch.dict(tk.POLICY, policy):
                fn()

        return run

    for w_bits in (8, 4):
        out.append((f"QLinearInt.from_linear 1920->1920 W{w_bits}A8 bf16 M=17776 ({tag})",
                    under_policy(lambda w_bits=w_bits: run_linear(w_bits, 0, 17776))))  # fmt: skip
    if quick:
        return out
    out.append((f"QLinearInt.from_linear 1920->1920 W4A8 g128 bf16 M=4097 ({tag})",
                under_policy(lambda: run_linear(4, 128, 4097))))  # fmt: skip
    for w_bits, dtype in itertools.product((8, 4), (torch.bfloat16, torch.float32)):
        out.append((f"QConv2dInt 64->128 3x3 pad1 W{w_bits}A8 static asym {str(dtype)[6:]} 2x16x16 ({tag})",
                    under_policy(lambda w_bits=w_bits, dtype=dtype: run_conv(w_bits, dtype))))  # fmt: skip
    return out


# ---- specialisation and compilation ----------------------------------------------------------------------------------
@dataclass
class Job:
    kernel: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    key: str
    calls: list = field(default_factory=list)


def _binders(tk, backend):
    from triton.runtime.jit import create_function_from_signature

    return {
        name: create_function_from_signature(getattr(tk, name).signature, getattr(tk, name).params, backend)
        for name in KERNELS
    }


def specialize(tk, backend, binders, launches: list[Launch]) -> list[Job]:
    """Bind every launch exactly as ``JITFunction.run`` does, and merge launches with the same compile key."""
    jobs: dict[str, Job] = {}
    for ln in launches:
        fn = getattr(tk, ln.kernel)
        kw = dict(ln.kwargs)
        bound, spec, opts = binders[ln.kernel](*ln.args, **kw)
        options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, spec, opts)
        key = f"{ln.kernel}|{spec}|{sorted(options.__dict__.items())}"
        if key not in jobs:
            jobs[key] = Job(ln.kernel, signature, constexprs, attrs, dict(options.__dict__), key)
        jobs[key].calls.append(ln.call)
    return list(jobs.values())


def _cuobjdump() -> str | None:
    try:
        from triton import knobs

        return knobs.nvidia.cuobjdump.path
    except Exception:
        return None


def _resources(cubin: bytes, workdir: str) -> dict:
    tool = _cuobjdump()
    if not tool:
        return {}
    path = os.path.join(workdir, "k.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    try:
        txt = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    got = dict(re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", txt))
    return {k.lower(): int(v) for k, v in got.items()}


def config_str(job: Job, tk) -> str:
    """Compact description: the constexpr values (defaults included), non-fixed pointer dtypes, integer
    specialisations (``M=1`` constexpr, ``M%16`` divisibility) and num_warps/num_stages."""
    fn = getattr(tk, job.kernel)
    names = fn.arg_names
    cx = {names[i]: v for (i,), v in job.constexprs.items()}
    parts = []
    for (idx,), val in sorted(job.constexprs.items()):
        n = names[idx]
        if fn.params[idx].is_constexpr:
            if n in ("EPS",):
                continue
            parts.append(f"{n}={int(val) if isinstance(val, bool) else val}")
        else:
            parts.append(f"{n}==1")
    for n, ty in job.signature.items():
        shown = {"x_ptr": True, "c_ptr": True, "bias_ptr": cx.get("HAS_BIAS"), "t_ptr": cx.get("HAS_LR")}
        if shown.get(n) and ty != "constexpr":
            parts.append(f"{n[:-4]}:{ty.lstrip('*')}")
        if n in ("a_desc", "b_desc", "c_desc"):
            parts.append(f"{n[0]}:{ty.replace('tensordesc', 'desc').replace(' ', '')}")
    ints = [names[i] for (i,), a in job.attrs.items() if a and job.signature.get(names[i], "").startswith("i")]
    if ints:
        parts.append("div16:" + ",".join(ints))
    parts.append(f"w{job.options['num_warps']} s{job.options['num_stages']}")
    return " ".join(parts)


def check_ptx(kernel: str, ptx: str, constexprs: dict, arg_names: list) -> tuple[list[str], dict]:
    """Instruction checks; returns (failures, facts)."""
    fails: list[str] = []
    cx = {arg_names[i]: v for (i,), v in constexprs.items()}
    wgmma = sorted(set(re.findall(r"wgmma\.mma_async[\w.]*", ptx)))
    mma = sorted(set(re.findall(r"\bmma\.sync[\w.]*", ptx)))
    facts: dict[str, Any] = {"wgmma": wgmma, "mma_sync": mma}
    if kernel in GEMMS:
        s8_wgmma = [i for i in wgmma if ".s32.s8.s8" in i]
        s8_mma = [i for i in mma if ".s8.s8" in i]
        facts["mma"] = "wgmma.s8" if s8_wgmma else ("mma.sync.s8" if s8_mma else "none")
        if not s8_wgmma:
            fails.append("no int8 wgmma (wgmma.mma_async ... .s32.s8.s8) in the PTX"
                         + (f"; has {s8_mma}" if s8_mma else ""))  # fmt: skip
        facts["cp_async"] = "cp.async.cg" in ptx or "cp.async.ca" in ptx
    if kernel == "_int_gemm_tma_kernel":
        loads = re.findall(r"cp\.async\.bulk\.tensor\.\dd\.shared::\w+\.global", ptx)
        stores = re.findall(r"cp\.async\.bulk\.tensor\.\dd\.global\.shared", ptx)
        facts["tma_loads"], facts["tma_stores"] = len(loads), len(stores)
        if not loads:
            fails.append("no TMA load (cp.async.bulk.tensor.Nd.shared::*.global) in the PTX")
        if cx.get("STORE_DESC") and not stores:
            fails.append("STORE_DESC but no TMA store (cp.async.bulk.tensor ... global.shared) in the PTX")
    if kernel in QUANTS:
        rn = len(re.findall(r"\bdiv\.rn\.f32", ptx))
        approx = re.findall(r"\bdiv\.(?:full|approx)\.f32", ptx)
        facts["div_rn"], facts["div_approx"] = rn, len(approx)
        if not rn or approx:
            fails.append(f"quantizer divisions: {rn} div.rn.f32, {len(approx)} approximate (want IEEE only)")
    return fails, facts


def compile_job(tk, job: Job, target, workdir: str) -> dict:
    import triton
    from triton.compiler import ASTSource

    fn = getattr(tk, job.kernel)
    row: dict[str, Any] = {"kernel": job.kernel, "config": config_str(job, tk), "calls": len(job.calls),
                           "call_sites": job.calls, "signature": job.signature,
                           "constexprs": {fn.arg_names[i]: v if isinstance(v, (bool, int, float, str)) else repr(v)
                                          for (i,), v in job.constexprs.items()},
                           "options": {k: job.options[k] for k in ("num_warps", "num_stages")}}  # fmt: skip
    t0 = time.perf_counter()
    try:
        k = triton.compile(ASTSource(fn, job.signature, job.constexprs, job.attrs), target=target, options=job.options)
    except Exception as e:  # a compile error is the finding: recorded with its message
        row.update(ok=False, seconds=round(time.perf_counter() - t0, 2),
                   error=f"{type(e).__name__}: {str(e)[-2000:]}", trace=traceback.format_exc()[-3000:])  # fmt: skip
        return row
    row["seconds"] = round(time.perf_counter() - t0, 2)
    fails = []
    if "cubin" not in k.asm or not k.asm["cubin"]:
        fails.append("no cubin produced")
    fails_i, facts = check_ptx(job.kernel, k.asm.get("ptx", ""), job.constexprs, fn.arg_names)
    fails += fails_i
    shared = int(getattr(k.metadata, "shared", 0))
    if shared > SM90_MAX_SHARED:
        fails.append(f"needs {shared} B of shared memory > {SM90_MAX_SHARED} (sm_90): OutOfResources at launch")
    res = _resources(k.asm["cubin"], workdir) if k.asm.get("cubin") else {}
    row.update(ok=not fails, failures=fails, shared=shared, regs=res.get("reg"), local=res.get("local"),
               stack=res.get("stack"), **facts)  # fmt: skip
    if fails:
        row["error"] = "; ".join(fails)
    return row


# ---- reporting -------------------------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    head = "| # | kernel | config | result | s | regs | stack B (spills) | smem KiB | mma / tma | calls |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for i, r in enumerate(rows):
        what = r.get("mma", "")
        if r["kernel"] == "_int_gemm_tma_kernel" and r.get("ok") is not None and "tma_loads" in r:
            what += f" tma ld{r['tma_loads']}/st{r['tma_stores']}"
        if r["kernel"] in QUANTS and "div_rn" in r:
            what = f"div.rn x{r['div_rn']}"
        res = "ok" if r.get("ok") else "FAIL: " + r.get("error", "")[:160].replace("|", "/").replace("\n", " ")
        spill = (r.get("local") or 0) + (r.get("stack") or 0) if r.get("regs") is not None else ""
        lines.append(f"| {i} | {r['kernel']} | {r['config']} | {res} | {r.get('seconds', '')} | {r.get('regs', '')} "
                     f"| {spill} | {round(r.get('shared', 0) / 1024, 1) if 'shared' in r else ''} | {what} "
                     f"| {r['calls']} |")  # fmt: skip
    return head + "\n".join(lines) + "\n"


def summary(rows: list[dict], n_calls: int, n_launches: int) -> dict:
    by = {}
    for r in rows:
        s = by.setdefault(r["kernel"], {"compiled": 0, "ok": 0, "fail": 0, "seconds": 0.0, "max_regs": 0,
                                        "spilling": 0, "max_shared": 0})  # fmt: skip
        s["compiled"] += 1
        s["ok" if r.get("ok") else "fail"] += 1
        s["seconds"] = round(s["seconds"] + r.get("seconds", 0.0), 1)
        s["max_regs"] = max(s["max_regs"], r.get("regs") or 0)
        s["spilling"] += int(bool(r.get("local") or r.get("stack")))
        s["max_shared"] = max(s["max_shared"], r.get("shared") or 0)
    return {"calls": n_calls, "launches": n_launches, "compiles": len(rows),
            "failed": sum(not r.get("ok") for r in rows), "by_kernel": by}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", choices=("full", "test"), default="full")
    ap.add_argument("--out", default=None, help="directory for compile_check_<UTC>.json/.md (e.g. runs/bench/...)")
    ap.add_argument("--filter", default=None, help="regex: compile only jobs whose kernel+config matches")
    ap.add_argument("--list", action="store_true", help="enumerate and specialise only; compile nothing")
    ap.add_argument("--cache-dir", default=None, help="Triton cache (default: a fresh temporary one, so every "
                    "configuration is really compiled)")  # fmt: skip
    ap.add_argument("--max-jobs", type=int, default=0, help="compile at most this many (0: all)")
    args = ap.parse_args(argv)

    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") == "1":
        print("TRITON_INTERPRET=1 is set in a process that already imported Triton: run this script in a fresh "
              "process (the interpreter's kernels cannot be compiled)", file=sys.stderr)  # fmt: skip
        return 2
    os.environ["TRITON_INTERPRET"] = "0"  # the kernels must be JITFunctions, not interpreter functions
    tmp = tempfile.mkdtemp(prefix="vqcore_aot_")
    os.environ["TRITON_CACHE_DIR"] = args.cache_dir or os.path.join(tmp, "cache")

    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction

    from vqcore.kernels import triton_kernels as tk

    if not isinstance(tk._int_gemm_kernel, JITFunction):
        print("vqcore.kernels.triton_kernels was imported in interpreter mode; run in a fresh process", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    target = GPUTarget("cuda", 90, 32)  # what the CUDA driver reports on an H100/H200 (third field: warp size)
    backend = make_backend(target)
    t_enum = time.perf_counter()
    sink = _Sink()
    calls = enumerate_calls(args.subset, tk)
    enum_errors = []
    with recording(tk, sink):
        for desc, thunk in calls:
            sink.call = desc
            before = len(sink.launches)
            try:
                thunk()
            except Exception as e:  # a call the API refuses is a finding of the enumeration, not a kernel failure
                enum_errors.append(f"{desc}: {type(e).__name__}: {e}")
                continue
            if len(sink.launches) == before:
                enum_errors.append(f"{desc}: launched no kernel")
    jobs = specialize(tk, backend, _binders(tk, backend), sink.launches)
    if args.filter:
        rx = re.compile(args.filter)
        jobs = [j for j in jobs if rx.search(j.kernel + " " + config_str(j, tk))]
    if args.max_jobs:
        jobs = jobs[: args.max_jobs]
    t_enum = time.perf_counter() - t_enum
    kinds = {n: sum(j.kernel == n for j in jobs) for n in KERNELS}
    print(f"{len(calls)} calls -> {len(sink.launches)} launches -> {len(jobs)} distinct compiles {kinds} "
          f"(enumerated in {t_enum:.1f} s); Triton {triton.__version__}, target {target}", flush=True)  # fmt: skip
    for e in enum_errors:
        print("ENUMERATION:", e)
    if args.list:
        for j in jobs:
            print(f"{j.kernel:24s} {config_str(j, tk)}  ({len(j.calls)} calls, e.g. {j.calls[0]})")
        return 1 if enum_errors else 0
    missing = [n for n in KERNELS if not kinds[n]]
    rows = []
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        row = compile_job(tk, job, target, tmp)
        rows.append(row)
        status = "ok  " if row.get("ok") else "FAIL"
        print(f"[{i + 1}/{len(jobs)}] {status} {row['seconds']:6.2f}s regs={row.get('regs')} "
              f"{job.kernel} {row['config']}" + ("" if row.get("ok") else f"\n      {row.get('error', '')[:400]}"),
              flush=True)  # fmt: skip
    wall = time.perf_counter() - t0
    summ = summary(rows, len(calls), len(sink.launches))
    summ["missing_kernels"] = missing if not args.filter else []
    summ["enumeration_errors"] = enum_errors
    print("\n" + table(rows))
    for name, s in summ["by_kernel"].items():
        print(f"{name}: {s['ok']}/{s['compiled']} ok, {s['seconds']} s, max regs {s['max_regs']}, "
              f"{s['spilling']} spilling, max shared {s['max_shared']} B")  # fmt: skip
    ok = not summ["failed"] and not enum_errors and not summ["missing_kernels"]
    print(f"{'OK' if ok else 'FAILED'}: {summ['compiles'] - summ['failed']}/{summ['compiles']} compiles passed "
          f"in {wall:.0f} s" + (f"; kernels never launched: {missing}" if summ["missing_kernels"] else "")
          + (f"; {len(enum_errors)} enumeration errors" if enum_errors else ""))  # fmt: skip
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
        meta = {"date_utc": stamp, "triton": triton.__version__, "torch": torch.__version__, "target": str(target),
                "host": f"{platform.machine()} {platform.node()}", "subset": args.subset, "filter": args.filter,
                "wall_s": round(wall, 1), "ptxas": _ptxas_version(), "dispatch": dispatch_tables(tk)}  # fmt: skip
        (out / f"compile_check_{stamp}.json").write_text(json.dumps({"meta": meta, "summary": summ, "rows": rows},
                                                                    indent=1, default=str))  # fmt: skip
        (out / f"compile_check_{stamp}.md").write_text(f"{json.dumps(meta)}\n\n{table(rows)}")
        print(f"wrote {out / f'compile_check_{stamp}.json'}")
    return 0 if ok else 1


def dispatch_tables(tk) -> dict:
    """The tables the enumeration read (for the JSON: what "every configuration" meant at this commit)."""
    return {
        "POLICY_keys": sorted(tk.POLICY),
        "PTR_TILES": {str(k): v for k, v in tk.PTR_TILES.items()},
        "TMA_TILES": tk.TMA_TILES,
        "hopper_configs": [c.all_kwargs() for c in tk._hopper_configs()],
        "autotune_large_M": [c.all_kwargs() for c in tk._prune(tk._hopper_configs(), {"M": tk._LARGE_M})],
        "autotune_small_M": [c.all_kwargs() for c in tk._prune(tk._hopper_configs(), {"M": 1})],
    }


def _ptxas_version() -> str:
    try:
        from triton import knobs

        txt = subprocess.run([knobs.nvidia.ptxas.path, "--version"], capture_output=True, text=True).stdout
        return txt.strip().splitlines()[-1]
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())

"""Triton kernels: per-token (dynamic) and static per-tensor activation quantization, and the int8×int8 /
int4(packed)×int8 GEMM.

Imported lazily (only by the CUDA implementations of the custom ops, the benchmarks and the tests): importing this
module imports ``triton``. With ``TRITON_INTERPRET=1`` set *before* this module is first imported, the kernels run in
Triton's CPU interpreter on CPU tensors (that is how the CPU test-suite checks them); the autotuner is then bypassed and
small fixed tiles are used.

Numerics are those of :mod:`vqcore.kernels.reference` (read its docstring). Design notes:

* GEMM operands: activations ``A`` int8 ``[M, K]`` row-major, weights int8 ``[N, K]`` (K-major — the layout Hopper's
  int8 ``wgmma`` wants for both operands), or int4 packed two per byte with the chunked layout of
  :mod:`vqcore.kernels.packing`, unpacked in registers (``(p << 4) >> 4`` and ``p >> 4``, arithmetic shifts) into two
  contiguous K-slices, each multiplied with its own contiguous activation slice. Hopper has no 4-bit MMA, so W4A8 runs
  on the int8 tensor cores; its gain over W8A8 is only the halved weight traffic/memory.
* The K loop walks chunks of 128 (``CHUNK``); int32 accumulation is exact. Per-channel weight scales are applied once in
  the epilogue; per-group scales (``group_size`` a multiple of 64 for int4, of 128 for int8) are applied per K-slice to
  a float32 accumulator.
* Epilogue: ``y = scale_x[m] · (acc·scale_w[n] − zp_x[m]·wsum[n]) + bias[n] + (t @ upᵀ)[m, n]``, cast to the output
  dtype. ``wsum[n] = Σ_k w[n,k]·scale_w[n,k]`` is precomputed at conversion time (only needed for asymmetric
  activations). The low-rank side branch's up-projection is a second small ``tl.dot`` (rank padded to 16..64) fused
  into the epilogue; its down-projection ``t = x·downᵀ`` is a thin GEMM done outside.
* Divisions in the quantizer are IEEE round-to-nearest (``tl.math.div_rn``, not Triton's default approximate fp32
  division), so the GPU codes equal those of PyTorch bit for bit.
* Besides this pointer-based GEMM (the default below 4096 tokens) there is a persistent TMA GEMM
  (``_int_gemm_tma_kernel``) and a W4 → int8 unpack kernel for an unpack-then-int8-GEMM path; both are the default
  at M ≥ 4096, where an H100 measured them faster (:data:`POLICY`).
* Rounding to nearest-even in the quantizer uses the float32 magic-number trick ``(v + 1.5·2^23) − 1.5·2^23``
  (valid for ``|v| < 2^22``; here ``|v| ≤ 255``), which behaves identically on the GPU and in the interpreter.

Layout (one job per module; this module re-exports their names, so ``vqcore.kernels.triton_kernels.X`` keeps working):
:mod:`.triton_quant` (the quantizers), :mod:`.triton_gemm` (the pointer and TMA integer GEMM kernels),
:mod:`.triton_unpack` (W4 → int8 unpack), :mod:`.triton_policy` (interpreter switch, tile tables, autotune space,
:data:`POLICY`, TMA shared-memory fit), :mod:`.triton_int_linear` (the GEMM launcher :func:`int_linear`),
:mod:`.triton_weight_only` (the small-M weight-only GEMM and its opt-in split-K). A name is looked up in the module
that uses it: to patch a kernel or a helper (as ``tools/vqcore_kernels_compile_check.py`` does), patch it there;
:data:`POLICY` and the tile tables are shared dicts, so updating them here updates them everywhere (the split-K flag
``WONLY_SPLIT_K`` is a string: set it in ``triton_weight_only``).
"""

from __future__ import annotations

from .triton_gemm import _bcast_n, _epilogue, _int_gemm_kernel, _int_gemm_tma_kernel, _mma, _tile_coords  # noqa: F401
from .triton_int_linear import int_linear
from .triton_policy import (  # noqa: F401
    _BIG,
    _INTERP_TILE,
    _INTERP_TMA,
    _KEYS,
    _LARGE_M,
    _SM90_SHARED,
    _SMALL,
    _SMS,
    _TUNED,
    CHUNK,
    INTERPRET,
    POLICY,
    PTR_TILES,
    TMA_TILES,
    _fast_bench,
    _hopper_configs,
    _int_gemm_tuned,
    _num_sms,
    _prune,
    _size_class,
    _tma_fit,
    _tma_ok,
    _tma_shared_bytes,
)
from .triton_quant import (  # noqa: F401
    _MAGIC,
    QUANT_TILE,
    _quant_launch,
    _quant_outputs,
    _quant_per_token_kernel,
    _quant_static_kernel,
    _rne,
    _round_quotient,
    quantize_per_token,
    quantize_static,
)
from .triton_unpack import _unpack_int4_kernel, unpack_int4  # noqa: F401
from .triton_weight_only import (  # noqa: F401
    _INTERP_WONLY,
    WONLY_TILES,
    _wonly_gemm_kernel,
    _wonly_splitk_reduce_kernel,
    choose_split_k,
    weight_only_linear,
)

__all__ = ["CHUNK", "INTERPRET", "POLICY", "PTR_TILES", "QUANT_TILE", "TMA_TILES", "WONLY_TILES", "int_linear",
           "quantize_per_token", "quantize_static", "unpack_int4", "weight_only_linear"]

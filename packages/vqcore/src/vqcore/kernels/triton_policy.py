"""Dispatch and autotune policy of the Triton GEMMs: the interpreter switch, the tile tables (pointer and TMA kernels,
by M class), the Hopper autotune space, the switches of :data:`POLICY`, and the TMA kernel's shared-memory fit."""

from __future__ import annotations

import os

import torch
import triton

from .triton_gemm import _int_gemm_kernel

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
CHUNK = 128
_SM90_SHARED = 232448  # bytes of shared memory one sm_90 block can use (227 KiB)

_BIG = [(0, 128, 256, 8, 3), (0, 128, 256, 8, 4), (0, 256, 128, 8, 3), (1, 128, 256, 8, 3), (1, 256, 128, 8, 3),
        (1, 128, 256, 8, 4)]  # fmt: skip
_SMALL = [(0, 128, 128, 4, 4), (0, 64, 64, 4, 4), (0, 64, 128, 4, 4), (1, 128, 128, 4, 4), (1, 64, 128, 4, 4)]
_LARGE_M = 4096


def _hopper_configs() -> list:
    """Autotune space for H100/H200 (sm_90) of the pointer-based kernel (``VQCORE_AUTOTUNE=1``). The K tile is fixed
    to the 128-wide packing chunk; both operand orientations are in the space (SWAP=1: weights as the left wgmma
    operand). Large-M problems (≥ 4096 rows) try only the large tiles, small-M problems only the small ones."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": 8, "SWAP": swap}, num_warps=warps, num_stages=stages)
        for swap, bm, bn, warps, stages in _BIG + _SMALL
    ]


def _prune(configs, named_args, **kwargs):
    big = named_args["M"] >= _LARGE_M
    keep = [c for c in configs if (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] >= 128 * 256) == big]
    return keep or configs


def _fast_bench(kernel_call, quantiles):
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


_KEYS = ["M", "N", "K", "W4", "GROUP_SIZE", "HAS_ZP", "HAS_WZP", "HAS_BIAS", "HAS_LR"]
_TUNED = {}


def _int_gemm_tuned():
    if "k" not in _TUNED:
        _TUNED["k"] = triton.autotune(
            configs=_hopper_configs(), key=_KEYS, prune_configs_by={"early_config_prune": _prune},
            do_bench=_fast_bench,
        )(_int_gemm_kernel)  # fmt: skip
    return _TUNED["k"]


_INTERP_TILE = {"BLOCK_M": 16, "BLOCK_N": 32, "GROUP_M": 2, "SWAP": 0}
_INTERP_TMA = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "PROGRAMS": 3}

#: Dispatch policy of :func:`int_linear` (module-level so the benchmark can compare paths in one process). The defaults
#: are the paths measured fastest on an H100 (2026-12-07, docs/kernels.md): at M ≥ 4096 the persistent TMA kernel
#: (W8A8 GEMM 1.60× bf16 median over the six video-DiT shapes, vs 1.31× for the autotuned pointer kernel) and W4
#: weights unpacked to a transient int8 copy first (W4A8 1.61× vs 0.84× with the unpack inside the K loop; per-group
#: g128 0.75× vs 0.42×); below 4096 tokens (not measured with TMA) the autotuned pointer kernel.
#: ``tma`` (``VQCORE_TMA=0`` turns it off) and ``tma_min_m`` (``VQCORE_TMA_MIN_M``, 4096) — per-channel int8 GEMMs
#: with M ≥ tma_min_m use the persistent TMA kernel on sm_90+ when K % 16 == 0;
#: ``tma_group`` (``VQCORE_TMA_GROUP=0`` turns it off) — per-group int8 GEMMs (groups of a multiple of 128) too;
#: ``w4_unpack_min_m`` (``VQCORE_W4_UNPACK_MIN_M``, 4096) — W4 weights (per channel or groups of a multiple of 128)
#: are unpacked to a transient int8 copy and run through the int8 GEMM when M ≥ this;
#: ``autotune`` (``VQCORE_AUTOTUNE=0`` turns it off) — autotune the pointer kernel over :func:`_hopper_configs`
#: instead of using the fixed table ``PTR_TILES``.
POLICY = {
    "tma": os.environ.get("VQCORE_TMA", "1") == "1",
    "tma_min_m": int(os.environ.get("VQCORE_TMA_MIN_M", "4096")),
    "w4_unpack_min_m": int(os.environ.get("VQCORE_W4_UNPACK_MIN_M", "4096")),
    "autotune": os.environ.get("VQCORE_AUTOTUNE", "1") == "1",
    "tma_group": os.environ.get("VQCORE_TMA_GROUP", "1") == "1",
}
#: Fixed TMA tiles by M class (``large``: M ≥ 4096 — the best tiles of the H100 run: 128×256, 3 stages, flattened
#: tile/K loop and TMA store, 0.472 / 0.451 ms on CogVideoX fc1 / fc2 vs 0.516 / 0.481 ms for the former 4-stage
#: entry; ``group``: 128×128, 4 stages, no PAIR — 0.96–1.13 ms on the g128 shapes where PAIR took 1.94–1.99 ms).
TMA_TILES = {
    "large": {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 3,
              "FLATTEN": True, "STORE_DESC": True},  # fmt: skip
    "small": {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 4},
    "tiny": {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
    "group": {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 4,
              "PAIR": False},  # fmt: skip
}
PTR_TILES = {
    ("large", False, 0): {"BLOCK_M": 128, "BLOCK_N": 256, "SWAP": 0, "num_warps": 8, "num_stages": 4},
    ("large", True, 0): {"BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8, "num_stages": 3},
    ("large", False, 1): {"BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8, "num_stages": 3},
    ("large", True, 1): {"BLOCK_M": 256, "BLOCK_N": 128, "SWAP": 1, "num_warps": 8, "num_stages": 3},
    ("small", False, 0): {"BLOCK_M": 64, "BLOCK_N": 128, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("small", True, 0): {"BLOCK_M": 128, "BLOCK_N": 128, "SWAP": 1, "num_warps": 4, "num_stages": 4},
    ("small", False, 1): {"BLOCK_M": 64, "BLOCK_N": 128, "SWAP": 1, "num_warps": 4, "num_stages": 4},
    ("small", True, 1): {"BLOCK_M": 64, "BLOCK_N": 128, "SWAP": 1, "num_warps": 4, "num_stages": 4},
    ("tiny", False, 0): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("tiny", True, 0): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("tiny", False, 1): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
    ("tiny", True, 1): {"BLOCK_M": 64, "BLOCK_N": 64, "SWAP": 0, "num_warps": 4, "num_stages": 4},
}


def _size_class(m: int) -> str:
    return "large" if m >= _LARGE_M else ("small" if m > 128 else "tiny")


_SMS: dict = {}


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


def _tma_shared_bytes(stages: int, bm: int, bn: int, bk: int, out_bytes: int, rp: int, has_lr: bool, tile: dict) -> int:
    """Estimate (from above) of the TMA kernel's shared memory, fitted to what Triton 3.8 allocates for sm_90 (read
    off the ahead-of-time compile check's table): the K pipeline ``stages · (BM + BN) · BK`` int8 bytes (twice that
    with ``PAIR``); with ``STORE_DESC`` and/or ``FLATTEN`` one ``BM × BN`` output tile (the TMA store's staging buffer,
    or the epilogue's layout conversion kept live beside the next tile's loads: one buffer serves both); with both
    and a low-rank branch its ``t``/``up`` tiles too; plus 2 KiB for barriers."""
    store, flat = bool(tile.get("STORE_DESC")), bool(tile.get("FLATTEN"))
    size = stages * (bm + bn) * bk * (2 if tile.get("PAIR") else 1) + 2048
    if store or flat:
        size += bm * bn * out_bytes
    if store and flat and has_lr:
        size += (bm + bn) * rp * 4
    return size


def _tma_fit(stages: int, bm: int, bn: int, bk: int, out_bytes: int, rp: int, has_lr: bool, tile: dict) -> int:
    """Pipeline depth for a :data:`TMA_TILES` entry (whose ``num_stages`` the caller did not set), so the launch fits
    an sm_90 block's 227 KiB of shared memory: the table's stages, lowered to no fewer than 2; if 2 stages still do not
    fit, the scheduling hints ``FLATTEN``, then ``STORE_DESC``, are turned off (``tile`` is updated; the results are
    the same either way). Without this the large tile's 4 stages with ``STORE_DESC`` need 256 KiB and fail at launch
    (``OutOfResources``), which ``tools/vqcore_kernels_compile_check.py`` found; the default flags keep the table."""
    start = stages
    for hint in (None, "FLATTEN", "STORE_DESC"):
        if hint:
            tile[hint] = False
        stages = start
        while stages > 2 and _tma_shared_bytes(stages, bm, bn, bk, out_bytes, rp, has_lr, tile) > _SM90_SHARED:
            stages -= 1
        if _tma_shared_bytes(stages, bm, bn, bk, out_bytes, rp, has_lr, tile) <= _SM90_SHARED:
            break
    return stages


def _tma_ok(xq: torch.Tensor, w: torch.Tensor, k: int) -> bool:
    if k % 16 or w.stride(0) % 16 or xq.stride(0) % 16 or xq.data_ptr() % 16 or w.data_ptr() % 16:
        return False
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401
    except ImportError:
        return False
    return INTERPRET or (xq.is_cuda and torch.cuda.get_device_capability(xq.device)[0] >= 9)

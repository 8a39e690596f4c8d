"""The integer GEMM launcher :func:`int_linear`: picks the path of :data:`~vqcore.kernels.triton_policy.POLICY`
(pointer kernel, autotuned or from the tile table; persistent TMA kernel; W4 unpacked first) and launches it."""

from __future__ import annotations

import torch
import triton

from .triton_gemm import _int_gemm_kernel, _int_gemm_tma_kernel
from .triton_policy import (
    _INTERP_TILE,
    _INTERP_TMA,
    CHUNK,
    INTERPRET,
    POLICY,
    PTR_TILES,
    TMA_TILES,
    _int_gemm_tuned,
    _num_sms,
    _size_class,
    _tma_fit,
    _tma_ok,
)
from .triton_unpack import unpack_int4


def int_linear(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    x_zp: torch.Tensor | None,
    x_rowsum: torch.Tensor | None,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    group_size: int,
    w4: bool,
    k: int,
    w_sum: torch.Tensor | None,
    w_zp: torch.Tensor | None,
    bias: torch.Tensor | None,
    lr_t: torch.Tensor | None,
    lr_up: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: dict | None = None,
) -> torch.Tensor:
    """Launch the integer GEMM. ``w`` is int8 ``[N, K]`` (``w4=False``) or packed int4 ``[N, padded_k(K)/2]``.

    Paths (see :data:`POLICY`): W4 with M ≥ ``w4_unpack_min_m`` → :func:`unpack_int4` + int8 GEMM; per-channel int8
    GEMMs → the persistent TMA kernel (sm_90+, K % 16 == 0) or the pointer kernel; per-group → the pointer kernel.
    ``config`` overrides the choice: keys ``PATH`` (``"tma"``/``"ptr"``), ``UNPACK`` (bool) and the tile parameters
    of that kernel (``BLOCK_M``, ``BLOCK_N``, ``GROUP_M``, ``SWAP`` / ``BLOCK_K``, ``PROGRAMS``; optional
    ``num_warps``/``num_stages``)."""
    m = xq.shape[0]
    n = w.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=xq.device)
    if m == 0 or n == 0:
        return out
    if xq.stride(1) != 1:
        xq = xq.contiguous()
    if w.stride(1) != 1:
        w = w.contiguous()
    cfg = dict(config or {})
    path = cfg.pop("PATH", None)
    unpack = cfg.pop("UNPACK", None)
    if unpack is None:
        unpack = m >= POLICY["w4_unpack_min_m"] and not INTERPRET
    if w4 and unpack and group_size % CHUNK == 0:
        w, w4 = unpack_int4(w), False  # [N, padded K] int8, zero codes in the padding
    g = w_scale.shape[1] if group_size > 0 else 1
    w_scale = w_scale.contiguous().float()
    has_lr = lr_t is not None
    r = lr_t.shape[1] if has_lr else 0
    rp = max(16, triton.next_power_of_2(r)) if has_lr else 16
    if has_lr:
        lr_t = lr_t.contiguous()
        lr_up = lr_up.contiguous()
    dummy = x_scale
    tail = (
        x_scale, x_zp if x_zp is not None else dummy, x_rowsum if w_zp is not None else dummy, w_scale,
        w_sum if w_sum is not None else dummy, w_zp if w_zp is not None else dummy,
        bias if bias is not None else dummy, lr_t if has_lr else dummy, lr_up if has_lr else dummy, out,
    )  # fmt: skip
    strides_lr = (lr_t.stride(0) if has_lr else 0, lr_up.stride(0) if has_lr else 0)
    flags = {"HAS_ZP": x_zp is not None, "HAS_WZP": w_zp is not None, "HAS_BIAS": bias is not None, "HAS_LR": has_lr,
             "RP": rp}  # fmt: skip
    if path is None:
        use_tma = POLICY["tma"] and m >= POLICY["tma_min_m"] and not INTERPRET
        grouped_ok = group_size == 0 or (POLICY["tma_group"] and group_size % CHUNK == 0)
        path = "tma" if use_tma and not w4 and grouped_ok and _tma_ok(xq, w, k) else "ptr"
    size = _size_class(m)
    if path == "tma":
        from triton.tools.tensor_descriptor import TensorDescriptor

        if w4:
            raise ValueError("the TMA kernel runs int8 weights only (W4: unpack first, UNPACK=True)")
        tile = dict(_INTERP_TMA if INTERPRET else TMA_TILES[size if not group_size else "group"])
        if "num_stages" in cfg:  # an explicit pipeline depth is an explicit tile: the table's hints do not apply
            for hint in ("FLATTEN", "STORE_DESC", "PAIR"):
                tile.pop(hint, None)
        tile.update(cfg)
        if group_size % tile["BLOCK_K"]:
            raise ValueError(f"the TMA kernel needs group_size % BLOCK_K == 0, got {group_size} and {tile['BLOCK_K']}")
        tile["GROUP_SIZE"] = int(group_size)
        launch = {kk: tile.pop(kk) for kk in ("num_warps", "num_stages") if kk in tile}
        bm, bn, bk = tile["BLOCK_M"], tile["BLOCK_N"], tile["BLOCK_K"]
        programs = tile.pop("PROGRAMS", None) or _num_sms(xq.device)
        programs = max(1, min(programs, triton.cdiv(m, bm) * triton.cdiv(n, bn)))
        a_desc = TensorDescriptor(xq, shape=[m, k], strides=[xq.stride(0), 1], block_shape=[bm, bk])
        b_desc = TensorDescriptor(w, shape=[n, k], strides=[w.stride(0), 1], block_shape=[bn, bk])
        if tile.get("STORE_DESC") and (out.stride(0) * out.element_size()) % 16:
            tile["STORE_DESC"] = False  # TMA stores need 16-byte row strides
        if "num_stages" in launch and "num_stages" not in cfg:
            launch["num_stages"] = _tma_fit(launch["num_stages"], bm, bn, bk, out.element_size(), rp, has_lr, tile)
        c_desc = TensorDescriptor(out, shape=[m, n], strides=[out.stride(0), 1], block_shape=[bm, bn]) if tile.get(
            "STORE_DESC") else a_desc  # fmt: skip
        _int_gemm_tma_kernel[(programs,)](
            a_desc, b_desc, c_desc, *tail, m, n, k, r, g, *strides_lr, out.stride(0), programs,
            **flags, **tile, **launch,
        )  # fmt: skip
        return out
    args = (xq, tail[0], tail[1], tail[2], w, *tail[3:], m, n, k, r, g, xq.stride(0), w.stride(0), *strides_lr,
            out.stride(0))  # fmt: skip
    flags.update({"W4": bool(w4), "GROUP_SIZE": int(group_size), "EVEN_K": k % CHUNK == 0})
    if not cfg and POLICY["autotune"] and not INTERPRET:

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

        _int_gemm_tuned()[grid](*args, **flags)
        return out
    tile = {"GROUP_M": 8, **(_INTERP_TILE if INTERPRET else PTR_TILES[(size, bool(w4), int(group_size > 0))]), **cfg}
    launch = {kk: tile.pop(kk) for kk in ("num_warps", "num_stages") if kk in tile}
    grid = (triton.cdiv(m, tile["BLOCK_M"]) * triton.cdiv(n, tile["BLOCK_N"]),)
    _int_gemm_kernel[grid](*args, **flags, **tile, **launch)
    return out

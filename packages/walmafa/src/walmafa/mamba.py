"""A pure-PyTorch Mamba (selective state-space) block: runs on any device, no ``mamba-ssm`` needed.

Implements the Mamba-v1 block of Gu & Dao (2023, arXiv 2312.00752, Sec. 3 and Alg. 2) with the parameter names and
initialisation of the reference ``mamba_ssm.modules.mamba_simple.Mamba`` so that state dicts trained with
``mamba-ssm`` load strictly: ``in_proj.weight``, ``conv1d.weight/bias``, ``x_proj.weight``, ``dt_proj.weight/bias``,
``A_log``, ``D``, ``out_proj.weight``.

The discretised recurrence (zero-order hold for A, Euler for B, as in the reference kernel) is, per channel d and
state index n::

    h_t = exp(Δ_t · A) ⊙ h_{t-1} + Δ_t · B_t · x_t,        y_t = <C_t, h_t> + D · x_t

Two scans are provided:

* :func:`selective_scan_sequential` — a plain loop over time; the numerical reference.
* :func:`selective_scan_chunked` — the time axis is cut into chunks of ``chunk_size``; each chunk's end state from a
  zero start is formed in parallel from the cumulative log-decay ``S_t = Σ_{s≤t} Δ_s A`` as
  ``Σ_s exp(S_T − S_s) u_s`` (every exponent ≤ 0, so nothing overflows however long the sequence is); the states
  carried between chunks follow the linear recurrence ``h_k = a_k h_{k−1} + b_k``, solved with a log-depth
  (Hillis–Steele) scan whose products are sums of log-decays; finally all chunks run their T steps at once from
  their carried states. L sequential steps become ``T + log2(L / T)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Mamba", "selective_scan_sequential", "selective_scan_chunked", "set_scan", "SCANS"]

# "triton": the fused forward kernel of walmafa.scan_triton when no gradient is needed on a CUDA device, else chunked
SCANS = ("chunked", "sequential", "triton")


def _check_scan_args(x, delta, A, B, C, D):
    if x.ndim != 3:
        raise ValueError(f"x must be [batch, d_inner, length], got shape {tuple(x.shape)}")
    b, d, length = x.shape
    if delta.shape != x.shape:
        raise ValueError(f"delta must have the shape of x {tuple(x.shape)}, got {tuple(delta.shape)}")
    if A.ndim != 2 or A.shape[0] != d:
        raise ValueError(f"A must be [d_inner={d}, d_state], got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (b, n, length):
            raise ValueError(f"{name} must be [batch={b}, d_state={n}, length={length}], got {tuple(t.shape)}")
    if D is not None and D.shape != (d,):
        raise ValueError(f"D must be [d_inner={d}], got {tuple(D.shape)}")


def selective_scan_sequential(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                              C: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """Reference selective scan: a loop over time. Shapes: x, delta ``[b, d, L]``; A ``[d, n]``; B, C ``[b, n, L]``;
    D ``[d]``. Returns y ``[b, d, L]`` in x's dtype (computed in at least float32)."""
    _check_scan_args(x, delta, A, B, C, D)
    dtype = x.dtype
    ct = torch.promote_types(dtype, torch.float32)
    x, delta, A, B, C = (t.to(ct) for t in (x, delta, A, B, C))
    b, d, length = x.shape
    h = x.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        decay = torch.exp(delta[:, :, t, None] * A)  # [b, d, n]
        h = decay * h + (delta[:, :, t] * x[:, :, t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=-1) if ys else x.new_zeros(b, d, 0)
    if D is not None:
        y = y + D.to(ct)[None, :, None] * x
    return y.to(dtype)


def _chunk_state_scan(log_a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of ``h_k = exp(log_a_k) · h_{k−1} + b_k`` (h_{−1} = 0) along dim 1, in log2(K) parallel steps.

    ``log_a`` and ``b`` are ``[batch, K, ...]`` with ``log_a ≤ 0``; returns every h_k.
    """
    k = b.shape[1]
    la, h = log_a, b
    step = 1
    while step < k:
        # combine element i with element i - step: (la_j, h_j) ∘ (la_i, h_i) = (la_j + la_i, exp(la_i) h_j + h_i)
        h_prev = F.pad(h[:, :-step], [0] * (2 * (h.ndim - 2)) + [step, 0])
        la_prev = F.pad(la[:, :-step], [0] * (2 * (la.ndim - 2)) + [step, 0])
        h = h + torch.exp(la) * h_prev
        la = la + la_prev
        step *= 2
    return h


def selective_scan_chunked(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: torch.Tensor | None = None, chunk_size: int = 64) -> torch.Tensor:
    """Chunked parallel selective scan, numerically equal to :func:`selective_scan_sequential`.

    The length-L sequence is cut into ``K = ceil(L / T)`` chunks of ``T = chunk_size`` steps (zero-padded at the end:
    Δ = 0 there, so the padding neither decays nor feeds the state).

    1. Per chunk, in parallel over all chunks: the cumulative log-decay ``S_t = Σ_{s≤t} Δ_s A`` and the state the
       chunk would reach from a zero start, ``b_k = Σ_s exp(S_T − S_s) · Δ_s B_s x_s`` (exponents ≤ 0: stable).
    2. Across chunks: ``h_k = exp(S_T,k) · h_{k−1} + b_k`` by a log-depth Hillis–Steele scan over K.
    3. Within chunks, all chunks at once: T recurrence steps starting from the carried state ``h_{k−1}``,
       reading out ``y_t = <C_t, h_t>``.

    Work is a few passes over ``[b, L, d, n]``; the number of sequential steps is ``T + log2(K)`` instead of L.
    """
    _check_scan_args(x, delta, A, B, C, D)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    dtype = x.dtype
    ct = torch.promote_types(dtype, torch.float32)
    x, delta, A, B, C = (t.to(ct) for t in (x, delta, A, B, C))
    b, d, length = x.shape
    n = A.shape[1]
    if length == 0:
        return x.clone().to(dtype)
    T = min(chunk_size, length)
    nc = math.ceil(length / T)
    pad = nc * T - length
    # chunk-major layout [b, nc, T, ...]
    dt = F.pad(delta, (0, pad)).view(b, d, nc, T).permute(0, 2, 3, 1)
    xt = F.pad(x, (0, pad)).view(b, d, nc, T).permute(0, 2, 3, 1)
    Bt = F.pad(B, (0, pad)).view(b, n, nc, T).permute(0, 2, 3, 1)
    Ct = F.pad(C, (0, pad)).view(b, n, nc, T).permute(0, 2, 3, 1)

    dA = dt[..., None] * A  # [b, nc, T, d, n] log-decay per step (≤ 0)
    u = (dt * xt)[..., None] * Bt[:, :, :, None, :]  # [b, nc, T, d, n] input to the state
    S = torch.cumsum(dA, dim=2)
    S_end = S[:, :, -1]  # [b, nc, d, n]
    b_local = (torch.exp(S_end[:, :, None] - S) * u).sum(dim=2)  # state at each chunk end from a zero start
    del S
    h_end = _chunk_state_scan(S_end, b_local)  # [b, nc, d, n]
    h = F.pad(h_end[:, :-1], (0, 0, 0, 0, 1, 0))  # state entering each chunk; the first starts from zero
    # unbind once: indexing inside the loop would make autograd allocate a full-size gradient per step
    # one fused multiply-add per step (few kernel launches: the scan is launch-bound on GPUs), one read-out at the end
    decays, inputs = torch.exp(dA).unbind(2), u.unbind(2)
    hs = []
    for t in range(T):
        h = torch.addcmul(inputs[t], decays[t], h)
        hs.append(h)
    y = torch.einsum("bctdn,bctn->bctd", torch.stack(hs, dim=2), Ct)
    y = y.reshape(b, nc * T, d)[:, :length].transpose(1, 2)
    if D is not None:
        y = y + D.to(ct)[None, :, None] * x
    return y.contiguous().to(dtype)


def _use_triton(x: torch.Tensor, module: nn.Module) -> bool:
    from .scan_triton import triton_available

    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))
    return not needs_grad and triton_available(x.device)


def set_scan(model: nn.Module, scan: str | None = None, chunk_size: int | None = None) -> nn.Module:
    """Switch every :class:`Mamba` in ``model`` (and a ``config`` that records it) to ``scan`` and/or
    ``chunk_size``; the scans compute the same function, so the weights are unaffected. Returns ``model``."""
    if scan is not None and scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for m in model.modules():
        if isinstance(m, Mamba):
            m.scan = scan or m.scan
            m.chunk_size = chunk_size or m.chunk_size
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "scan"):
        cfg.scan = scan or cfg.scan
        cfg.chunk_size = chunk_size or cfg.chunk_size
    return model


class Mamba(nn.Module):
    """Mamba-v1 block (Gu & Dao 2023, Fig. 3 "Mamba"), same parameters and init as ``mamba_ssm``'s ``Mamba``.

    Input and output are ``[batch, length, d_model]``.

    Args:
        d_model: model width.
        d_state: SSM state size N.
        d_conv: width of the causal depthwise convolution.
        expand: ``d_inner = expand * d_model``.
        dt_rank: rank of the Δ projection; ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min, dt_max, dt_init_floor, dt_scale: Δ initialisation (log-uniform in [dt_min, dt_max]).
        scan: ``"chunked"`` (default), ``"sequential"`` (the reference loop) or ``"triton"`` (the fused forward
            kernel of :mod:`walmafa.scan_triton` for inference on CUDA; the chunked scan whenever a gradient is
            needed or Triton/CUDA is missing).
        chunk_size: chunk length of the chunked scan.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_scale: float = 1.0, conv_bias: bool = True, bias: bool = False,
                 scan: str = "chunked", chunk_size: int = 64):
        super().__init__()
        for name, v in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan, self.chunk_size = scan, chunk_size

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # Δ projection: weight ~ U(±dt_scale·rank^-1/2); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
        std = self.dt_rank**-0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation: A = -(1..N) for every channel, stored as log
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.ndim != 3 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"input must be [batch, length, d_model={self.d_model}], got {tuple(hidden.shape)}")
        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # [b, 2·d_inner, L]
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])
        x_dbl = self.x_proj(x.transpose(1, 2))  # [b, L, R + 2N]
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus((dt @ self.dt_proj.weight.t()).float() + self.dt_proj.bias.float()).transpose(1, 2)
        A = -torch.exp(self.A_log.float())
        Bm, Cm = Bm.transpose(1, 2).float(), Cm.transpose(1, 2).float()
        with torch.profiler.record_function("walmafa.selective_scan"):  # lets profiles show the scan's share
            if self.scan == "sequential":
                y = selective_scan_sequential(x.float(), delta, A, Bm, Cm, self.D.float())
            elif self.scan == "triton" and _use_triton(x, self):
                from .scan_triton import selective_scan_triton

                y = selective_scan_triton(x, delta, A, Bm, Cm, self.D.float())
            else:
                y = selective_scan_chunked(x.float(), delta, A, Bm, Cm, self.D.float(), chunk_size=self.chunk_size)
        y = y.to(z.dtype) * F.silu(z)
        return self.out_proj(y.transpose(1, 2))

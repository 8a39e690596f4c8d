"""One optimisation engine for the three schemes the methods use.

- :func:`block_reconstruction` — each quantized block learns to reproduce its full-precision block's outputs on the
  captured block inputs (BRECQ / Q-Diffusion; S²Q-VDiT with a token-weighted loss).
- :func:`output_distillation` — the whole quantized model learns to reproduce cached full-precision outputs on the
  captured model inputs (Q-VDiT's "block" is the whole model).
- :func:`rollout_distillation` — data-free: a sampling trajectory is rolled out with the full-precision model and the
  quantized model is trained at every denoising step to match it (EfficientDM / MPQ-DM).

All three share :func:`optimize`: parameter groups with their own learning rates (:func:`parameter_groups`),
AdamW + cosine schedule by default, a tqdm progress bar, gradient clipping, and an atomic checkpoint every
``checkpoint_every`` iterations from which an interrupted run resumes exactly (model trainables, optimiser,
scheduler, RNG and iteration). Loss terms are objects (:class:`LossTerm`) so methods plug in their own.

Memory while training: ``ReconConfig.recompute`` (default: on for modules of ≥ 10⁸ parameters) makes every
quantized layer keep only its input for the backward pass and recompute its float32 fake-quantized weight there
(:mod:`vqcore.quant.modules`), so no per-layer float32 copy of the weights outlives its layer's forward — the
gradients are the plain autograd path's, bit for bit. :func:`output_distillation` can also checkpoint whole blocks
(``checkpoint_blocks``, activation checkpointing with ``torch.utils.checkpoint(use_reentrant=False)``): only block
inputs are kept across the model and each block's activations are recomputed in the backward pass (one more forward
per step; identical gradients).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint
from tqdm.auto import tqdm

from commons.io import load_training_state, save_training_state

from ..calib.capture import CalibItem, stack_items
from ..quant.modules import QuantModule

__all__ = [
    "LossTerm",
    "MSETerm",
    "ReconConfig",
    "parameter_groups",
    "optimize",
    "block_reconstruction",
    "output_distillation",
    "rollout_distillation",
    "first_tensor",
    "recompute_layers",
    "activation_checkpointing",
]

logger = logging.getLogger(__name__)


def first_tensor(out: Any) -> torch.Tensor:
    """The main tensor of a module output (tensor, tuple's first item, diffusers ``.sample``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return first_tensor(out.get("sample", next(iter(out.values()))))
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (list, tuple)):
        return first_tensor(out[0])
    raise TypeError(f"cannot find a tensor in an output of type {type(out).__name__}")


class LossTerm:
    """A weighted loss term ``weight · f(q_out, fp_out, context)``; subclasses implement :meth:`compute`."""

    name = "loss"

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def compute(self, q_out: torch.Tensor, fp_out: torch.Tensor, context: dict) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, q_out: torch.Tensor, fp_out: torch.Tensor, context: dict) -> torch.Tensor:
        return self.weight * self.compute(q_out, fp_out, context)


class MSETerm(LossTerm):
    """Mean squared error (the default reconstruction loss of every scheme)."""

    name = "mse"

    def compute(self, q_out, fp_out, context):
        return F.mse_loss(q_out.float(), fp_out.float())


@dataclass
class ReconConfig:
    """Optimisation settings shared by the schemes.

    ``lrs`` maps parameter-group names (see :func:`parameter_groups`) to learning rates; only named groups train.
    ``recompute``: quantized layers recompute their fake-quantized weight in the backward pass instead of keeping it
    (module docstring; identical gradients, one more layer forward per step). ``None`` (default): on when the module
    being optimised has at least ``RECOMPUTE_MIN_PARAMS`` (10⁸) parameters — whole large models; not single blocks
    nor small models, where the float32 weight graphs (≈ 3–4× the weights of what is trained) are small.
    """

    iters: int = 200
    batch_size: int = 4
    lrs: dict[str, float] = field(default_factory=lambda: {"weight_scale": 1e-6, "adapters": 1e-5})
    weight_decay: float = 0.01
    schedule: str = "cosine"
    grad_clip: float | None = None
    seed: int = 0
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 100
    progress: bool = True
    recompute: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.iters, int) or self.iters < 0:
            raise ValueError(f"iters must be a non-negative int, got {self.iters!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.schedule not in ("cosine", "constant", "linear"):
            raise ValueError(f"schedule must be 'cosine', 'constant' or 'linear', got {self.schedule!r}")
        for name, lr in self.lrs.items():
            if not lr > 0:
                raise ValueError(f"learning rate of group {name!r} must be positive, got {lr}")


#: ``ReconConfig.recompute=None``: recompute layer weights while training modules of at least this many parameters
RECOMPUTE_MIN_PARAMS = 10**8

GROUPS = ("weight_scale", "weight_zero_point", "act_scale", "adaround", "adapters", "weights")


def parameter_groups(model: nn.Module, lrs: dict[str, float],
                     extra: dict[str, Callable[[str, nn.Parameter], bool]] | None = None) -> list[dict]:
    """Build optimiser groups from the quantized layers of ``model``.

    Built-in groups: ``weight_scale`` / ``weight_zero_point`` (learnable Δ/zp of weight quantizers; they are made
    learnable here), ``act_scale`` (static activation quantizers' Δ), ``adaround`` (AdaRound's V), ``adapters``
    (``weight_adapter``, ``side_branch`` and any parameter a method registered under a name containing ``adapter``
    or ``mask``), ``weights`` (the layers' own weights and biases). ``extra`` adds named predicates over
    ``(qualified parameter name, parameter)``. Everything else is frozen.
    """
    unknown = set(lrs) - set(GROUPS) - set(extra or {})
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; known: {list(GROUPS) + list(extra or {})}")
    chosen: dict[str, list[nn.Parameter]] = {g: [] for g in lrs}
    for _, layer in ((n, m) for n, m in model.named_modules() if isinstance(m, QuantModule)):
        wq, aq = layer.weight_quantizer, layer.input_quantizer
        if "weight_scale" in lrs and wq is not None and wq.initialized:
            wq.make_learnable(zero_point="weight_zero_point" in lrs)
            chosen["weight_scale"].append(wq.scale)
        if "weight_zero_point" in lrs and wq is not None and isinstance(wq.zero_point, nn.Parameter):
            chosen["weight_zero_point"].append(wq.zero_point)
        if "act_scale" in lrs and aq is not None and not aq.dynamic and aq.initialized:
            aq.make_learnable()
            chosen["act_scale"].append(aq.scale)
        if "adaround" in lrs and wq is not None and wq.alpha is not None:
            chosen["adaround"].append(wq.alpha)
        if "adapters" in lrs:
            for sub in (layer.weight_adapter, layer.side_branch):
                if sub is not None:
                    chosen["adapters"] += list(sub.parameters())
        if "weights" in lrs:
            chosen["weights"] += [p for p in (layer.weight, layer.bias) if p is not None]
    if "adapters" in lrs:
        seen = {id(p) for p in chosen["adapters"]}
        for name, p in model.named_parameters():
            if ("adapter" in name or "mask" in name) and id(p) not in seen:
                chosen["adapters"].append(p)
                seen.add(id(p))
    for gname, pred in (extra or {}).items():
        if gname in lrs:
            chosen[gname] = [p for n, p in model.named_parameters() if pred(n, p)]
    groups, seen_all = [], set()
    for gname, params in chosen.items():
        unique = [p for p in params if id(p) not in seen_all]
        seen_all.update(id(p) for p in unique)
        if unique:
            groups.append({"name": gname, "params": unique, "lr": lrs[gname]})
    for p in model.parameters():
        p.requires_grad_(id(p) in seen_all)
    return groups


def _schedule(opt: torch.optim.Optimizer, config: ReconConfig):
    total = max(config.iters, 1)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=0.0)
    if config.schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, 1 - i / total))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)


def optimize(model: nn.Module, groups: list[dict], step_loss: Callable[[int, random.Random], torch.Tensor],
             config: ReconConfig, desc: str = "reconstruction",
             regularizer: Callable[[int], torch.Tensor] | None = None,
             after_step: Callable[[int], None] | None = None) -> list[float]:
    """Run ``config.iters`` steps of ``loss = step_loss(i, rng) (+ regularizer(i))``; checkpoint and resume.

    ``after_step(i)`` runs after the optimiser step of iteration ``i`` and before its checkpoint (e.g. to project
    parameters), so a checkpoint holds the parameters as the next iteration will see them.
    """
    losses: list[float] = []
    if config.iters == 0 or not groups:
        if not groups:
            logger.warning("%s: no trainable parameters in the requested groups; nothing to optimise", desc)
        return losses
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    sched = _schedule(opt, config)
    rng = random.Random(config.seed)
    start = 0
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    params = [p for g in groups for p in g["params"]]
    if ckpt is not None:
        state = load_training_state(ckpt)
        if state is not None and state.get("desc") == desc:
            if len(state["params"]) != len(params) or any(a.shape != b.shape for a, b in zip(state["params"], params)):
                raise ValueError(f"checkpoint {ckpt} does not match the parameters being optimised")
            with torch.no_grad():
                for p, saved in zip(params, state["params"]):
                    p.copy_(saved.to(p.device))
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            rng.setstate(state["rng"])
            start, losses = state["iter"], list(state["losses"])
            logger.info("%s: resumed from %s at iteration %d", desc, ckpt, start)
    bar = tqdm(range(start, config.iters), desc=desc, disable=not config.progress, leave=False)
    recompute = config.recompute
    if recompute is None:
        recompute = sum(p.numel() for p in model.parameters()) >= RECOMPUTE_MIN_PARAMS
    with recompute_layers(model, recompute):
        _loop(bar, step_loss, regularizer, opt, sched, after_step, params, losses, config, ckpt, desc, rng)
    return losses


@contextlib.contextmanager
def recompute_layers(model: nn.Module, on: bool = True) -> Iterator[nn.Module]:
    """Set ``recompute`` on every quantized layer of ``model`` inside the block (restored on exit)."""
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    saved = [m.recompute for m in layers]
    for m in layers:
        m.recompute = bool(on)
    try:
        yield model
    finally:
        for m, v in zip(layers, saved):
            m.recompute = v


@contextlib.contextmanager
def activation_checkpointing(model: nn.Module, names: Sequence[str]) -> Iterator[nn.Module]:
    """Activation checkpointing of the named submodules while the block is active: with grad enabled their
    ``forward`` runs under ``torch.utils.checkpoint(use_reentrant=False)`` (the block's input is kept, its activations
    are recomputed in the backward pass). Forward hooks of the block are not re-run by the recompute (those of
    modules inside it are). Restored on exit."""
    patched = []
    for name in names:
        block = model.get_submodule(name)
        own = block.__dict__.get("forward")
        orig = block.forward

        def fwd(*args, _orig=orig, **kwargs):
            if torch.is_grad_enabled():
                return _checkpoint(_orig, *args, use_reentrant=False, **kwargs)
            return _orig(*args, **kwargs)

        block.forward = fwd
        patched.append((block, own))
    try:
        yield model
    finally:
        for block, own in patched:
            if own is None:
                del block.forward
            else:
                block.forward = own


def _loop(bar, step_loss, regularizer, opt, sched, after_step, params, losses, config, ckpt, desc, rng) -> None:
    for i in bar:
        loss = step_loss(i, rng)
        if regularizer is not None:
            loss = loss + regularizer(i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step(i)
        losses.append(float(loss.detach()))
        if i % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
        if ckpt is not None and ((i + 1) % config.checkpoint_every == 0 or i + 1 == config.iters):
            save_training_state(ckpt, {"desc": desc, "iter": i + 1, "params": [p.detach().cpu() for p in params],
                                       "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                       "rng": rng.getstate(), "losses": losses})


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _to(obj: Any, device: torch.device) -> Any:
    from ..calib.capture import _map

    return _map(obj, lambda t: t.to(device))


def _call(module: nn.Module, item_args: tuple, item_kwargs: dict) -> torch.Tensor:
    return first_tensor(module(*item_args, **item_kwargs))


def _batch(items: Sequence[CalibItem], device: torch.device) -> tuple[tuple, dict, Any]:
    rows = items[0].rows
    args = _to(stack_items([i.args for i in items], rows), device)
    kwargs = _to(stack_items([i.kwargs for i in items], rows), device)
    out = _to(stack_items([i.output for i in items], rows), device) if items[0].output is not None else None
    return args, kwargs, out


def block_reconstruction(qmodel: nn.Module, blocks: Sequence[str], calib: dict[str, list[CalibItem]],
                         config: ReconConfig, terms: Sequence[LossTerm] = (),
                         context_fn: Callable[[str, Sequence[CalibItem]], dict] | None = None,
                         before_block: Callable[[str, nn.Module], None] | None = None,
                         regularizer_fn: Callable[[str, nn.Module], Callable[[int], torch.Tensor]] | None = None,
                         ) -> dict[str, list[float]]:
    """Optimise each quantized block in ``blocks`` so that, on its captured inputs, it reproduces the captured
    full-precision outputs. ``context_fn(block, items)`` may add per-batch context for loss terms (e.g. token
    weights); ``before_block`` may set up a block (AdaRound init, ...) before its groups are built."""
    terms = list(terms) or [MSETerm()]
    device = _device_of(qmodel)
    history = {}
    for name in blocks:
        items = calib.get(name)
        if not items:
            raise ValueError(f"no calibration data captured for block {name!r}")
        if items[0].output is None:
            raise ValueError(f"block {name!r} was captured without outputs (store_outputs=False)")
        block = qmodel.get_submodule(name)
        if before_block is not None:
            before_block(name, block)
        groups = parameter_groups(block, config.lrs)

        def step(i: int, rng: random.Random, block=block, items=items, name=name) -> torch.Tensor:
            batch = [items[rng.randrange(len(items))] for _ in range(min(config.batch_size, len(items)))]
            args, kwargs, fp_out = _batch(batch, device)
            q_out = _call(block, args, kwargs)
            ctx = context_fn(name, batch) if context_fn else {}
            ctx = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in ctx.items()}
            target = first_tensor(fp_out)
            return sum(term(q_out, target, ctx) for term in terms)

        sub = ReconConfig(**{**config.__dict__, "checkpoint": (Path(config.checkpoint).with_suffix(f".{name}.pt")
                                                                if config.checkpoint else None)})
        reg = regularizer_fn(name, block) if regularizer_fn is not None else None
        history[name] = optimize(block, groups, step, sub, desc=f"block {name}", regularizer=reg)
        for p in block.parameters():
            p.requires_grad_(False)
    return history


def output_distillation(qmodel: nn.Module, items: Sequence[CalibItem], config: ReconConfig,
                        terms: Sequence[LossTerm] = (), extra_groups: dict | None = None,
                        regularizer: Callable[[int], torch.Tensor] | None = None,
                        checkpoint_blocks: Sequence[str] = ()) -> list[float]:
    """Whole-model distillation on cached (input, full-precision output) pairs of the root model.

    ``checkpoint_blocks``: names of submodules (transformer blocks) whose activations are recomputed in the backward
    pass instead of kept (:func:`activation_checkpointing`)."""
    if not items:
        raise ValueError("output_distillation needs captured root-model items")
    if items[0].output is None:
        raise ValueError("the captured items have no outputs; capture with store_outputs=True")
    terms = list(terms) or [MSETerm()]
    device = _device_of(qmodel)
    groups = parameter_groups(qmodel, config.lrs, extra_groups)
    set_timestep = _timestep_setter(qmodel)

    def step(i: int, rng: random.Random) -> torch.Tensor:
        batch = [items[rng.randrange(len(items))] for _ in range(min(config.batch_size, len(items)))]
        args, kwargs, fp_out = _batch(batch, device)
        set_timestep(batch[0].call_index)
        q_out = _call(qmodel, args, kwargs)
        return sum(term(q_out, first_tensor(fp_out), {"items": batch}) for term in terms)

    with activation_checkpointing(qmodel, checkpoint_blocks):
        losses = optimize(qmodel, groups, step, config, desc="output distillation", regularizer=regularizer)
    for p in qmodel.parameters():
        p.requires_grad_(False)
    return losses


def _timestep_setter(model: nn.Module) -> Callable[[int], None]:
    tabled = [m for m in model.modules() if hasattr(m, "set_timestep") and getattr(getattr(m, "spec", None),
                                                                                      "timesteps", 0)]

    def set_index(index: int) -> None:
        for m in tabled:
            m.set_timestep(index % m.spec.timesteps)

    return set_index


def rollout_distillation(qmodel: nn.Module, fp_model: nn.Module, sample_start: Callable[[random.Random], tuple],
                         denoise: Callable[[nn.Module, torch.Tensor, torch.Tensor, Any], torch.Tensor],
                         scheduler: Any, num_steps: int, config: ReconConfig, terms: Sequence[LossTerm] = (),
                         feature_hook: Callable[[], dict] | None = None) -> list[float]:
    """Data-free rollout distillation (EfficientDM / MPQ-DM): ``config.iters`` rollouts of ``num_steps`` DDIM steps.

    Each rollout draws ``(x_T, cond)`` from ``sample_start(rng)``; at each step the full-precision ε drives the
    trajectory and the quantized model takes one optimiser step on ``terms(ε_q, ε_fp, context)``. The per-step index
    is set on every quantizer with a per-timestep table before each call. ``feature_hook()`` may return extra context
    (e.g. captured features for a relation term) after both calls. Checkpoints (``config.checkpoint``) are written at
    rollout boundaries only (``checkpoint_every`` rounded up to whole rollouts), so an interrupted run resumes with
    the next rollout exactly as the uninterrupted run would.
    """
    terms = list(terms) or [MSETerm()]
    groups = parameter_groups(qmodel, config.lrs)
    set_timestep = _timestep_setter(qmodel)
    state = {"x": None, "cond": None, "k": num_steps}
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    # checkpoints only at rollout boundaries: a resumed run starts a fresh rollout (the trajectory state x_t of a
    # half-finished rollout is not saved), so ``checkpoint_every`` counts whole rollouts' steps, rounded up
    every = -(-config.checkpoint_every // num_steps) * num_steps
    total_cfg = ReconConfig(**{**config.__dict__, "iters": config.iters * num_steps, "checkpoint_every": every})

    def step(i: int, rng: random.Random) -> torch.Tensor:
        k = i % num_steps
        if k == 0:
            x, cond = sample_start(rng)
            scheduler.set_timesteps(num_steps)
            state.update(x=x, cond=cond)
        t = scheduler.timesteps[k]
        set_timestep(k)
        x = state["x"]
        with torch.no_grad():
            eps_fp = denoise(fp_model, x, t, state["cond"])
        eps_q = denoise(qmodel, x, t, state["cond"])
        ctx = {"step": k, "timestep": t}
        if feature_hook is not None:
            ctx.update(feature_hook())
        loss = sum(term(eps_q, eps_fp, ctx) for term in terms)
        with torch.no_grad():
            state["x"] = scheduler.step(eps_fp, t, x).prev_sample
        return loss

    losses = optimize(qmodel, groups, step, total_cfg, desc="rollout distillation")
    for p in qmodel.parameters():
        p.requires_grad_(False)
    return losses


def iter_quant_layers(model: nn.Module) -> Iterable[tuple[str, QuantModule]]:
    return ((n, m) for n, m in model.named_modules() if isinstance(m, QuantModule))

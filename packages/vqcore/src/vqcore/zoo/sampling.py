"""DDPM training loss and DDIM sampling for the zoo's class-conditional diffusion models (diffusers schedulers).

Training (Ho et al., 2020, Eq. 14 "simple" loss): ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε`` with ``t ~ U{0..T−1}`` and the
loss ``‖ε − ε_θ(x_t, t, y)‖²``; labels are replaced by the null class with probability ``p_uncond`` so that the same
network also serves classifier-free guidance (Ho & Salimans, 2022): ``ε̂ = ε_u + s (ε_c − ε_u)``.
Sampling: diffusers' ``DDIMScheduler`` (Song et al., 2021), η = 0 by default.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["make_train_scheduler", "make_sampler", "ddpm_loss", "sample", "initial_noise"]


def make_train_scheduler(model):
    from diffusers import DDPMScheduler

    c = model.config
    return DDPMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                         prediction_type="epsilon", clip_sample=False)


def make_sampler(model):
    from diffusers import DDIMScheduler

    c = model.config
    return DDIMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                         prediction_type="epsilon", clip_sample=True, set_alpha_to_one=True,
                         timestep_spacing="trailing")


def ddpm_loss(model, x0: torch.Tensor, labels: torch.Tensor, scheduler, p_uncond: float = 0.1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The ε-prediction MSE for a batch ``x0`` in [-1, 1] (labels dropped to null with probability ``p_uncond``)."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
    xt = scheduler.add_noise(x0, noise, t)
    if p_uncond > 0:
        drop = torch.rand(labels.shape, device=labels.device, generator=generator) < p_uncond
        labels = torch.where(drop, torch.full_like(labels, model.num_classes), labels)
    return F.mse_loss(model(xt, t, labels).float(), noise.float())


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``x_T`` drawn on the CPU from ``seed`` — identical on every device, so FP and quantized runs share it."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=g)


@torch.no_grad()
def sample(model, labels: torch.Tensor, *, num_steps: int = 20, guidance_scale: float = 1.0, seed: int = 0,
           batch_size: int | None = None, callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
           | None = None, progress: bool = False) -> torch.Tensor:
    """Generate one sample per label with DDIM; returns data in [0, 1] on the CPU.

    Sample ``i`` starts from :func:`initial_noise` with seed ``seed + i`` wherever it falls in the batch, so the
    same ``(seed, labels)`` always gives the same starting noise. ``callback(step, t, x_t, labels)`` is called
    before every denoiser call (what a calibration-data collector needs).
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    labels = torch.as_tensor(labels).long()
    if labels.ndim not in (1, 2) or labels.shape[0] == 0:
        raise ValueError("labels must be a non-empty [N] or [N, num_digits] integer tensor")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    n = labels.shape[0]
    batch_size = batch_size or n
    outs = []
    for start in range(0, n, batch_size):
        lab = labels[start:start + batch_size].to(device)
        x = torch.stack([initial_noise(tuple(model.sample_shape), seed + start + i) for i in range(lab.shape[0])])
        x = x.to(device=device, dtype=dtype)
        sched = make_sampler(model)
        sched.set_timesteps(num_steps)
        null = torch.full_like(lab, model.num_classes)
        steps = sched.timesteps
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, leave=False, desc="ddim")
        for k, t in enumerate(steps):
            tt = torch.full((lab.shape[0],), int(t), device=device, dtype=torch.long)
            if guidance_scale == 1.0:
                if callback is not None:
                    callback(k, tt, x, lab)
                eps = model(x, tt, lab)
            else:
                xin, tin, lin = torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([lab, null])
                if callback is not None:
                    callback(k, tin, xin, lin)
                e_c, e_u = model(xin, tin, lin).chunk(2)
                eps = e_u + guidance_scale * (e_c - e_u)
            x = sched.step(eps.to(dtype), int(t), x).prev_sample
        outs.append(((x.float().clamp(-1, 1) + 1) / 2).cpu())
    return torch.cat(outs)

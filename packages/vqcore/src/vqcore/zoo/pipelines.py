"""The user path for real diffusers video pipelines: calibrate with prompts, quantize the transformer, sample.

With a real checkpoint (e.g. ``LattePipeline.from_pretrained("maxin-cn/Latte-1")`` or a ``CogVideoXPipeline``) the
three steps are::

    from vqcore.zoo.pipelines import quantize_pipeline
    pipe = LattePipeline.from_pretrained(...)
    report = quantize_pipeline(pipe, ["a dog running on the beach", ...], method="vidit-q", w_bits=4, a_bits=8,
                               num_inference_steps=20)
    video = pipe("a cat playing piano", num_inference_steps=20).frames     # now runs the fake-quantized transformer

:func:`quantize_pipeline` runs the pipeline on the calibration prompts while :class:`vqcore.calib.Capture` records
the transformer's (and its blocks') inputs at every denoising step, calls :func:`vqcore.quantize` on
``pipe.transformer`` with that calibration set, and puts the quantized transformer back into the pipeline.

Hub downloads are not possible in this project's CI, so :func:`tiny_latte_pipeline` assembles a real ``LattePipeline``
from tiny randomly initialised components — a 1-layer ``T5EncoderModel`` (transformers), a word-level tokenizer
built in memory (``tokenizers``), a 1-level ``AutoencoderKL``, a 1-layer ``LatteTransformer3DModel`` and a
``DDIMScheduler`` — and the tests run the whole path on it. It needs ``transformers`` (``pip install
'vqcore[pipelines]'``).
"""

from __future__ import annotations

import logging

import torch

__all__ = ["tiny_latte_pipeline", "quantize_pipeline"]

logger = logging.getLogger(__name__)

_WORDS = ["a", "an", "the", "digit", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
          "moving", "bouncing", "left", "right", "up", "down", "fast", "slow", "small", "big", "bright", "dark", "cat",
          "dog", "runs", "jumps", "on", "in", "video", "of", "and"]


def _tiny_tokenizer(max_length: int):
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
    except ImportError as err:
        raise ImportError("tiny_latte_pipeline needs transformers and tokenizers: pip install 'vqcore[pipelines]'") \
            from err
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)


def tiny_latte_pipeline(seed: int = 0, num_frames: int = 4, sample_size: int = 8):
    """A real ``diffusers.LattePipeline`` made of tiny random components (for tests and the documented example).

    Latent video: ``[4, num_frames, sample_size, sample_size]``; pixels ``2×`` larger (one VAE down-sampling).
    """
    try:
        from transformers import T5Config, T5EncoderModel
    except ImportError as err:
        raise ImportError("tiny_latte_pipeline needs transformers: pip install 'vqcore[pipelines]'") from err
    from diffusers import AutoencoderKL, DDIMScheduler, LattePipeline, LatteTransformer3DModel

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer(max_length=16)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(_WORDS) + 3, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                           num_heads=4, pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=2 * sample_size)
    transformer = LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=1,
        cross_attention_dim=32, attention_bias=True, sample_size=sample_size, patch_size=2,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=32, video_length=num_frames)
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False)
    for module in (text_encoder, vae, transformer):  # constructed modules start in train mode (T5 dropout)
        module.eval()
    pipe = LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                         scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def quantize_pipeline(pipe, prompts: list[str], *, method: str = "rtn", w_bits: int = 8, a_bits: int | None = 8,
                      num_inference_steps: int = 20, guidance_scale: float = 7.5, seed: int = 0,
                      max_calib_bytes: int = 2**30, every_n_steps: int = 1, pipe_kwargs: dict | None = None,
                      **options):
    """Calibrate on ``prompts``, quantize ``pipe.transformer`` in the pipeline; returns the :class:`QuantReport`.

    ``pipe_kwargs`` go to the pipeline call (e.g. ``video_length``, ``height``, ``width``); ``options`` to
    :func:`vqcore.quantize` (method options such as ``iters``).
    """
    import vqcore
    from vqcore.calib import Capture

    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    if not hasattr(pipe, "transformer") or not isinstance(pipe.transformer, torch.nn.Module):
        raise TypeError("pipe must be a diffusers pipeline with a .transformer (LattePipeline, CogVideoXPipeline, ...)")
    kwargs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
              "output_type": "latent", **(pipe_kwargs or {})}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad(), Capture(pipe.transformer, targets="blocks", max_bytes=max_calib_bytes,
                                  every_n_steps=every_n_steps) as cap:
        pipe(prompt=list(prompts), generator=generator, **kwargs)
    logger.info("captured %d calibration items over %d timesteps", len(cap.result), len(cap.result.timesteps()))
    qtransformer = vqcore.quantize(pipe.transformer, method=method, w_bits=w_bits, a_bits=a_bits, calib=cap.result,
                                   **options)
    pipe.transformer = qtransformer
    return qtransformer.vqcore_report

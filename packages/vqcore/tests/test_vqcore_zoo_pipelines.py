"""The documented real-model path on a real diffusers LattePipeline built from tiny random components."""

import pytest
import torch

from vqcore.quant.modules import QuantModule
from vqcore.zoo.pipelines import quantize_pipeline, tiny_latte_pipeline

KW = dict(video_length=4, height=16, width=16, clean_caption=False)
PROMPTS = ["a digit one moving up", "the digit nine bouncing left"]


def _run(pipe, prompt="a digit seven moving left", steps=3):
    g = torch.Generator().manual_seed(1)
    return pipe(prompt, num_inference_steps=steps, generator=g, output_type="latent", **KW).frames


def test_calibrate_quantize_sample_on_a_tiny_latte_pipeline():
    from diffusers import LattePipeline

    pipe = tiny_latte_pipeline(seed=0)
    assert isinstance(pipe, LattePipeline)
    fp = _run(pipe)
    assert torch.equal(fp, _run(pipe))  # deterministic given the generator (modules in eval mode)
    report = quantize_pipeline(pipe, PROMPTS, method="vidit-q", w_bits=4, a_bits=8, num_inference_steps=3,
                               pipe_kwargs=KW)
    # 2 prompts x (cond + uncond) x 3 denoising steps, one root item per row
    assert report.calibration_items == 2 * 2 * 3
    assert report.layers > 0 and report.method == "vidit-q"
    assert any(isinstance(m, QuantModule) for m in pipe.transformer.modules())
    q = _run(pipe)
    assert q.shape == fp.shape and torch.isfinite(q).all()
    assert not torch.equal(q, fp)


def test_lower_bits_move_the_pipeline_output_further():
    errs = {}
    for w, a in ((8, 8), (3, 6)):
        pipe = tiny_latte_pipeline(seed=0)
        fp = _run(pipe)
        quantize_pipeline(pipe, PROMPTS[:1], method="rtn", w_bits=w, a_bits=a, num_inference_steps=3, pipe_kwargs=KW)
        errs[(w, a)] = (_run(pipe) - fp).pow(2).mean().item()
    assert 0 < errs[(8, 8)] < errs[(3, 6)]


def test_bad_arguments():
    pipe = tiny_latte_pipeline(seed=0)
    with pytest.raises(ValueError, match="prompts"):
        quantize_pipeline(pipe, [], num_inference_steps=2)
    with pytest.raises(TypeError, match="transformer"):
        quantize_pipeline(object(), ["a"], num_inference_steps=2)

"""The README's quick start runs as written (both examples, executed from the README text), and ``calib`` accepts
tensors, tuples of positional inputs and keyword dicts with the same result."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import vqcore
from vqcore.calib import root_items

README = Path(__file__).resolve().parents[1] / "README.md"
_spec = importlib.util.spec_from_file_location("vq_quant_tests_rd", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_unet = _mod.tiny_unet


def _example(name: str) -> str:
    """The ```python block right after ``<!-- example: name -->`` in the README."""
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no example {name!r}"
    return m.group(1)


def _tiny_dit_pipeline(path: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                                        num_layers=2, sample_size=8, patch_size=2, norm_type="ada_norm_zero",
                                        num_embeds_ada_norm=1000)  # fmt: skip
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                        norm_num_groups=8, sample_size=16)  # fmt: skip
    DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(),
                id2label={i: str(i) for i in range(4)}).save_pretrained(path)


def test_readme_plain_module_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_example("plain-module"), "README:plain-module", "exec"), {})
    out = capsys.readouterr().out
    assert "vidit-q W4A8" in out and (tmp_path / "runs" / "mlp-w4a8" / "model.safetensors").is_file()


def test_readme_diffusers_pipeline_example_runs(tmp_path, monkeypatch, capsys):
    _tiny_dit_pipeline(tmp_path / "models" / "dit")  # stands in for the user's local pipeline folder
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_example("diffusers-pipeline"), "README:diffusers-pipeline", "exec"), scope)
    from vqcore.convert import QLinearInt

    assert any(isinstance(m, QLinearInt) for m in scope["pipe"].transformer.modules())
    assert len(scope["images"]) == 2 and (tmp_path / "runs" / "dit-calib.safetensors").is_file()
    assert "vidit-q W4A8" in capsys.readouterr().out


def test_calib_accepts_tensors_tuples_and_kwargs_alike():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 1, 8, 8, generator=g) for _ in range(2)]
    ts = [torch.tensor([800, 800, 800]), torch.tensor([300, 300, 300])]
    as_tuples = [(x, t) for x, t in zip(xs, ts)]
    as_kwargs = [{"sample": x, "timestep": t} for x, t in zip(xs, ts)]
    items = root_items(as_tuples)
    assert len(items) == 6 and [i.timestep for i in items] == [800.0] * 3 + [300.0] * 3
    assert items[4].args[0].shape == (1, 1, 8, 8) and torch.equal(items[4].args[0], xs[1][1:2])
    model = tiny_unet()
    x = torch.randn(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        a = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=8, calib=as_tuples)(x, 500).sample
        b = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=8, calib=as_kwargs)(x, 500).sample
    assert torch.equal(a, b)  # same statistics whichever way the inputs are passed
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
    one = vqcore.quantize(mlp, "vidit-q", w_bits=4, a_bits=8, calib=torch.randn(5, 16, generator=g))
    assert one.vqcore_report.calibration_items == 5  # a single tensor is one batch


def test_bad_calib_forms_name_what_is_accepted():
    with pytest.raises(TypeError, match=r"tensors \(model\(x\)\), tuples \(model\(\*args\)\) or dicts") as err:
        root_items([torch.randn(2, 3), {"x": torch.randn(2, 3)}])
    assert "targets" not in str(err.value)
    with pytest.raises(TypeError, match="got \\['str'\\]"):
        root_items(["calib.pt"])
    with pytest.raises(ValueError, match="no batched tensor"):
        root_items([(3, 4)])
    with pytest.raises(ValueError, match="list of model inputs"):
        vqcore.quantize(nn.Linear(4, 4), "vidit-q", w_bits=4)

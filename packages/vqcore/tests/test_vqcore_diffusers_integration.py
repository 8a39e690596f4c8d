"""vqcore as a diffusers quantization backend: save_converted(format="diffusers") → register() → from_pretrained.

The loaded model must be the converted model: same integer codes, same outputs (bit-identical — the same CPU reference
kernels run on the same tensors in the same dtypes, so there is no tolerance to derive), built without materialising
the float weights of the converted layers (meta skeleton checked directly; peak RSS of a loading process measured).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import vqcore
from vqcore.convert import QLinearInt

diffusers = pytest.importorskip("diffusers")
vqd = pytest.importorskip("vqcore.integrations.diffusers")

DOC = Path(__file__).resolve().parents[1] / "docs" / "diffusers.md"


# ---- tiny models and their inputs -----------------------------------------------------------------------------------
def _cogvideox(dtype=torch.float32, head_dim=16):
    m = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=head_dim, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=16, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=4)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x = {"hidden_states": torch.randn(2, 3, 4, 8, 8, generator=g), "encoder_hidden_states": torch.randn(2, 4, 16,
         generator=g), "timestep": torch.tensor([999, 10])}  # fmt: skip
    return m.to(dtype).eval(), x


def _latte(dtype=torch.float32):
    m = diffusers.LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=1, sample_size=8,
        patch_size=2, num_embeds_ada_norm=1000, caption_channels=16, video_length=2, norm_type="ada_norm_single",
        cross_attention_dim=32, norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True,
        activation_fn="gelu-approximate")  # fmt: skip
    g = torch.Generator().manual_seed(2)
    x = {"hidden_states": torch.randn(2, 4, 2, 8, 8, generator=g), "encoder_hidden_states": torch.randn(2, 5, 16,
         generator=g), "timestep": torch.tensor([500, 20])}  # fmt: skip
    return m.to(dtype).eval(), x


def _pixart(dtype=torch.float32):
    m = diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=32, sample_size=8, patch_size=2, caption_channels=16, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, num_embeds_ada_norm=1000)  # fmt: skip
    g = torch.Generator().manual_seed(3)
    x = {"hidden_states": torch.randn(2, 4, 8, 8, generator=g), "encoder_hidden_states": torch.randn(2, 5, 16,
         generator=g), "timestep": torch.tensor([700, 1]),
         "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}  # fmt: skip
    return m.to(dtype).eval(), x


MODELS = {"cogvideox": _cogvideox, "latte": _latte, "pixart": _pixart}


def _converted(build, dtype=torch.float32, w_bits=4, a_bits=8):
    torch.manual_seed(0)
    model, x = build(dtype)
    x = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in x.items()}
    return vqcore.convert(vqcore.quantize(model, method="rtn", w_bits=w_bits, a_bits=a_bits)), x


@torch.no_grad()
def _out(model, x):
    return model(**x, return_dict=False)[0]


@pytest.fixture
def registered():
    vqd.register()
    yield
    vqd.unregister()


# ---- 1. the folder and from_pretrained ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,dtype", [("cogvideox", torch.float32), ("latte", torch.float32),
                                        ("pixart", torch.float32), ("cogvideox", torch.bfloat16)])  # fmt: skip
def test_from_pretrained_rebuilds_the_converted_model(tmp_path, registered, name, dtype):
    conv, x = _converted(MODELS[name], dtype)
    ints = {n: m for n, m in conv.named_modules() if isinstance(m, QLinearInt)}
    assert len(ints) >= 6
    vqcore.save_converted(conv, tmp_path, format="diffusers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    q = cfg["quantization_config"]
    assert q["quant_method"] == "vqcore" and q["format"] == "vqcore-int/2"
    assert q["torch_dtype"] == str(dtype).replace("torch.", "") and set(q["layers"]) == set(ints)
    assert cfg["_class_name"] == type(conv).__name__
    with safe_open(str(tmp_path / "diffusion_pytorch_model.safetensors"), "pt") as f:
        name0 = next(iter(ints))
        assert f.get_slice(f"{name0}.qweight").get_dtype() == "I8"  # packed codes, not float weights
        keys = list(f.keys())
        assert not any(k.endswith(f"{n}.weight") for k in keys for n in ints)

    cls = type(conv)
    loaded = cls.from_pretrained(tmp_path)
    assert type(loaded) is cls and loaded.is_quantized and loaded.quantization_method == "vqcore"
    for n, m in ints.items():
        lm = loaded.get_submodule(n)
        assert type(lm) is type(m) and lm.spec == m.spec
        assert torch.equal(lm.qweight, m.qweight) and lm.weight_scale.dtype == torch.float32
    for (k, a), (k2, b) in zip(conv.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    ref = _out(conv, x)
    assert ref.dtype == dtype and torch.isfinite(ref).all()
    assert torch.equal(_out(loaded, x), ref)


def test_float_weights_are_never_materialised(tmp_path, registered, monkeypatch):
    conv, x = _converted(_cogvideox)
    vqcore.save_converted(conv, tmp_path, format="diffusers")
    seen = {}
    orig = vqd.VQCoreQuantizer._process_model_before_weight_loading

    def spy(self, model, **kwargs):
        seen.update({n: model.get_submodule(n).weight.device.type for n in self.specs})
        out = orig(self, model, **kwargs)
        seen["after"] = {t.device.type for n in self.specs for t in model.get_submodule(n).buffers()}
        return out

    monkeypatch.setattr(vqd.VQCoreQuantizer, "_process_model_before_weight_loading", spy)
    loaded = type(conv).from_pretrained(tmp_path)
    after = seen.pop("after")
    assert seen and set(seen.values()) == {"meta"}  # the float linears diffusers built were empty skeletons
    assert after == {"meta"}  # ... and were replaced by empty integer layers before any weight was read
    assert not any(isinstance(loaded.get_submodule(n), torch.nn.Linear) for n in seen)
    assert torch.equal(_out(loaded, x), _out(conv, x))


def test_torch_dtype_casts_float_layers_but_not_the_integer_layers(tmp_path, registered):
    conv, x = _converted(_latte)
    vqcore.save_converted(conv, tmp_path, format="diffusers")
    loaded = type(conv).from_pretrained(tmp_path, dtype=torch.bfloat16)
    lin = loaded.transformer_blocks[0].attn1.to_q
    assert isinstance(lin, QLinearInt) and lin.weight_scale.dtype == torch.float32 and lin.qweight.dtype == torch.int8
    assert lin.bias.dtype == torch.float32  # the integer layer's own dtype (spec.dtype)
    assert loaded.proj_out.weight.dtype == torch.bfloat16  # a float layer, cast as diffusers does
    y = _out(loaded, {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v
                      for k, v in x.items()})  # fmt: skip
    ref = _out(conv, x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    # bf16 float layers and inputs: the error relative to the fp32 model stays at the bf16 rounding scale, far below
    # the signal (a model with wrong integer tensors is off by O(1))
    assert (y.float() - ref).norm() < 0.1 * ref.norm()


def test_loaded_model_saves_again(tmp_path, registered):
    conv, x = _converted(_pixart)
    vqcore.save_converted(conv, tmp_path / "a", format="diffusers")
    loaded = type(conv).from_pretrained(tmp_path / "a")
    loaded.save_pretrained(tmp_path / "b")  # diffusers' own writer (the quantizer is serializable)
    vqcore.save_converted(loaded, tmp_path / "c", format="diffusers")
    ref = _out(conv, x)
    for sub in ("b", "c"):
        assert torch.equal(_out(type(conv).from_pretrained(tmp_path / sub), x), ref), sub


def test_per_step_activation_tables_get_their_selector_back(tmp_path, registered):
    from vqcore.methods.baselines import init_weight_quantizers
    from vqcore.methods.timerange import attach_step_tables
    from vqcore.quant import QuantSpec, preset
    from vqcore.quant.modules import QuantModule

    torch.manual_seed(0)
    model, x = _pixart()
    ts, gains = [999.0, 500.0, 1.0], [4.0, 1.0, 0.25]  # step k sees inputs of another magnitude
    vqcore.prepare(model, preset("dit", 8, 8, act=QuantSpec(granularity="per_tensor", timesteps=3)))
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    inputs = [{**x, "hidden_states": x["hidden_states"] * g, "timestep": torch.tensor([t, t])}
              for t, g in zip(ts, gains)]  # fmt: skip
    with torch.no_grad():
        for i, xi in enumerate(inputs):
            hooks = [m.register_forward_pre_hook(lambda mod, a, i=i: mod.input_quantizer.calibrate(a[0], timestep=i))
                     for m in layers]  # fmt: skip
            model(**xi)
            for h in hooks:
                h.remove()
    init_weight_quantizers(model)
    attach_step_tables(model, ts)
    conv = vqcore.convert(model)
    vqcore.save_converted(conv, tmp_path, format="diffusers")
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["step_tables"]["timesteps"] == ts
    loaded = type(conv).from_pretrained(tmp_path)
    assert loaded.vq_step_tables.timesteps == ts
    lin = loaded.transformer_blocks[0].attn1.to_q
    assert lin.spec.timesteps == 3 and len(set(lin.act_scale.tolist())) == 3  # three different rows
    for k, xi in enumerate(inputs):
        assert torch.equal(_out(loaded, xi), _out(conv, xi))
        assert lin._t == k  # the selector picked the row of this timestep


def test_int8_attention_is_installed_again(tmp_path, registered):
    from vqcore.kernels import Int8SDPA

    torch.manual_seed(0)
    model, x = _cogvideox(head_dim=32)  # the int8 attention kernel needs head dim >= 32
    conv = vqcore.convert(vqcore.quantize(model, method="rtn", w_bits=4, a_bits=8), attention="int8")
    vqcore.save_converted(conv, tmp_path, format="diffusers")
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["attention"] == "int8"
    loaded = type(conv).from_pretrained(tmp_path)
    sdpa = [m for m in loaded.modules() if isinstance(m, Int8SDPA)]
    assert len(sdpa) == len([m for m in conv.modules() if isinstance(m, Int8SDPA)]) == 2
    assert torch.equal(_out(loaded, x), _out(conv, x))
    counts = [(m.calls, m.fallbacks) for m in sdpa]
    assert counts == [(m.calls, m.fallbacks) for m in conv.modules() if isinstance(m, Int8SDPA)]  # same path
    assert all(c > f for c, f in counts), counts  # the int8 kernel ran (not only the float fallback)


# ---- errors ---------------------------------------------------------------------------------------------------------
def test_save_refuses_what_from_pretrained_cannot_rebuild(tmp_path):
    model, _ = _cogvideox()
    with pytest.raises(ValueError, match="convert"):
        vqcore.save_converted(model, tmp_path, format="diffusers")
    with pytest.raises(ValueError, match="format must be"):
        vqcore.save_converted(model, tmp_path, format="onnx")
    with pytest.raises(TypeError, match="diffusers model"):
        vqcore.save_converted(torch.nn.Sequential(QLinearInt.from_linear(torch.nn.Linear(64, 8))), tmp_path,
                              format="diffusers")  # fmt: skip
    q = vqcore.quantize(model, method="rtn", w_bits=4, a_bits=8)
    vqcore.convert(q, skip=("transformer_blocks.0.ff.net.2",))  # one layer stays fake-quant
    with pytest.raises(ValueError, match="fake-quant"):
        vqcore.save_converted(q, tmp_path, format="diffusers")
    from dataclasses import replace

    from vqcore.quant import preset

    model, _ = _cogvideox()
    q = vqcore.quantize(model, method="rtn", w_bits=4, a_bits=8, config=replace(preset("dit", 4, 8), attention_bits=8))
    with pytest.raises(ValueError, match="fake-quant attention"):
        vqcore.save_converted(vqcore.convert(q), tmp_path, format="diffusers")
    assert not any(tmp_path.iterdir())  # nothing written


def test_load_errors_are_clear(tmp_path, registered):
    conv, _ = _converted(_cogvideox)
    vqcore.save_converted(conv, tmp_path, format="diffusers")
    cfg_path = tmp_path / "config.json"
    good = cfg_path.read_text()
    cfg = json.loads(good)
    layers = cfg["quantization_config"]["layers"]
    layers["transformer_blocks.0.attn1.to_nowhere"] = layers.pop("transformer_blocks.0.attn1.to_q")
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="to_nowhere"):
        type(conv).from_pretrained(tmp_path)
    cfg = json.loads(good)
    cfg["quantization_config"]["format"] = "vqcore-int/99"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="newer vqcore"):
        type(conv).from_pretrained(tmp_path)
    # a float checkpoint cannot be quantized by from_pretrained (vqcore calibrates)
    model, _ = _cogvideox()
    model.save_pretrained(tmp_path / "fp")
    with pytest.raises(ValueError, match="vqcore.quantize"):
        type(conv).from_pretrained(tmp_path / "fp", quantization_config=vqd.VQCoreConfig())


def test_register_is_what_diffusers_needs_and_unregister_undoes_it(tmp_path):
    from diffusers.quantizers import auto

    conv, _ = _converted(_cogvideox)
    vqcore.save_converted(conv, tmp_path, format="diffusers")
    before = (dict(auto.AUTO_QUANTIZER_MAPPING), dict(auto.AUTO_QUANTIZATION_CONFIG_MAPPING))
    vqd.unregister()
    with pytest.raises(ValueError, match="Unknown quantization type"):
        type(conv).from_pretrained(tmp_path)
    vqd.register()
    vqd.register()  # idempotent
    try:
        assert auto.AUTO_QUANTIZER_MAPPING["vqcore"] is vqd.VQCoreQuantizer
        assert auto.AUTO_QUANTIZATION_CONFIG_MAPPING["vqcore"] is vqd.VQCoreConfig
        added = {k for k in auto.AUTO_QUANTIZER_MAPPING if k not in before[0]}
        assert added <= {"vqcore"} and {k: v for k, v in auto.AUTO_QUANTIZER_MAPPING.items() if k != "vqcore"} == \
            {k: v for k, v in before[0].items() if k != "vqcore"}  # fmt: skip
        assert isinstance(type(conv).from_pretrained(tmp_path).transformer_blocks[0].ff.net[2], QLinearInt)
    finally:
        vqd.unregister()
    assert "vqcore" not in auto.AUTO_QUANTIZER_MAPPING and "vqcore" not in auto.AUTO_QUANTIZATION_CONFIG_MAPPING


def test_register_refuses_a_diffusers_with_another_quantizer_interface(monkeypatch):
    from diffusers.quantizers import auto
    from diffusers.quantizers.base import DiffusersQuantizer

    vqd.check_interface()  # the installed diffusers fits
    monkeypatch.delattr(auto, "AUTO_QUANTIZER_MAPPING")
    with pytest.raises(vqd.DiffusersIncompatible, match="AUTO_QUANTIZER_MAPPING.*diffusers 0.42.1"):
        vqd.register()
    monkeypatch.undo()
    monkeypatch.setattr(DiffusersQuantizer, "check_if_quantized_param", lambda self, name, value: False)
    with pytest.raises(vqd.DiffusersIncompatible, match="check_if_quantized_param"):
        vqd.register()
    assert "vqcore" not in auto.AUTO_QUANTIZER_MAPPING  # nothing registered on failure


# ---- 2. memory while loading ----------------------------------------------------------------------------------------
_RSS_PROBE = textwrap.dedent("""
    import gc, json, sys
    import torch
    torch.set_num_threads(1)
    from diffusers import CogVideoXTransformer3DModel
    from vqcore.integrations.diffusers import register

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    register()
    CogVideoXTransformer3DModel.from_pretrained(sys.argv[2])  # warm-up: lazy imports, allocator pools
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    base = status("VmRSS")
    model = CogVideoXTransformer3DModel.from_pretrained(sys.argv[1])
    load = status("VmHWM") - base
    for t in model.state_dict().values():  # fault in every page (safetensors maps the file; pages load when read)
        t.reshape(-1).view(torch.uint8).max()
    print(json.dumps({"load": load, "peak": status("VmHWM") - base}))
""")


def _rss_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc (Linux)")
def test_peak_rss_while_loading_is_below_the_bf16_model(tmp_path):
    if not _rss_supported():
        pytest.skip("/proc/self/clear_refs (peak-RSS reset) is not available")
    torch.manual_seed(0)
    # ~50 M parameters, 90 % of them in the converted linears: 16 heads x 64 = 1024 channels, 4 blocks
    model = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=16, attention_head_dim=64, in_channels=4, out_channels=4, time_embed_dim=64,
        text_embed_dim=64, num_layers=4, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=4).to(torch.bfloat16).eval()  # fmt: skip
    bf16_bytes = sum(p.numel() * 2 for p in model.parameters())
    conv = vqcore.convert(vqcore.quantize(model, method="rtn", w_bits=4, a_bits=8, inplace=True))
    vqcore.save_converted(conv, tmp_path / "q", format="diffusers")
    tiny, _ = _cogvideox()
    vqcore.save_converted(vqcore.convert(vqcore.quantize(tiny, method="rtn", w_bits=4, a_bits=8)), tmp_path / "t",
                          format="diffusers")  # fmt: skip
    int_bytes = (tmp_path / "q" / "diffusion_pytorch_model.safetensors").stat().st_size
    del model, conv
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(tmp_path / "q"), str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    load, peak = res["load"], res["peak"]
    print(f"bf16 weights {bf16_bytes / 2**20:.1f} MiB, vqcore checkpoint {int_bytes / 2**20:.1f} MiB, peak RSS growth: "
          f"from_pretrained {load / 2**20:.1f} MiB, with every weight read {peak / 2**20:.1f} MiB")
    # W4 attention + W8 MLP (the dit preset) hold ~0.45x the bf16 bytes; loading keeps the checkpoint's tensors as the
    # model's (no copy), so even with every page read the peak is about one checkpoint — materialising the bf16
    # weights of the converted layers would add ~0.9x bf16 on top
    assert int_bytes < 0.5 * bf16_bytes
    assert load <= peak < bf16_bytes
    assert peak < int_bytes + 0.25 * bf16_bytes


# ---- 3. the documented pipeline example -----------------------------------------------------------------------------
def _doc_blocks() -> dict[str, str]:
    text = DOC.read_text()
    blocks = dict(re.findall(r"<!-- example: (\w+) -->\s*```python\n(.*?)```", text, flags=re.S))
    assert set(blocks) >= {"settings", "save", "load"}, sorted(blocks)
    return blocks


def test_documented_pipeline_example_runs_on_a_tiny_latte_pipeline(tmp_path):
    from vqcore.zoo.pipelines import tiny_latte_pipeline

    tiny_latte_pipeline(seed=0).save_pretrained(tmp_path / "latte")
    blocks = _doc_blocks()
    settings = {}
    exec(blocks["settings"], settings)  # the documented settings (a real checkpoint) parse ...
    assert settings["MODEL"] == "maxin-cn/Latte-1"
    # ... and the test replaces them with the tiny local pipeline on CPU
    ns = {"MODEL": str(tmp_path / "latte"), "QUANTIZED": str(tmp_path / "latte-w4a8"), "DEVICE": "cpu",
          "DTYPE": torch.float32, "STEPS": 2, "PROMPT": "a digit one moving up",
          "SIZE": {"video_length": 4, "height": 16, "width": 16, "clean_caption": False}}  # fmt: skip
    try:
        exec(blocks["save"], ns)
        exec(blocks["load"], ns)
    finally:
        vqd.unregister()
    pipe, frames = ns["pipe"], ns["frames"]
    assert len(frames) == 1 and len(frames[0]) == 4 and frames[0][0].size == (16, 16)
    assert any(isinstance(m, QLinearInt) for m in pipe.transformer.modules())
    assert pipe.transformer is not ns["qtransformer"]  # the pipeline runs the model loaded by from_pretrained ...
    pipe.transformer = ns["qtransformer"]
    again = pipe(ns["PROMPT"], num_inference_steps=2, generator=torch.Generator().manual_seed(0), **ns["SIZE"]).frames
    import numpy as np

    # ... and it samples exactly what the converted model in memory samples
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames[0], again[0]))


def test_a_pipeline_folder_with_a_vqcore_transformer_loads_whole(tmp_path, registered):
    from diffusers import LattePipeline

    from vqcore.zoo.pipelines import tiny_latte_pipeline

    pipe = tiny_latte_pipeline(seed=0)
    pipe.transformer = vqcore.convert(vqcore.quantize(pipe.transformer, method="rtn", w_bits=4, a_bits=8))
    vqd.mark_quantized(pipe.transformer)  # the converted transformer carries the vqcore quantizer, so ...
    assert pipe.transformer.is_quantized and pipe.transformer.quantization_method == "vqcore"
    pipe.save_pretrained(tmp_path)  # ... diffusers' own save_pretrained writes a vqcore transformer subfolder ...
    vqcore.save_converted(pipe.transformer, tmp_path / "ref", format="diffusers")
    assert json.loads((tmp_path / "transformer" / "config.json").read_text())["quantization_config"] == \
        json.loads((tmp_path / "ref" / "config.json").read_text())["quantization_config"]  # fmt: skip
    loaded = LattePipeline.from_pretrained(tmp_path)  # ... and the pipeline loads it through the vqcore quantizer
    assert isinstance(loaded.transformer.transformer_blocks[0].ff.net[2], QLinearInt)
    kw = {"video_length": 4, "height": 16, "width": 16, "clean_caption": False, "output_type": "latent",
          "num_inference_steps": 2}  # fmt: skip
    a = loaded("a digit one moving up", generator=torch.Generator().manual_seed(0), **kw).frames
    b = pipe("a digit one moving up", generator=torch.Generator().manual_seed(0), **kw).frames
    assert torch.equal(a, b)

import importlib.util
from pathlib import Path

import pytest
import torch

import vqcore
from vqcore.calib import ROOT, Capture, find_blocks
from vqcore.recon import MSETerm, ReconConfig, block_reconstruction, optimize, parameter_groups

_spec = importlib.util.spec_from_file_location("vq_quant_tests", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox, tiny_unet = _mod.tiny_cogvideox, _mod.tiny_unet


def cog_inputs(b=2, t=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(b, 3, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(b, 4, 16, generator=g), timestep=torch.full((b,), t))


@pytest.fixture(scope="module")
def cog_calib():
    model = tiny_cogvideox()
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for i, t in enumerate((900, 500, 100)):
            model(**cog_inputs(t=t, seed=i))
    return model, cap.result


def test_capture_records_timesteps_samples_and_outputs(cog_calib):
    model, calib = cog_calib
    assert find_blocks(model) == ["transformer_blocks.0", "transformer_blocks.1"]
    items = calib["transformer_blocks.0"]
    assert len(items) == 6  # 3 calls × batch 2, split per sample
    assert sorted({i.timestep for i in items}) == [100.0, 500.0, 900.0]
    assert sorted({i.sample_index for i in items}) == [0, 1]
    def first(item):
        return next(t for t in (*item.args, *item.kwargs.values()) if isinstance(t, torch.Tensor))

    assert all(i.output is not None and first(i).shape[0] == 1 for i in items)
    assert len(calib[ROOT]) == 6 and calib.nbytes() > 0


def test_capture_memory_budget_is_respected():
    model = tiny_cogvideox()
    with torch.no_grad(), Capture(model, targets="blocks", max_bytes=20_000) as cap:
        for t in (900, 500):
            model(**cog_inputs(t=t))
    assert 0 < cap.result.nbytes() <= 20_000
    with pytest.raises(ValueError, match="every_n_steps"):
        Capture(model, every_n_steps=0)


def test_capture_token_subsampling_keeps_inputs_and_outputs_aligned():
    model = tiny_cogvideox()
    name = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "ff" in n)
    layer = model.get_submodule(name)
    with torch.no_grad(), Capture(model, targets=[name], include_root=False, max_tokens=5, seed=1) as cap:
        model(**cog_inputs(t=900))
    items = cap.result[name]
    assert len(items) == 2 and all(i.timestep == 900.0 for i in items)
    for it in items:
        x, y = it.args[0], it.output
        assert x.shape[1] == 5 and y.shape[1] == 5 and it.token_index.numel() == 5
        with torch.no_grad():  # token-wise layer: the kept outputs are the layer applied to the kept inputs
            torch.testing.assert_close(layer(x), y)
    with pytest.raises(ValueError, match="max_tokens"):
        Capture(model, targets="blocks", max_tokens=5)
    with pytest.raises(ValueError, match="max_tokens"):
        Capture(model, targets=[name], include_root=False, max_tokens=0)


def test_block_reconstruction_lowers_error_and_resumes(cog_calib, tmp_path):
    model, calib = cog_calib
    q = vqcore.quantize(model, "rtn", w_bits=3, a_bits=8, calib=calib)
    block = "transformer_blocks.0"
    items = calib[block]

    def block_error():
        with torch.no_grad():
            errs = []
            for it in items:
                out = q.get_submodule(block)(*it.args, **it.kwargs)
                errs.append((out[0] - it.output[0]).pow(2).mean())
            return torch.stack(errs).mean().item()

    before = block_error()
    cfg = ReconConfig(iters=30, batch_size=2, lrs={"weight_scale": 1e-3}, progress=False,
                      checkpoint=tmp_path / "ck.pt", checkpoint_every=10)
    hist = block_reconstruction(q, [block], calib.items, cfg, [MSETerm()])
    assert block_error() < before
    assert len(hist[block]) == 30
    # resume: a finished run's checkpoint makes a re-run start at the end (no further steps)
    again = block_reconstruction(q, [block], calib.items, cfg, [MSETerm()])
    assert again[block] == hist[block]


def test_optimize_resume_continues_exactly(tmp_path):
    torch.manual_seed(0)

    def run(ckpt, crash_at=None):
        p = torch.nn.Parameter(torch.tensor([3.0]))
        groups = [{"name": "p", "params": [p], "lr": 0.1}]
        model = torch.nn.Module()
        model.p = p
        cfg = ReconConfig(iters=20, lrs={}, progress=False, checkpoint=ckpt, checkpoint_every=5, seed=1)

        def loss(i, rng):
            if i == crash_at:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the run
            return (p - rng.random()).pow(2).sum()

        return p.detach().clone(), optimize(model, groups, loss, cfg, desc="x")

    full, full_losses = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", crash_at=12)  # last checkpoint at iteration 10
    resumed, resumed_losses = run(tmp_path / "b.pt")
    assert torch.allclose(full, resumed) and full_losses == pytest.approx(resumed_losses)


def test_parameter_groups_select_only_requested_parameters(cog_calib):
    model, calib = cog_calib
    q = vqcore.quantize(model, "rtn", w_bits=4, a_bits=8, calib=calib)
    groups = parameter_groups(q, {"weight_scale": 1e-4})
    trainable = [p for p in q.parameters() if p.requires_grad]
    assert len(groups) == 1 and len(trainable) == len(groups[0]["params"]) > 0
    with pytest.raises(ValueError, match="unknown parameter groups"):
        parameter_groups(q, {"everything": 1.0})


@pytest.mark.parametrize("method", ["rtn", "vidit-q"])
def test_quantize_report_save_load_round_trip(cog_calib, method, tmp_path):
    model, calib = cog_calib
    q = vqcore.quantize(model, method, w_bits=4, a_bits=8, calib=calib)
    rep = q.vqcore_report
    assert rep.layers == sum(rep.bits.values()) > 0 and rep.calibration_items == 6
    x = cog_inputs(seed=5)
    with torch.no_grad():
        ref, out = model(**x).sample, q(**x).sample
    assert 0 < (out - ref).pow(2).mean() < ref.pow(2).mean()
    vqcore.save(q, tmp_path / "q")
    fresh = tiny_cogvideox()
    fresh.load_state_dict(model.state_dict())
    loaded = vqcore.load(tmp_path / "q", fresh)
    with torch.no_grad():
        assert torch.equal(loaded(**x).sample, out)
    with pytest.raises(FileExistsError, match="overwrite"):
        vqcore.save(q, tmp_path / "q")
    with pytest.raises(ValueError, match="CogVideoXTransformer3DModel"):
        vqcore.load(tmp_path / "q", tiny_unet())


def _int_activation(layer, x):
    """The activation codes a converted ``QLinearInt`` computes for its input ``x`` (its forward's first step)."""
    from vqcore import kernels

    spec = layer.spec
    x2 = x.reshape(-1, layer.in_features)
    if spec.a_static:
        return layer._static_act(x2)
    if spec.a_shared and x.dim() >= 3 and x.shape[0] > 1:
        return layer._quantize_shared(x)
    return kernels.quantize_per_token(x2, spec.a_bits, spec.a_symmetric, layer.smooth_scale)


def assert_converted_matches_fake_quant(fake_model, int_model, inputs, fp_model=None):
    """Compare a fake-quant model with its ``convert``-ed copy on ``inputs`` (a kwargs dict): what must be identical
    exactly, the floats within bounds derived from float32 arithmetic.

    1. Integer weights: ``codes − zero_point`` of every converted layer equal the fake-quant layer's
       ``integer_weight()`` exactly.
    2. Each layer fed the *same* input (the one its fake-quant twin saw): the dequantized activations
       ``(q − zp)·Δ`` are bit-identical (same IEEE divisions ``(x / s) / Δ``, same round-half-to-even), and the outputs
       differ only by float32 rounding: both compute ``Σ_k x̂_k·Ŵ_jk + b_j`` with ``K`` products in some summation
       order (the BLAS kernel, hence the order, depends on the CPU's vector ISA), and the dequantized weights
       ``(c − z)·Δ`` vs ``c'·Δ − z'·Δ`` differ by at most two roundings, so
       ``|y_fake − y_int| ≤ (2K + 4)·u·(|x̂|·|Ŵ|ᵀ + |b|)`` with ``u = 2⁻²⁴`` (Higham's γ_K bound for each path).
    3. End to end the layers are chained, so a difference of a few ulps in one layer's output can move one input of
       the next layer across a rounding boundary of its activation quantizer: that element changes by one whole step
       Δ_x (this is why the old ``allclose(atol=1e-5)`` failed on other CPUs: AVX-512 vs AVX2 GEMM summation order in
       ``to_q/k/v`` moved one ``attn.to_out`` code). Such flips need the upstream difference (≤ the bound of 2, ~1e-6
       relative) to straddle a boundary, so they touch a fraction ~1e-6/Δ_x of the codes; the end-to-end change is
       therefore bounded by a small fraction of the quantization error itself: ``‖int − fake‖ ≤ 0.02·‖fake − fp‖``.
    """
    from vqcore.convert import QLinearInt
    from vqcore.quant import QLinear

    u = 2.0**-24
    layers = {n: m for n, m in fake_model.named_modules() if isinstance(m, QLinear)}
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, a[0].detach().clone()))
             for n, m in layers.items()]  # fmt: skip
    with torch.no_grad():
        fake = fake_model(**inputs).sample
        integer = int_model(**inputs).sample
    for h in hooks:
        h.remove()
    checked = 0
    for name, fq in layers.items():
        iq = int_model.get_submodule(name)
        assert isinstance(iq, QLinearInt), name
        assert iq.spec.split_rows == 0
        codes, _, zp = fq.integer_weight()
        zp = zp.reshape(-1, 1) if zp.dim() else zp
        ic = iq.weight_codes().float()
        if iq.weight_zp_scaled is not None:
            ic = ic - torch.round(iq.weight_zp_scaled / iq.weight_scale)[:, None]
        assert torch.equal(ic, (codes - zp).float()), f"{name}: integer weight codes differ"
        if name not in seen:
            continue
        x = seen[name]
        with torch.no_grad():
            xs = x / fq.smooth_scale if fq.smooth_scale is not None else x
            x_hat = fq.input_quantizer(xs)
            act = _int_activation(iq, x)
            x_hat_int = (act.codes.float() - act.zero_point.float()[:, None]) * act.scale[:, None]
            assert torch.equal(x_hat_int, x_hat.reshape(-1, iq.in_features)), f"{name}: activation codes differ"
            w_hat = fq.quantized_weight()
            bias = fq.bias.abs() if fq.bias is not None else 0.0
            bound = (2 * iq.in_features + 4) * u * (x_hat.abs() @ w_hat.abs().t() + bias)
            diff = (fq(x) - iq(x)).abs()
        assert (diff <= bound).all(), f"{name}: |fake − int| {diff.max():.3g} exceeds the float32 bound"
        checked += 1
    assert checked == len(layers) > 0
    if fp_model is not None:
        with torch.no_grad():
            ref = fp_model(**inputs).sample
        assert (integer - fake).norm() <= 0.02 * (fake - ref).norm()
    return fake, integer


def test_vidit_q_smoothing_and_convert_matches_fake_quant(cog_calib):
    """Integer codes identical, floats within float32 bounds (see :func:`assert_converted_matches_fake_quant`), on
    any CPU: also run under ``ATEN_CPU_CAPABILITY=default``, ``avx2`` and ``avx512``."""
    import copy

    model, calib = cog_calib
    q = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=8, calib=calib)
    assert q.vqcore_report.details["smoothed_layers"] > 0
    assert_converted_matches_fake_quant(q, vqcore.convert(copy.deepcopy(q)), cog_inputs(seed=7), fp_model=model)


def test_q_diffusion_reconstruction_on_a_tiny_unet():
    model = tiny_unet()
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for t in (800, 300):
            model(torch.randn(2, 1, 8, 8), t)
    untrained = vqcore.quantize(model, "q-diffusion", w_bits=3, a_bits=8, calib=cap.result, iters=0, progress=False)
    qd = vqcore.quantize(model, "q-diffusion", w_bits=3, a_bits=8, calib=cap.result, iters=150, progress=False)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        ref = model(x, 300).sample
        err_init = (untrained(x, 300).sample - ref).pow(2).mean()
        err_qd = (qd(x, 300).sample - ref).pow(2).mean()
    assert err_qd < err_init  # AdaRound + activation-step reconstruction improves on its own initialisation
    assert qd.vqcore_report.details["blocks"] > 0


def test_bad_inputs_fail_before_work(cog_calib):
    model, calib = cog_calib
    with pytest.raises(ValueError, match="w_bits"):
        vqcore.quantize(model, "rtn", w_bits=1)
    with pytest.raises(ValueError, match="method must be one of"):
        vqcore.quantize(model, "magic")
    with pytest.raises(ValueError, match="needs calibration data"):
        vqcore.quantize(model, "vidit-q", w_bits=4)
    bad = [dict(hidden_states=torch.randn(1, 3, 7, 8, 8), encoder_hidden_states=torch.randn(1, 4, 16),
                timestep=torch.tensor([10]))]
    with pytest.raises(ValueError, match="does not fit the model"):
        vqcore.quantize(model, "rtn", calib=bad)
    with pytest.raises(ValueError, match="already quantized"):
        vqcore.quantize(vqcore.quantize(model, "rtn", calib=calib), "rtn")
    with pytest.raises(ValueError, match="no quantizable layer"):
        vqcore.quantize(torch.nn.Sequential(torch.nn.ReLU()), "rtn", a_bits=None)


def test_cli_lists_methods(capsys):
    from vqcore.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out.split()
    assert {"rtn", "vidit-q", "q-diffusion"} <= set(out)


def test_cli_bench_forwards_its_options_to_the_zoo_benchmark(capsys, monkeypatch, tmp_path):
    import vqcore.zoo.bench as bench
    from vqcore.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0 and "--kinds" in capsys.readouterr().out
    seen = {}

    def fake_run(preset, device, seed, kinds, methods, out):
        seen.update(preset=preset, device=device, kinds=kinds, methods=methods)
        (out / "results.md").parent.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text("table\n")
        return {"sanity": {"image": {"fp_accuracy_ok": True, "rtn_lowest_clearly_worse": False}}}

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    rc = main(["bench", "--quick", "--kinds", "image", "--methods", "rtn,mpq-dm", "--out", str(tmp_path)])
    assert seen == {"preset": "quick", "device": "cpu", "kinds": ("image",), "methods": ["rtn", "mpq-dm"]}
    assert rc == 1  # a failed sanity bar is the exit status


def test_rollout_distillation_follows_the_fp_trajectory_and_lowers_eps_error():
    from diffusers import DDIMScheduler

    from vqcore.recon import rollout_distillation

    model = tiny_unet()
    q = vqcore.quantize(model, "rtn", w_bits=3, a_bits=None, kind="unet")
    for m in q.modules():
        if hasattr(m, "weight_quantizer") and m.weight_quantizer is not None:
            m.weight_quantizer.make_learnable()
    sched = DDIMScheduler(num_train_timesteps=1000)
    eval_x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))

    def eps_error():
        with torch.no_grad():
            return sum((q(eval_x, t).sample - model(eval_x, t).sample).pow(2).mean() for t in (900, 500, 100))

    def start(rng):
        g = torch.Generator().manual_seed(rng.randrange(10**6))
        return torch.randn(4, 1, 8, 8, generator=g), None

    before = eps_error()
    cfg = ReconConfig(iters=6, lrs={"weight_scale": 1e-3}, progress=False)
    losses = rollout_distillation(q, model, start, lambda m, x, t, c: m(x, t).sample, sched, num_steps=5, config=cfg)
    assert len(losses) == 6 * 5  # one optimiser step per denoising step
    assert eps_error() < before


def test_cli_quantizes_and_converts_a_saved_diffusers_model(tmp_path, capsys):
    from vqcore.cli import main

    model = tiny_cogvideox()
    model.save_pretrained(tmp_path / "fp")
    torch.save([cog_inputs()], tmp_path / "calib.pt")
    code = main(["quantize", "--model", str(tmp_path / "fp"), "--class", "CogVideoXTransformer3DModel",
                 "--calib", str(tmp_path / "calib.pt"), "--method", "vidit-q", "--w-bits", "4", "--a-bits", "6",
                 "--out", str(tmp_path / "q")])
    assert code == 0 and (tmp_path / "q" / "model.safetensors").is_file()
    loaded = vqcore.load(tmp_path / "q", tiny_cogvideox())
    assert loaded.vqcore_meta["method"] == "vidit-q" and loaded.vqcore_meta["a_bits"] == 6
    with pytest.raises(SystemExit, match="exists"):
        main(["quantize", "--model", str(tmp_path / "fp"), "--class", "CogVideoXTransformer3DModel", "--out",
              str(tmp_path / "q")])
    # ... and to integer weights: the saved integer model loads back and matches the fake-quant one
    assert main(["convert", str(tmp_path / "q"), "--model", str(tmp_path / "fp"), "--class",
                 "CogVideoXTransformer3DModel", "--out", str(tmp_path / "int")]) == 0
    from vqcore.convert import int_weight_bytes

    report = capsys.readouterr().out
    ratio = float(report.rsplit("(", 1)[1].split()[0])
    int_model = vqcore.load_converted(tiny_cogvideox(), tmp_path / "int")
    fp16 = int_weight_bytes(tiny_cogvideox()) // 2  # the fp32 model's linear weights at 2 bytes each
    assert "integer model saved" in report and ratio == pytest.approx(int_weight_bytes(int_model) / fp16, abs=1e-3)
    assert int_weight_bytes(int_model) < int_weight_bytes(loaded)  # packed codes are smaller than fake-quant weights
    with torch.no_grad():
        ref, out = loaded(**cog_inputs(seed=5)).sample, int_model(**cog_inputs(seed=5)).sample
    assert (out - ref).abs().max() <= 1e-3 * ref.abs().max()


def test_quantize_is_deterministic_given_the_seed():
    model = tiny_unet()
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        model(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), 500)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(100 + len(outs))  # global RNG state before the call must not matter
        q = vqcore.quantize(model, "q-diffusion", w_bits=3, a_bits=8, calib=cap.result, iters=5, progress=False,
                            seed=seed)
        with torch.no_grad():
            outs.append(q(x, 500).sample)
    assert torch.equal(outs[0], outs[1]) and q.vqcore_meta["seed"] == 4
    with pytest.raises(TypeError, match="seed"):
        vqcore.quantize(model, "rtn", seed="3")


def test_vidit_q_timestep_ranges_switch_smoothing_and_weight_ranges(cog_calib, tmp_path):
    model, calib = cog_calib  # timesteps 900, 500, 100
    q = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=6, calib=calib, timeranges=[[0, 500], [501, 1000]])
    assert q.vqcore_report.details["items_per_range"] == [4, 2]
    switch = q.vq_timerange
    assert not torch.equal(switch.s_0[0], switch.s_0[1])  # each range has its own balancing vector
    layer = q.get_submodule(next(iter(switch.layer_shapes)))
    x_hi, x_lo = cog_inputs(t=900, seed=7), cog_inputs(t=100, seed=7)
    outs = {}
    with torch.no_grad():
        for key, x, row in (("hi", x_hi, 1), ("lo", x_lo, 0)):
            outs[key] = q(**x).sample
            assert torch.equal(layer.smooth_scale, switch.s_0[row])
            assert torch.equal(layer.weight_quantizer.scale, switch.ws_0[row])
        single = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=6, calib=calib)(**x_hi).sample
    assert not torch.equal(outs["hi"], single)
    vqcore.save(q, tmp_path / "q")
    fresh = tiny_cogvideox()
    fresh.load_state_dict(model.state_dict())
    loaded = vqcore.load(tmp_path / "q", fresh)
    with torch.no_grad():
        assert torch.equal(loaded(**x_hi).sample, outs["hi"]) and torch.equal(loaded(**x_lo).sample, outs["lo"])
    with pytest.raises(ValueError, match="hold no calibration item"):
        vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=6, calib=calib, timeranges=[[0, 50], [51, 1000]])
    with pytest.raises(ValueError, match="overlap"):
        vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=6, calib=calib, timeranges=[[0, 600], [500, 1000]])


def test_step_tables_follow_the_call_timestep_and_survive_save_load(tmp_path):
    from dataclasses import replace

    from vqcore.methods.timerange import attach_step_tables
    from vqcore.quant import QuantSpec, preset

    model = tiny_unet()
    cfg = preset("unet", 8, 8)
    cfg = replace(cfg, weight=QuantSpec(granularity="per_channel", init="minmax"),
                  act=QuantSpec(granularity="per_tensor", init="minmax", timesteps=3))
    schedule = [900, 500, 100]
    calib = [dict(sample=torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(k)), timestep=torch.tensor(t))
             for k, t in enumerate(schedule)]
    q = vqcore.quantize(model, "rtn", w_bits=8, a_bits=8, calib=calib, config=cfg)
    tabled = [m for m in q.modules() if getattr(getattr(m, "spec", None), "timesteps", 0)]
    assert tabled
    for m in tabled:  # distinct rows so the selected row shows in the output
        m.scale = m.scale * torch.tensor([1.0, 2.0, 4.0]).view(3, *([1] * (m.scale.ndim - 1)))
    attach_step_tables(q, schedule)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        outs = {t: q(x, t).sample for t in (510, 95)}
        assert all(m._t == 2 for m in tabled)  # 95 is nearest to 100, the third schedule step
        assert not torch.equal(outs[510], q(x, 880).sample)
    vqcore.save(q, tmp_path / "q")
    loaded = vqcore.load(tmp_path / "q", tiny_unet())
    with torch.no_grad():
        assert all(torch.equal(loaded(x, t).sample, outs[t]) for t in (510, 95))
    with pytest.raises(ValueError, match="rows"):
        attach_step_tables(q, [900, 100])


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


def test_unknown_method_options_fail_before_any_forward(cog_calib):
    model, calib = cog_calib
    calls, handle = _count_forwards(model)
    try:
        with pytest.raises(TypeError, match=r"unknown options \['iters'\]"):
            vqcore.quantize(model, "rtn", w_bits=4, calib=calib, iters=5)  # rtn trains nothing
        with pytest.raises(TypeError, match=r"unknown options \['calib_sise'\]"):
            vqcore.quantize(model, "s2q-vdit", w_bits=4, a_bits=6, calib=calib, calib_sise=4)
        with pytest.raises(TypeError, match="unknown options"):
            vqcore.quantize(model, "vidit-q", w_bits=4, calib=calib, alhpa=0.5)
    finally:
        handle.remove()
    assert calls == []  # refused before the calibration check's forward
    from vqcore.methods import get_method

    assert {"alpha", "timeranges"} <= get_method("vidit-q").option_names()
    assert "weight_init" in get_method("s2q-vdit").option_names()  # a default_config option counts too


def test_calibration_items_of_different_shapes_fail_before_any_forward(cog_calib):
    model, _ = cog_calib
    good, other = cog_inputs(b=1, seed=1), cog_inputs(b=1, seed=2)
    other["encoder_hidden_states"] = torch.randn(1, 3, 16)  # 3 text tokens instead of 4
    calls, handle = _count_forwards(model)
    try:
        with pytest.raises(ValueError, match=r"calibration item 1 does not match item 0: encoder_hidden_states"):
            vqcore.quantize(model, "rtn", w_bits=4, calib=[good, other])
    finally:
        handle.remove()
    assert calls == []


def test_output_distillation_resumes_after_an_interruption_exactly(cog_calib, tmp_path):
    from vqcore.calib import ROOT
    from vqcore.recon import output_distillation

    model, calib = cog_calib
    items = calib[ROOT]

    class Crashing(MSETerm):
        def __init__(self, at):
            super().__init__()
            self.at, self.n = at, 0

        def compute(self, q_out, fp_out, context):
            self.n += 1
            if self.n == self.at:
                raise KeyboardInterrupt
            return super().compute(q_out, fp_out, context)

    def run(ckpt, crash_at=None):
        q = vqcore.quantize(model, "rtn", w_bits=3, a_bits=8, calib=calib)
        cfg = ReconConfig(iters=12, batch_size=2, lrs={"weight_scale": 1e-3}, progress=False, checkpoint=ckpt,
                          checkpoint_every=4)
        losses = output_distillation(q, items, cfg, [Crashing(crash_at)])
        return torch.cat([m.weight_quantizer.scale.detach().flatten() for m in q.modules()
                          if getattr(m, "weight_quantizer", None) is not None]), losses

    full, full_losses = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", crash_at=7)  # last checkpoint after iteration 4
    resumed, resumed_losses = run(tmp_path / "b.pt")
    assert len(resumed_losses) == 12
    assert torch.allclose(full, resumed) and full_losses == pytest.approx(resumed_losses)


def test_rollout_distillation_resumes_after_an_interruption_mid_rollout(tmp_path):
    from diffusers import DDIMScheduler

    from vqcore.recon import rollout_distillation

    model = tiny_unet()
    counter = {"n": 0, "crash": None}

    def denoise(m, x, t, c):
        if m is not model:
            counter["n"] += 1
            if counter["n"] == counter["crash"]:
                raise KeyboardInterrupt
        return m(x, t).sample

    def start(rng):
        g = torch.Generator().manual_seed(rng.randrange(10**6))
        return torch.randn(2, 1, 8, 8, generator=g), None

    def run(ckpt, crash=None):
        counter.update(n=0, crash=crash)
        q = vqcore.quantize(model, "rtn", w_bits=3, a_bits=None, kind="unet")
        cfg = ReconConfig(iters=4, lrs={"weight_scale": 1e-3}, progress=False, checkpoint=ckpt, checkpoint_every=4)
        losses = rollout_distillation(q, model, start, denoise, DDIMScheduler(num_train_timesteps=1000), num_steps=3,
                                      config=cfg)
        return torch.cat([m.weight_quantizer.scale.detach().flatten() for m in q.modules()
                          if getattr(m, "weight_quantizer", None) is not None]), losses

    full, full_losses = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", crash=11)  # in the 4th rollout (step 2 of 3); checkpoint_every=4 → every 6 steps
    resumed, resumed_losses = run(tmp_path / "b.pt")
    assert len(resumed_losses) == 12
    assert torch.allclose(full, resumed) and full_losses == pytest.approx(resumed_losses)


def test_capture_every_n_steps_and_sample_numbering_across_batches():
    model = tiny_cogvideox()
    with torch.no_grad(), Capture(model, targets="blocks", every_n_steps=2) as cap:
        for step, t in enumerate((900, 700, 500)):
            for batch in range(2):  # two batches of 2 samples per step (e.g. a pipeline called twice)
                model(**cog_inputs(t=t, seed=10 * step + batch))
    roots = cap.result[ROOT]
    # calls 0..5 = (t900, b0), (t900, b1), (t700, b0), ...; every 2nd call is kept: 0, 2, 4 → the first batch of
    # each timestep, samples 0 and 1
    assert sorted({i.call_index for i in roots}) == [0, 2, 4]
    assert sorted({i.timestep for i in roots}) == [500.0, 700.0, 900.0]
    assert {i.sample_index for i in roots} == {0, 1}
    with torch.no_grad(), Capture(model, targets=None) as cap2:
        for batch in range(2):
            model(**cog_inputs(t=900, seed=batch))
        model(**cog_inputs(t=700, seed=5))
    by_t = {}
    for it in cap2.result[ROOT]:
        by_t.setdefault(it.timestep, []).append(it.sample_index)
    assert sorted(by_t[900.0]) == [0, 1, 2, 3]  # the second batch continues the numbering at the same timestep
    assert sorted(by_t[700.0]) == [0, 1]  # a new timestep starts again at sample 0 (same trajectories)


def test_cli_quantize_help_and_bad_arguments_fail_before_loading_the_model(capsys, tmp_path):
    from vqcore.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for flag in ("--model", "--method", "--w-bits", "--a-bits", "--calib", "--options", "--out", "--overwrite",
                 "--no-progress"):
        assert flag in out
    missing = str(tmp_path / "no-such-model")  # would fail only when loaded: these must fail earlier
    base = ["quantize", "--model", missing, "--class", "CogVideoXTransformer3DModel", "--out", str(tmp_path / "q")]
    for extra, msg in ((["--w-bits", "9"], "--w-bits"), (["--a-bits", "1"], "--a-bits"),
                       (["--method", "magic"], "--method"), (["--options", "{iters: 5}"], "--options"),
                       (["--options", '{"iters": 5}'], "unknown options"),
                       (["--calib", str(tmp_path / "none.pt")], "--calib")):
        with pytest.raises(SystemExit, match=msg):
            main(base + extra)
    with pytest.raises(SystemExit):
        main(base + ["--a-bits", "six"])
    assert "expected an int in [2, 8] or 'fp'" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_cli_reports_bad_calibration_as_a_message_and_writes_nothing(tmp_path):
    from vqcore.cli import main

    tiny_cogvideox().save_pretrained(tmp_path / "fp")
    bad = cog_inputs(b=1)
    bad["hidden_states"] = torch.randn(1, 3, 7, 8, 8)  # wrong channel count
    torch.save([bad], tmp_path / "calib.pt")
    with pytest.raises(SystemExit, match="does not fit the model"):
        main(["quantize", "--model", str(tmp_path / "fp"), "--class", "CogVideoXTransformer3DModel", "--calib",
              str(tmp_path / "calib.pt"), "--out", str(tmp_path / "q")])
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("method", ["q-vdit", "s2q-vdit"])
def test_cli_runs_the_paper_methods_on_a_saved_calibration_set(cog_calib, method, tmp_path, capsys):
    from vqcore.cli import main

    model, calib = cog_calib
    model.save_pretrained(tmp_path / "fp")
    torch.save(calib, tmp_path / "calib.pt")  # a CalibrationSet (blocks + model inputs), as Capture returns it
    code = main(["quantize", "--model", str(tmp_path / "fp"), "--class", "CogVideoXTransformer3DModel", "--calib",
                 str(tmp_path / "calib.pt"), "--method", method, "--w-bits", "4", "--a-bits", "6", "--options",
                 '{"iters": 2}', "--no-progress", "--seed", "3", "--out", str(tmp_path / "q")])
    assert code == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"{method} W4A6:") and "6 calibration items" in summary
    fresh = tiny_cogvideox()
    fresh.load_state_dict(model.state_dict())
    loaded = vqcore.load(tmp_path / "q", fresh)
    assert loaded.vqcore_meta["method"] == method
    import json

    saved = json.loads((tmp_path / "q" / "config.json").read_text())
    assert saved["seed"] == 3 and saved["report"]["details"]["iters" if method == "q-vdit" else "iters_per_block"] == 2


def test_an_explicit_config_sets_the_reported_bits(cog_calib):
    from vqcore.quant import preset

    model, calib = cog_calib
    q = vqcore.quantize(model, "rtn", calib=calib, config=preset("dit", 4, 6))  # w_bits/a_bits left at 8/8
    assert (q.vqcore_report.w_bits, q.vqcore_report.a_bits) == (4, 6)
    assert q.vqcore_meta["w_bits"] == 4 and q.vqcore_report.summary().startswith("rtn W4A6")
    with pytest.raises(TypeError, match="QuantConfig"):
        vqcore.quantize(model, "rtn", calib=calib, config={"w_bits": 4})


@pytest.mark.parametrize("method", ["q-diffusion", "s2q-vdit"])
def test_block_methods_refuse_calibration_without_block_captures_before_any_forward(cog_calib, method):
    model, calib = cog_calib
    roots_only = vqcore.CalibrationSet({ROOT: calib[ROOT]})
    calls, handle = _count_forwards(model)
    try:
        for bad, what in (([cog_inputs()], "got list"), (roots_only, "one without blocks"), (None, "got NoneType")):
            with pytest.raises(ValueError, match=f"reconstructs blocks.*{what}"):
                vqcore.quantize(model, method, w_bits=4, a_bits=6, calib=bad)
    finally:
        handle.remove()
    assert calls == []

"""The quality benchmark driver: method discovery, one tiny end-to-end run, outputs and sanity fields."""

import json

import pytest

from vqcore.methods import METHODS, Method, register_method
from vqcore.zoo import bench


def test_methods_for_orders_baseline_first_and_filters_by_kind():
    video, image = bench.methods_for("video"), bench.methods_for("image")
    assert video[:2] == ["rtn", "vidit-q"] and "q-diffusion" not in video
    assert image[:2] == ["rtn", "q-diffusion"] and "vidit-q" not in image
    assert bench.methods_for("image", ["rtn"]) == ["rtn"]


def test_methods_declaring_kinds_are_routed(monkeypatch):
    @register_method("zz-video-only-test")
    class VideoOnly(Method):
        kinds = ("dit",)

    try:
        assert "zz-video-only-test" in bench.methods_for("video")
        assert "zz-video-only-test" not in bench.methods_for("image")
    finally:
        METHODS.pop("zz-video-only-test")


def test_tiny_image_run_writes_tables_grid_and_sanity(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.PRESETS, "test", dict(n_video=4, n_image=20, steps=4, calib_video=1, calib_image=2,
                                                    iters=2, n_real=60))
    result = bench.run_benchmark("test", kinds=("image",), methods=["rtn"], out=tmp_path,
                                 settings={"image": [(8, 8), (2, 4)]}, jobs=1)
    rows = result["rows"]
    assert [r["method"] for r in rows] == ["fp", "rtn", "rtn"]
    fp, w8, w2 = rows
    assert fp["accuracy"] >= 0.8
    # W8A8 stays close to FP; W2A4 is further away (the benchmark separates bit-widths)
    assert w8["psnr"] > w2["psnr"] and w8["psnr"] > 20
    assert "W2A4" in w2["bits"] and "W8A8" in w2["bits"]
    s = result["sanity"]["image"]
    assert s["lowest_setting"] == "W2A4" and s["fp_accuracy_ok"]
    assert isinstance(s["rtn_lowest_clearly_worse"], bool)
    assert s["rtn_w8a8_psnr"] == w8["psnr"] and s["rtn_lowest_psnr"] == w2["psnr"]
    assert s["rtn_fidelity_separates"] == (w2["psnr"] <= w8["psnr"] - 6.0)
    assert bench.sanity_ok(s) == (s["rtn_lowest_clearly_worse"] or s["rtn_fidelity_separates"])
    for name in ("results.json", "results.md", "grid_image.png", "grid_image.txt"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["preset"] == "test"
    assert "NOT Inception" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="preset"):
        bench.run_benchmark("nope")


@pytest.mark.slow
def test_worker_processes_give_the_serial_rows(tmp_path, monkeypatch):
    """``jobs=2``: rows computed in spawned workers (each recomputing FP samples and calibration from the same seeds)
    equal the serial run's, in the same order, with the same grid."""
    preset = dict(n_video=4, n_image=10, steps=3, calib_video=1, calib_image=1, iters=1, n_real=40)
    monkeypatch.setitem(bench.PRESETS, "test", preset)
    kw = dict(kinds=("image",), methods=["rtn", "q-diffusion"], settings={"image": [(2, 4)]})
    serial = bench.run_benchmark("test", jobs=1, **kw)
    par = bench.run_benchmark("test", jobs=2, out=tmp_path, **kw)

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]

    assert [(r["W/A"], r["method"]) for r in par["rows"]] == [("FP", "fp"), ("W2A4", "rtn"), ("W2A4", "q-diffusion")]
    assert strip(par["rows"]) == strip(serial["rows"]) and par["sanity"] == serial["sanity"]
    assert par["meta"]["jobs"] == 2 and "image" in par["meta"]["timings"]
    assert (tmp_path / "grid_image.txt").read_text().strip().endswith("fp, rtn, q-diffusion")
    with pytest.raises(ValueError, match="jobs"):
        bench.run_benchmark("test", jobs=0)
    with pytest.raises(ValueError, match="jobs"):
        bench.run_benchmark("test", device="cuda", jobs=2)  # refused before any work (no GPU needed)


def test_fidelity_bar_and_overall_sanity():
    assert bench.fidelity_separates(24.6, 16.2) and not bench.fidelity_separates(24.6, 19.0)
    base = {"fp_accuracy_ok": True, "rtn_lowest_clearly_worse": False, "rtn_fidelity_separates": True}
    assert bench.sanity_ok(base)  # either RTN bar suffices ...
    assert not bench.sanity_ok({**base, "rtn_fidelity_separates": False})
    assert not bench.sanity_ok({**base, "fp_accuracy_ok": False})  # ... but unrecognisable FP samples never pass
    assert not bench.sanity_ok({**base, "rtn_fidelity_separates": None})  # no W8A8 row: only the first bar counts


def test_clearly_worse_bar():
    assert bench.clearly_worse(0.98, 0.98, 200, 10.0, 20.0)  # Fréchet doubled
    assert bench.clearly_worse(0.98, 0.85, 20, 10.0, 11.0)  # accuracy -0.13
    assert bench.clearly_worse(0.985, 0.925, 200, 10.0, 12.0)  # -0.06, > 2 s.e. at n=200
    assert not bench.clearly_worse(0.985, 0.925, 20, 10.0, 12.0)  # same drop is noise at n=20
    assert not bench.clearly_worse(0.98, 0.97, 10_000, 10.0, 12.0)  # significant but below 0.03


@pytest.mark.parametrize("spec", [dict(bits=6, granularity="per_token"), dict(bits=4, granularity="per_tensor"),
                                  dict(bits=3, granularity="per_channel"),
                                  dict(bits=4, granularity="per_group", group_size=8),
                                  dict(bits=8, granularity="per_token_shared"),
                                  dict(bits=4, granularity="per_channel", symmetric=True)])
def test_no_grad_fake_quant_is_bit_identical_to_the_autograd_path(spec):
    """The benchmark's sampling runs the quantizers without autograd (in-place arithmetic on one buffer); the values
    must be exactly those of the straight-through path that training uses, and training must still get gradients."""
    import torch

    from vqcore.quant.quantizer import UniformQuantizer

    torch.manual_seed(0)
    weight_like = spec["granularity"] in ("per_channel", "per_group")
    x = torch.randn(12, 32) * 3 if weight_like else torch.randn(4, 6, 32) * 3
    x.view(-1)[0] = 40.0  # an outlier, so that clamping is exercised
    q = UniformQuantizer(**spec)
    if not q.dynamic:
        q.calibrate(x * 0.5)  # a narrower range than x: part of x is clipped
    with torch.no_grad():
        fast = q(x)
    xr = x.clone().requires_grad_(True)
    slow = q(xr)
    assert torch.equal(fast, slow.detach())
    assert not torch.equal(fast, x)  # it did quantize
    slow.sum().backward()  # STE: gradient 1 inside the clamp range, 0 where clipped
    assert xr.grad is not None and set(xr.grad.unique().tolist()) <= {0.0, 1.0} and xr.grad.sum() > 0
    if not q.dynamic:
        assert (xr.grad == 0).any()


def test_mse_range_search_picks_the_brute_force_minimum():
    """The in-place L_p range search (``exp(p·log|e|)`` on CPU) picks the candidate a plain ``pow`` search picks."""
    import torch

    from vqcore.quant.quantizer import UniformQuantizer

    torch.manual_seed(1)
    x = torch.randn(512, 16) * torch.rand(16) * 2
    x[torch.rand_like(x) < 0.002] *= 25
    for bits, gran in ((4, "per_tensor"), (6, "per_tensor"), (3, "per_channel")):
        q = UniformQuantizer(bits=bits, granularity=gran, init="mse")
        q.calibrate(x.T if gran == "per_channel" else x)
        data = x.T if gran == "per_channel" else x
        rows = data.reshape(-1, data.shape[-1]) if gran == "per_channel" else data.reshape(1, -1)
        for i, row in enumerate(rows):
            lo, hi = min(row.min().item(), 0.0), max(row.max().item(), 0.0)
            errs = []
            for k in range(80):
                r = 1.0 - 0.01 * k
                d = max((hi - lo) * r / (2**bits - 1), 1e-8)
                z = round(-lo * r / d)
                xh = (torch.clamp(torch.round(row / d) + z, 0, 2**bits - 1) - z) * d
                errs.append((xh - row).abs().pow(2.4).sum().item())
            scale = q.scale.flatten()[i].item()
            best = min(range(80), key=errs.__getitem__)
            assert scale == pytest.approx(max((hi - lo) * (1.0 - 0.01 * best) / (2**bits - 1), 1e-8), rel=1e-6)

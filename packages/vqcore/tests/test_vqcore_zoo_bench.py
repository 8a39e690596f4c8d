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
                                 settings={"image": [(8, 8), (2, 4)]})
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
    for name in ("results.json", "results.md", "grid_image.png", "grid_image.txt"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["preset"] == "test"
    assert "NOT Inception" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="preset"):
        bench.run_benchmark("nope")


def test_clearly_worse_bar():
    assert bench.clearly_worse(0.98, 0.98, 200, 10.0, 20.0)  # Fréchet doubled
    assert bench.clearly_worse(0.98, 0.85, 20, 10.0, 11.0)  # accuracy -0.13
    assert bench.clearly_worse(0.985, 0.925, 200, 10.0, 12.0)  # -0.06, > 2 s.e. at n=200
    assert not bench.clearly_worse(0.985, 0.925, 20, 10.0, 12.0)  # same drop is noise at n=20
    assert not bench.clearly_worse(0.98, 0.97, 10_000, 10.0, 12.0)  # significant but below 0.03

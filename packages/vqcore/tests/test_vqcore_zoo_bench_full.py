"""The full quality benchmark driver of issue 20 (``vqcore.zoo.bench_full``): its plan, seed aggregation, targets,
resume across calls, and the CLI's argument checks. The GPU run itself is not a test."""

import json
import math

import pytest

from vqcore.methods import get_method
from vqcore.zoo import bench, bench_full


def test_plan_covers_models_settings_methods_seeds_and_ablations():
    units = bench_full.plan_units()
    keys = [u["key"] for u in units]
    assert len(keys) == len(set(keys))
    for kind, settings in (("video", ["W8A8", "W4A8", "W4A6", "W3A6"]), ("video-l", ["W8A8", "W4A8", "W4A6", "W3A6"]),
                           ("image", ["W8A8", "W4A8", "W3A4", "W2A4"])):
        for seed in (0, 1, 2):
            mine = [u for u in units if u["model"] == kind and u["seed"] == seed and u["ablation"] == "none"]
            assert [u["method"] for u in mine[:1]] == ["fp"]
            expected = {(wa, m) for wa in settings for m in bench.methods_for(kind)}
            assert {(f"W{u['w']}A{u['a']}", u["method"]) for u in mine[1:]} == expected
    assert {"q-vdit", "s2q-vdit", "vidit-q", "rtn"} <= set(bench.methods_for("video-l"))
    assert {"mpq-dm", "q-diffusion", "rtn"} <= set(bench.methods_for("image"))
    # ablations: every variant once per seed, at the method's headline setting, on the largest model of its kind
    abl = [u for u in units if u["ablation"] != "none"]
    where = {"q-vdit": ("video-l", 3, 6), "s2q-vdit": ("video-l", 4, 6), "mpq-dm": ("image", 2, 4)}
    for method, variants in bench_full.ABLATIONS.items():
        got = [u for u in abl if u["method"] == method]
        assert len(got) == 3 * len(variants)
        assert {(u["model"], u["w"], u["a"]) for u in got} == {where[method]}
        for opts in variants.values():
            get_method(method).Config(**opts)  # every ablation is a valid option set of the method
    # without the large DiT the video ablations move to the small one
    small = bench_full.plan_units(kinds=("video",), seeds=(0,))
    assert {u["model"] for u in small if u["ablation"] != "none"} == {"video"}


def test_aggregate_means_and_sample_sd_over_seeds():
    recs = [{"row": {"model": "image", "W/A": "W2A4", "method": "rtn", "bits": "b", "accuracy": a, "fid_like": f,
                     "seed": s}} for s, (a, f) in enumerate([(0.5, 10.0), (0.7, 14.0), (0.6, 12.0)])]
    (row,) = bench_full.aggregate(recs)
    assert row["seeds"] == 3 and row["ablation"] == "none"
    assert row["accuracy"] == pytest.approx(0.6, abs=1e-12) and row["fid_like"] == pytest.approx(12.0, abs=1e-12)
    assert row["fid_like_sd"] == pytest.approx(2.0, abs=1e-12)  # sample sd of 10, 12, 14
    assert row["accuracy_sd"] == pytest.approx(0.1, abs=1e-12)


def _row(model, wa, method, fd, fd_sd, acc, acc_sd):
    key = "fid_like" if model == "image" else "fvd_like"
    return {"model": model, "W/A": wa, "method": method, "ablation": "none", key: fd, f"{key}_sd": fd_sd,
            "accuracy": acc, "accuracy_sd": acc_sd}


def test_targets_need_a_gain_beyond_the_seed_spread_and_the_method_specific_bars():
    rows = [_row("video-l", "FP", "fp", 10.0, 0.5, 0.99, 0.01),
            _row("video-l", "W3A6", "rtn", 20.0, 1.0, 0.90, 0.01),
            _row("video-l", "W3A6", "vidit-q", 16.0, 1.0, 0.93, 0.01),
            _row("video-l", "W3A6", "q-vdit", 14.0, 1.0, 0.95, 0.01),  # gains 2.0 > 1.0 and 0.02 > 0.01
            _row("video-l", "W4A6", "rtn", 15.0, 1.0, 0.95, 0.01),
            _row("video-l", "W4A6", "s2q-vdit", 11.5, 0.5, 0.97, 0.01),  # beats, but 11.5 > 1.1 x 10
            _row("image", "FP", "fp", 2.0, 0.1, 0.99, 0.01),
            _row("image", "W2A4", "rtn", 40.0, 2.0, 0.70, 0.02),
            _row("image", "W2A4", "q-diffusion", 30.0, 2.0, 0.80, 0.02),
            _row("image", "W2A4", "mpq-dm", 19.0, 2.0, 0.90, 0.02)]  # 19 > 0.6 x 30 = 18
    got = {(t["model"], t["method"]): t for t in bench_full.targets(rows)}
    q = got[("video-l", "q-vdit")]
    assert q["best_baseline"] == "vidit-q" and q["frechet_gain"] == pytest.approx(2.0) and q["met"] == "yes"
    assert got[("video-l", "s2q-vdit")]["met"] == "no"
    assert got[("image", "mpq-dm")]["met"] == "no"
    rows[-1] = _row("image", "W2A4", "mpq-dm", 17.0, 2.0, 0.90, 0.02)
    assert {(t["model"], t["method"]): t for t in bench_full.targets(rows)}[("image", "mpq-dm")]["met"] == "yes"
    rows[3] = _row("video-l", "W3A6", "q-vdit", 15.5, 1.0, 0.95, 0.01)  # gain 0.5 < spread 1.0
    assert {(t["model"], t["method"]): t for t in bench_full.targets(rows)}[("video-l", "q-vdit")]["met"] == "no"


def _strip(rows):
    return [{k: v for k, v in r.items() if not (k.startswith(("quant_s", "sample_s", "calibration")))} for r in rows]


@pytest.mark.slow
def test_resumed_run_equals_one_run_and_writes_the_results_json(tmp_path):
    """Call 1 runs seed 0; call 2 (seeds 0, 1) resumes from call 1's units file and runs only seed 1; its aggregated
    rows equal an uninterrupted run's (CPU, same process: exact except the timing columns)."""
    kw = dict(kinds=("image",), methods=["rtn"], preset="tiny", settings={"image": [(8, 8), (2, 4)]},
              ablations=False, log=lambda m: None)
    first = bench_full.run_full(tmp_path / "a", seeds=(0,), results_root=tmp_path / "ra", **kw)
    assert first["left"] == 0
    seen = []
    resumed = bench_full.run_full(tmp_path / "b", seeds=(0, 1), results_root=tmp_path / "rb",
                                  resume_from=[tmp_path / "a" / bench_full.UNITS_FILE],
                                  **{**kw, "log": seen.append})
    ran = [m.split("] ")[1].split(":")[0] for m in seen if m.startswith("[")]
    assert ran and all("|s1|" in k for k in ran)
    whole = bench_full.run_full(tmp_path / "c", seeds=(0, 1), results_root=tmp_path / "rc", **kw)
    assert _strip(resumed["rows"]) == _strip(whole["rows"])
    assert {r["seeds"] for r in whole["rows"]} == {2}
    data = json.loads((tmp_path / "rc" / "vqcore" / "vqcore_quality.json").read_text())
    assert {r["table"] for r in data["rows"]} == {"image"}
    assert data["settings"]["seeds"] == [0, 1] and data["settings"]["preset"] == "tiny"
    lines = (tmp_path / "b" / bench_full.UNITS_FILE).read_text().splitlines()
    assert len(lines) == 2 * 3  # the resumed call's file holds every unit: it alone resumes the next call
    assert all(math.isfinite(r["fid_like"]) for r in whole["rows"])


def test_missing_weights_and_bad_arguments_fail_in_one_line(tmp_path, monkeypatch, capsys):
    from vqcore import zoo

    monkeypatch.setattr(zoo, "weights_path", lambda name: tmp_path / f"{name}.safetensors")
    with pytest.raises(FileNotFoundError) as err:
        bench_full.run_full(tmp_path / "o", kinds=("image",), seeds=(0,), preset="tiny")
    assert "\n" not in str(err.value) and "digits-unet" in str(err.value)
    assert not (tmp_path / "o").exists()  # nothing written before the check
    with pytest.raises(SystemExit) as exc:
        bench.main(["--full", "--out", str(tmp_path / "o"), "--kinds", "image"])
    assert str(exc.value).startswith("vqcore bench: ") and "\n" not in str(exc.value)
    with pytest.raises(SystemExit, match="--seeds must be"):
        bench.main(["--full", "--plan", "--seeds", "a,b"])
    with pytest.raises(SystemExit, match="--preset must be"):
        bench.main(["--full", "--plan", "--preset", "huge"])
    with pytest.raises(SystemExit, match="kinds must be"):
        bench.main(["--full", "--plan", "--kinds", "audio"])
    with pytest.raises(SystemExit, match="--settings must"):
        bench.main(["--full", "--plan", "--settings", "video-l=W3X6"])
    assert bench.main(["--full", "--plan", "--kinds", "video-l,image", "--settings", "video-l=W3A6,W4A6;image=W2A4",
                       "--methods", "rtn,vidit-q,q-vdit"]) == 0
    keys = capsys.readouterr().out.strip().splitlines()[:-1]
    assert {k.split("|")[2] for k in keys if "|none" in k and "|fp|" not in k} == {"W3A6", "W4A6", "W2A4"}
    assert sum("|no-tqe" in k for k in keys) == 3  # q-vdit's ablations stay at its headline W3A6, every seed
    assert bench.main(["--full", "--plan", "--kinds", "image", "--seeds", "0", "--no-ablations"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("13 units")  # FP + 4 settings x (rtn, q-diffusion, mpq-dm)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["video", "video-l", "image"])
def test_capture_budget_holds_the_full_presets_calibration_set(kind):
    """The capture budget of each kind holds every kept call of the ``full`` preset's calibration trajectories
    (a smaller one silently drops the later calls: for video-l at the former 768 MiB, all but the first 7 steps of
    one trajectory). Measured here: the bytes Capture stores for one FP denoiser call of the kind's model (untrained
    weights of the same shape; the size does not depend on the values)."""
    import torch

    from vqcore import zoo
    from vqcore.calib import Capture

    gen_name, _ = bench.KIND_MODELS[kind]
    model = zoo.build(gen_name).eval()
    guidance = bench.IMAGE_GUIDANCE if kind == "image" else bench.VIDEO_GUIDANCE
    torch.manual_seed(0)
    with torch.no_grad(), Capture(model, targets="blocks", max_bytes=2**40) as cap:
        zoo.sample(model, torch.tensor([1]), num_steps=1, guidance_scale=guidance, seed=0, batch_size=1)
    per_call = cap._bytes
    p = bench.PRESETS["full"]
    max_bytes, every = bench.CAPTURE[kind]
    calls = p["calib_image" if kind == "image" else "calib_video"] * math.ceil(p["steps"] / every)
    assert calls * per_call <= max_bytes, (kind, per_call, calls, max_bytes)

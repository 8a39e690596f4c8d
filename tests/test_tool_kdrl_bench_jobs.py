"""tools/bench/kdrl.py --jobs: units spread over worker processes give the same results as one after another.

CPU, the digits pool at 1 teacher epoch and 1 student epoch, seeds 0 and 1, AVER and MTKD-RL (4 units). Run A:
``--jobs 1`` (in-process, teachers as just trained). Run B resumes A's file cut after seed 0 with ``--jobs 2``: two
spawned workers, which load the teachers from the safetensors cache, run seed 1's units (after the solo timing
pass). Their final accuracy, test curve, per-teacher logit/feature weights and the sha256 of the trained student
must equal A's bit for bit: same job, same CPU kernels at one thread each, so no tolerance is needed; a per-process
state leaking into a unit (an RNG not reseeded, teachers loaded differently) would change the hash. Run C resumes
B's complete file: nothing runs, the solo timings are reused and the time columns say they come from the solo pass.
A ``--max-seconds`` too small for any unit ends ``INCOMPLETE``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kdrl")

ROOT = Path(__file__).resolve().parents[1]
SETTING = ["--quick", "--pools", "digits", "--epochs", "1", "--teacher-epochs", "1", "--seeds", "0,1",
           "--strategies", "aver,mtkd_rl", "--threads", "1"]
COMPARED = ("final_top1", "test_curve", "logit_weights", "feat_weights", "student_sha256", "epochs")


def _bench():
    spec = importlib.util.spec_from_file_location("kdrl_bench_tool", ROOT / "tools" / "bench" / "kdrl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _units(path: Path) -> dict:
    return {(r["strategy"], r["seed"]): r for r in _lines(path) if r["kind"] == "unit"}


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_units_in_workers_equal_units_in_process_and_resume_runs_only_the_rest(tmp_path, capsys, keep_threads):
    bench = _bench()
    work = str(tmp_path / "work")  # one teacher cache for all runs: A trains, B and C load
    assert bench.main([*SETTING, "--jobs", "1", "--out", work, "--results-root", str(tmp_path / "a")]) == 0
    a_lines = (tmp_path / "a" / "kdrl_quick_units.jsonl").read_text().splitlines()
    a = _units(tmp_path / "a" / "kdrl_quick_units.jsonl")
    assert sorted(a) == [("aver", 0), ("aver", 1), ("mtkd_rl", 0), ("mtkd_rl", 1)]
    assert a[("aver", 0)]["student_sha256"] != a[("aver", 1)]["student_sha256"]  # the hash sees the seed
    assert a[("aver", 0)]["student_sha256"] != a[("mtkd_rl", 0)]["student_sha256"]  # and the strategy

    # B: resume A's file cut after its second unit (seed 0 done) plus a line cut by a kill, two workers
    cut = [i for i, line in enumerate(a_lines) if json.loads(line)["kind"] == "unit"][1]
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(a_lines[:cut + 1]) + "\n" + a_lines[cut + 1][:40])
    kept = {(r["strategy"], r["seed"]) for r in map(json.loads, a_lines[:cut + 1]) if r["kind"] == "unit"}
    assert kept == {("aver", 0), ("mtkd_rl", 0)}
    capsys.readouterr()
    assert bench.main([*SETTING, "--jobs", "2", "--timing-epochs", "1", "--out", work, "--resume-from",
                       str(partial), "--results-root", str(tmp_path / "b")]) == 0
    assert "INCOMPLETE" not in capsys.readouterr().out
    b_path = tmp_path / "b" / "kdrl_quick_units.jsonl"
    b = _units(b_path)
    assert sorted(b) == sorted(a)
    for key in b:
        if key in kept:  # reused as written
            assert b[key] == a[key], key
        else:  # run again, in a worker process
            assert b[key]["jobs"] == 2 and a[key]["jobs"] == 1
            assert {f: b[key][f] for f in COMPARED} == {f: a[key][f] for f in COMPARED}, key
    timing_b = [r for r in _lines(b_path) if r["kind"] == "timing"]
    assert sorted(r["strategy"] for r in timing_b) == ["aver", "mtkd_rl"]

    # C: resume the complete file: nothing to run, the solo timings reused, the time columns from them
    assert bench.main([*SETTING, "--jobs", "2", "--timing-epochs", "1", "--out", work, "--resume-from",
                       str(b_path), "--results-root", str(tmp_path / "c")]) == 0
    c_lines = _lines(tmp_path / "c" / "kdrl_quick_units.jsonl")
    assert _units(tmp_path / "c" / "kdrl_quick_units.jsonl") == b
    assert [r for r in c_lines if r["kind"] == "timing"] == timing_b
    res = json.loads((tmp_path / "c" / "kdrl" / "kdrl_quick.json").read_text())
    acc = [r for r in res["rows"] if r["table"] == "accuracy"]
    assert {r["clock"] for r in acc} == {"cpu, solo pass"} and len(acc) == 2
    assert res["settings"]["complete"] is True and res["settings"]["jobs"] == 2
    assert res["settings"]["time_columns"]["digits"].startswith("solo timing pass")


def test_max_seconds_too_small_for_any_unit_ends_incomplete(tmp_path, capsys, keep_threads):
    bench = _bench()
    assert bench.main([*SETTING, "--jobs", "1", "--max-seconds", "0.001", "--out", str(tmp_path / "w"),
                       "--results-root", str(tmp_path / "r")]) == 0
    assert "INCOMPLETE: 0/4 units" in capsys.readouterr().out
    res = json.loads((tmp_path / "r" / "kdrl" / "kdrl_quick.json").read_text())
    assert res["settings"]["complete"] is False and res["settings"]["units_done"] == 0

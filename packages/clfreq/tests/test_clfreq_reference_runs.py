"""Seeded short runs of every rehearsal method alone, with CLFD and with FDINet, against numbers recorded from the
code *before* the issue-26 split of ``clfreq/rehearsal/core.py`` (commit 0c54b12).

The runs are in float64 on one thread so the recorded numbers carry over to other CPUs: a different CPU (or
oneDNN/BLAS build) changes the summation order of convolutions and matmuls, i.e. each result moves by a few float64
ulps (~1e-16 relative), amplified by the 12 SGD steps of a run; parameter and logit sums therefore get a relative
tolerance of 1e-9 (seven orders of magnitude above that), and the accuracies (counts of argmax hits over 30 test
images per task) are compared exactly (a changed count needs two logits within ~1e-13 of each other). On the machine
fingerprint the numbers were recorded on, the SHA-256 of the whole final state (net, optimiser, buffer, EMA models,
CLFD state) must match bit for bit: the refactor changed no operation and no RNG draw.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import pytest
import torch

from clfreq import create_method, split_digits, train_continual

METHODS = ["er", "der++", "er-ace", "cls-er"]
PLUGINS = [None, "clfd", "fdinet"]


def _fingerprint() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{torch.__version__}|{platform.machine()}|{torch.backends.cpu.get_cpu_capability()}|{model}"


def _tensors(obj, prefix=""):
    """(key, tensor) pairs of a nested state dict, in insertion order (python scalars as 0-d float64 tensors)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")
    elif isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, (int, float, bool)):
        yield prefix, torch.tensor(float(obj), dtype=torch.float64)


def run_reference(name: str, plugin: str | None, dtype: torch.dtype = torch.float64) -> dict:
    """The recorded run: 2 tasks of Split Digits (8×8, 48 train images per task), 2 epochs, batch 16, ``dtype``."""
    default, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(dtype)
    torch.set_num_threads(1)
    try:
        bench = split_digits(image_size=8)
        bench.train = [(x[:48].to(dtype), y[:48]) for x, y in bench.train[:2]]
        bench.test = [(x[:30].to(dtype), y[:30]) for x, y in bench.test[:2]]
        kw = {"lr": 0.05} if name != "cls-er" else {"lr": 0.05, "stable_freq": 0.5, "plastic_freq": 0.9,
                                                    "stable_alpha": 0.9, "plastic_alpha": 0.6}
        m = create_method(name, plugin=plugin, nf=4, buffer_size=12, minibatch=8, **kw)
        r = train_continual(m, bench, epochs=2, batch_size=16, seed=3)
        digest = hashlib.sha256()
        for key, t in _tensors(m.state_dict()):
            digest.update(key.encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        params = [p.detach().double() for p in m.eval_net.parameters()]
        with torch.no_grad():
            logits = torch.cat([m.eval_net.eval()(x) for x, _ in bench.test])
        return {"logits": float(logits.sum()), "logits_abs": float(logits.abs().sum()),
                "cil": r["cil_matrix"][1], "til": r["til_matrix"][1],
                "sum": float(sum(p.sum() for p in params)), "sumsq": float(sum((p * p).sum() for p in params)),
                "sha": digest.hexdigest()[:16], "fingerprint": _fingerprint()}
    finally:
        torch.set_default_dtype(default)
        torch.set_num_threads(threads)


# Recorded with the pre-split code (core.py at commit 0c54b12) on the fingerprint it names; do not regenerate them
# with the code under test.
_RECORDED = json.loads(Path(__file__).with_name("clfreq_reference_runs.json").read_text())
RECORDED_ON, RECORDED = _RECORDED["recorded_on"], _RECORDED["runs"]


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("name", METHODS)
def test_short_run_reproduces_the_pre_split_code(name, plugin):
    ref = RECORDED[f"{name}/{plugin}"]
    got = run_reference(name, plugin)
    assert got["cil"] == ref["cil"] and got["til"] == ref["til"], (got, ref)
    assert got["sum"] == pytest.approx(ref["sum"], rel=1e-9, abs=1e-12)
    assert got["sumsq"] == pytest.approx(ref["sumsq"], rel=1e-9)
    assert abs(got["logits"] - ref["logits"]) <= 1e-9 * ref["logits_abs"]
    assert got["logits_abs"] == pytest.approx(ref["logits_abs"], rel=1e-9)
    if got["fingerprint"] == RECORDED_ON:
        assert got["sha"] == ref["sha"]


if __name__ == "__main__":  # prints the recorded runs as JSON (run on the pre-split code only)
    out = {f"{n}/{p}": run_reference(n, p) for n in METHODS for p in PLUGINS}
    runs = {k: {f: v for f, v in r.items() if f != "fingerprint"} for k, r in out.items()}
    print(json.dumps({"recorded_on": _fingerprint(), "runs": runs}, indent=1))

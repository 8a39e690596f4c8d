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
import platform

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


# Recorded with the pre-split code (core.py at commit 0c54b12) on the fingerprint below; do not regenerate them with
# the code under test.
RECORDED_ON = '2.14.1+cu130|x86_64|AVX512|AMD EPYC'
RECORDED: dict = {
    'er/None': {'cil': [0.0, 0.5], 'til': [0.9666666666666667, 0.5],
        'sum': 301.65464522257844, 'sumsq': 408.19672531610314,
        'logits': 15.881163140227251, 'logits_abs': 22.688740912951925, 'sha': 'ac3a4ee5694040a3'},
    'er/clfd': {'cil': [0.6666666666666666, 0.3], 'til': [0.8, 0.6],
        'sum': 303.79537858053584, 'sumsq': 414.69411927500244,
        'logits': 6.940847283653481, 'logits_abs': 108.85955776808271, 'sha': '762df83971bb9ce6'},
    'er/fdinet': {'cil': [0.43333333333333335, 0.0], 'til': [0.43333333333333335, 0.5],
        'sum': 302.3760859772694, 'sumsq': 414.5449163982598,
        'logits': 9.199621719426986, 'logits_abs': 19.502232442733735, 'sha': 'c587704439cbf589'},
    'der++/None': {'cil': [0.3333333333333333, 0.7333333333333333], 'til': [0.9333333333333333, 0.8],
        'sum': 286.3894106832608, 'sumsq': 414.34423174051636,
        'logits': -11.721611104138415, 'logits_abs': 125.11913500803547, 'sha': 'c2888a305446e31d'},
    'der++/clfd': {'cil': [0.0, 0.8], 'til': [0.5666666666666667, 0.8],
        'sum': 299.6454591574253, 'sumsq': 408.42869053422226,
        'logits': 5.567773687941083, 'logits_abs': 61.436429178543264, 'sha': '12341bdbecab53e9'},
    'der++/fdinet': {'cil': [0.0, 0.7333333333333333], 'til': [0.8, 0.7333333333333333],
        'sum': 302.2623729784626, 'sumsq': 415.9845979536143,
        'logits': 1.5902986492662254, 'logits_abs': 24.681896624377778, 'sha': 'd9c5853c9491b962'},
    'er-ace/None': {'cil': [0.5333333333333333, 0.06666666666666667], 'til': [0.6333333333333333, 0.8],
        'sum': 288.70869144570315, 'sumsq': 413.5311913074801,
        'logits': 24.12022693669487, 'logits_abs': 72.11807806740018, 'sha': 'ab78ea678fd05d25'},
    'er-ace/clfd': {'cil': [0.43333333333333335, 0.0], 'til': [0.43333333333333335, 0.8333333333333334],
        'sum': 295.6241462582217, 'sumsq': 409.85322161188986,
        'logits': 4.687953074901859, 'logits_abs': 85.34165664923616, 'sha': '6b8628ce3a2a5ed7'},
    'er-ace/fdinet': {'cil': [0.43333333333333335, 0.0], 'til': [0.43333333333333335, 0.5],
        'sum': 304.00363049520905, 'sumsq': 421.4786364536391,
        'logits': -3.2826700599930003, 'logits_abs': 51.9587530819415, 'sha': '046b1bdaf2fe0d46'},
    'cls-er/None': {'cil': [0.5666666666666667, 0.0], 'til': [0.5666666666666667, 0.43333333333333335],
        'sum': 297.1609757285943, 'sumsq': 403.41637300954966,
        'logits': 10.899185518312756, 'logits_abs': 16.641696714064025, 'sha': '685cbc0df345488f'},
    'cls-er/clfd': {'cil': [0.43333333333333335, 0.13333333333333333], 'til': [0.43333333333333335, 0.5],
        'sum': 300.2522955871317, 'sumsq': 403.7531968074549,
        'logits': 23.64966998939112, 'logits_abs': 33.720047394547265, 'sha': '7c8f40887969e513'},
    'cls-er/fdinet': {'cil': [0.43333333333333335, 0.0], 'til': [0.43333333333333335, 0.5],
        'sum': 301.4324536108761, 'sumsq': 413.24706640996646,
        'logits': 8.359163040810856, 'logits_abs': 21.544779801018, 'sha': '22237aeee3616940'},
}


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


if __name__ == "__main__":  # prints the constants (run on the pre-split code only)
    out = {f"{n}/{p}": run_reference(n, p) for n in METHODS for p in PLUGINS}
    print(f"RECORDED_ON = {_fingerprint()!r}")
    for k, v in out.items():
        print(f"    {k!r}: {{'cil': {v['cil']!r}, 'til': {v['til']!r},\n"
              f"        'sum': {v['sum']!r}, 'sumsq': {v['sumsq']!r},\n"
              f"        'logits': {v['logits']!r}, 'logits_abs': {v['logits_abs']!r}, 'sha': {v['sha']!r}}},")

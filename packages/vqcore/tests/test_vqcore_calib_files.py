"""Calibration files: safetensors + JSON structure round trip, legacy torch files read with weights_only=True, and a
file whose unpickling would run code refused (API and ``vqcore quantize --calib``) with nothing executed."""

import importlib.util
import os
import shlex
from pathlib import Path

import pytest
import torch

from vqcore.calib import CalibItem, CalibrationSet, Capture, load_calibration, save_calibration

_spec = importlib.util.spec_from_file_location("vq_quant_tests_f", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox = _mod.tiny_cogvideox


class _Exploit:
    """Unpickling this runs ``os.system("touch <marker>")``: a hostile calibration file (harmless here)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(1, 3, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(1, 4, 16, generator=g), timestep=torch.tensor([500]))


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, CalibItem):
        return all(_same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


def test_capture_result_round_trips_through_safetensors(tmp_path):
    model = tiny_cogvideox()
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        model(**_inputs(0))
    path = save_calibration(cap.result, tmp_path / "calib.safetensors")
    back = load_calibration(path)
    assert isinstance(back, CalibrationSet) and back.names() == cap.result.names()
    for name in back.names():
        assert all(_same(a, b) for a, b in zip(cap.result[name], back[name], strict=True))
    plain = [_inputs(1), torch.randn(2, 3, dtype=torch.bfloat16), (torch.ones(2), 3, None, "x")]
    save_calibration(plain, tmp_path / "plain.safetensors")
    assert _same(load_calibration(tmp_path / "plain.safetensors"), plain)
    with pytest.raises(TypeError, match="cannot store a object"):
        save_calibration([object()], tmp_path / "bad.safetensors")


def test_torch_files_load_without_running_code(tmp_path):
    model = tiny_cogvideox()
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        model(**_inputs(0))
    torch.save(cap.result, tmp_path / "set.pt")  # legacy format: the two calibration classes are allow-listed
    assert isinstance(load_calibration(tmp_path / "set.pt"), CalibrationSet)
    marker = tmp_path / "code-ran"
    torch.save([_inputs(), _Exploit(marker)], tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"posix\.system|os\.system|nt\.system") as err:
        load_calibration(tmp_path / "evil.pt")
    assert "refusing to unpickle" in str(err.value) and not marker.exists()
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_calibration(tmp_path / "garbage.pt")
    (tmp_path / "trunc.safetensors").write_bytes(_valid_file_bytes(tmp_path)[:40])
    with pytest.raises(ValueError, match="trunc.safetensors"):
        load_calibration(tmp_path / "trunc.safetensors")


def _valid_file_bytes(tmp_path):
    save_calibration([_inputs()], tmp_path / "ok.safetensors")
    return (tmp_path / "ok.safetensors").read_bytes()


def test_cli_refuses_a_calibration_file_that_would_run_code(tmp_path, capsys):
    from vqcore.cli import main

    tiny_cogvideox().save_pretrained(tmp_path / "fp")
    marker = tmp_path / "code-ran"
    torch.save([_inputs(), _Exploit(marker)], tmp_path / "calib.pt")
    with pytest.raises(SystemExit, match=r"^--calib: .*refusing to unpickle"):
        main(["quantize", "--model", str(tmp_path / "fp"), "--class", "CogVideoXTransformer3DModel", "--calib",
              str(tmp_path / "calib.pt"), "--out", str(tmp_path / "q")])
    assert not marker.exists() and not (tmp_path / "q").exists()
    save_calibration([_inputs(0), _inputs(1)], tmp_path / "calib.safetensors")
    assert main(["quantize", "--model", str(tmp_path / "fp"), "--class", "CogVideoXTransformer3DModel", "--calib",
                 str(tmp_path / "calib.safetensors"), "--method", "rtn", "--w-bits", "4", "--out",
                 str(tmp_path / "q")]) == 0
    assert "2 calibration items" in capsys.readouterr().out

"""Every failure a user can cause through the CLI prints one line naming the problem and exits non-zero; ``-v``
shows the traceback. Each case runs through ``vqcore.cli.main``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from vqcore.cli import main

_spec = importlib.util.spec_from_file_location("vq_quant_tests_cli", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox, tiny_unet = _mod.tiny_cogvideox, _mod.tiny_unet
COG = "CogVideoXTransformer3DModel"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A saved tiny CogVideoX, a saved tiny UNet and an rtn checkpoint of the CogVideoX."""
    root = tmp_path_factory.mktemp("cli")
    tiny_cogvideox().save_pretrained(root / "cog")
    tiny_unet().save_pretrained(root / "unet")
    assert main(["quantize", "--model", str(root / "cog"), "--class", COG, "--method", "rtn",
                 "--out", str(root / "q")]) == 0
    return root


def _one_line_exit(argv: list[str], pattern: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    msg = exc.value.code
    assert isinstance(msg, str) and msg and "\n" not in msg and "Traceback" not in msg, msg  # non-zero: a message
    assert pattern in msg, msg
    return msg


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_optional_dependency(dirs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` raises ImportError
    msg = _one_line_exit(["quantize", "--model", str(dirs / "cog"), "--class", COG, "--out", str(tmp_path / "q")],
                         "needs the optional dependency diffusers")
    assert "pip install diffusers" in msg


def test_unknown_zoo_name_and_model_class(dirs, tmp_path):
    _one_line_exit(["quantize", "--model", "zoo:no-such-model", "--out", str(tmp_path / "q")], "no-such-model")
    _one_line_exit(["quantize", "--model", str(dirs / "cog"), "--class", "NoSuchModel", "--out", str(tmp_path / "q")],
                   "--class: diffusers has no model class 'NoSuchModel'")


def test_corrupt_model_directory(dirs, tmp_path):
    bad = _copy(dirs / "cog", tmp_path / "bad-weights")
    weights = next(bad.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    _one_line_exit(["quantize", "--model", str(bad), "--class", COG, "--out", str(tmp_path / "q")],
                   f"--model: could not load a {COG} from {bad}")
    bad_cfg = _copy(dirs / "cog", tmp_path / "bad-config")
    (bad_cfg / "config.json").write_text('{"_class_name": "CogVideoX')  # truncated JSON
    _one_line_exit(["quantize", "--model", str(bad_cfg), "--class", COG, "--out", str(tmp_path / "q")],
                   "--model: could not load")
    assert not (tmp_path / "q").exists()


def test_garbage_and_missing_calibration_files(dirs, tmp_path):
    (tmp_path / "calib.pt").write_text("these are not tensors\n")
    base = ["quantize", "--model", str(dirs / "cog"), "--class", COG, "--out", str(tmp_path / "q")]
    _one_line_exit(base + ["--calib", str(tmp_path / "calib.pt")], "--calib: calibration file")
    (tmp_path / "calib.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    _one_line_exit(base + ["--calib", str(tmp_path / "calib.safetensors")], "--calib: calibration file")
    _one_line_exit(base + ["--calib", str(tmp_path / "none.pt")], "--calib")
    assert not (tmp_path / "q").exists()


def test_missing_corrupt_and_mismatched_checkpoints(dirs, tmp_path):
    conv = ["--model", str(dirs / "cog"), "--class", COG, "--out", str(tmp_path / "int")]
    _one_line_exit(["convert", str(tmp_path / "nothing")] + conv, "is not a vqcore quantized checkpoint")
    bad = _copy(dirs / "q", tmp_path / "q-trunc")
    (bad / "model.safetensors").write_bytes((bad / "model.safetensors").read_bytes()[:64])
    _one_line_exit(["convert", str(bad)] + conv, "vqcore convert:")
    bad_cfg = _copy(dirs / "q", tmp_path / "q-cfg")
    (bad_cfg / "config.json").write_text("{")
    _one_line_exit(["convert", str(bad_cfg)] + conv, "not valid JSON")
    _one_line_exit(["convert", str(dirs / "q"), "--model", str(dirs / "unet"), "--class", "UNet2DModel", "--out",
                    str(tmp_path / "int")], f"checkpoint was made from a {COG}, got a UNet2DModel")
    assert not (tmp_path / "int").exists()


def test_verbose_shows_the_traceback(dirs, tmp_path):
    with pytest.raises(ValueError, match="UNet2DModel"):
        main(["-v", "convert", str(dirs / "q"), "--model", str(dirs / "unet"), "--class", "UNet2DModel", "--out",
              str(tmp_path / "int")])
    assert main(["convert", str(dirs / "q")] + ["--model", str(dirs / "cog"), "--class", COG, "--out",
                                                 str(tmp_path / "int")]) == 0  # and the good case works

"""Method options as config dataclasses (issue 26 item 3): ``quantize(..., options=Config(...))``, a dict and the
keyword API give the same model; bad options fail with one line naming the argument before any work; ``save``
records the options; every built-in method declares a validated config and is registered by importing
``vqcore.methods``."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import vqcore
from vqcore.methods import METHODS, MethodConfig, get_method
from vqcore.methods.baselines import ViDiTQConfig
from vqcore.methods.mpqdm import MPQDMConfig
from vqcore.methods.qvdit import QVDiTConfig
from vqcore.methods.s2q import S2QConfig

_spec = importlib.util.spec_from_file_location("vq_quant_tests", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox = _mod.tiny_cogvideox


def _inputs(seed=0, t=500):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(2, 3, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 4, 16, generator=g), timestep=torch.full((2,), t))  # fmt: skip


def test_every_builtin_method_is_registered_with_a_config():
    assert {"rtn", "vidit-q", "q-diffusion", "q-vdit", "s2q-vdit", "mpq-dm"} <= set(METHODS)
    for name in METHODS:
        cfg_cls = get_method(name).Config
        assert issubclass(cfg_cls, MethodConfig) and dataclasses.is_dataclass(cfg_cls)
        cfg_cls()  # the defaults are valid
    assert get_method("q-vdit").option_names() == {f.name for f in dataclasses.fields(QVDiTConfig)}


def test_options_object_dict_and_keywords_give_the_same_model(tmp_path):
    model = tiny_cogvideox()
    calib = [_inputs(seed=i, t=t) for i, t in enumerate((900, 100))]
    by_obj = vqcore.quantize(model, "vidit-q", w_bits=4, calib=calib, options=ViDiTQConfig(alpha=0.3))
    by_dict = vqcore.quantize(model, "vidit-q", w_bits=4, calib=calib, options={"alpha": 0.3})
    by_kw = vqcore.quantize(model, "vidit-q", w_bits=4, calib=calib, alpha=0.3)
    mixed = vqcore.quantize(model, "vidit-q", w_bits=4, calib=calib, options={"alpha": 0.9}, alpha=0.3)  # kw wins
    ref = by_kw.state_dict()
    for q in (by_obj, by_dict, mixed):
        assert q.vqcore_report.details["smoothing_alpha"] == 0.3
        assert all(torch.equal(v, ref[k]) for k, v in q.state_dict().items())
    assert by_obj.vqcore_meta["options"] == {"alpha": 0.3, "timeranges": None, "act_momentum": None}
    vqcore.save(by_obj, tmp_path / "q")
    saved = json.loads((tmp_path / "q" / "config.json").read_text())
    assert saved["options"] == by_obj.vqcore_meta["options"]
    fresh = tiny_cogvideox()
    fresh.load_state_dict(model.state_dict())
    assert vqcore.load(tmp_path / "q", fresh).vqcore_meta["options"]["alpha"] == 0.3


@pytest.mark.parametrize(
    ("method", "options", "error", "match"),
    [
        ("q-vdit", {"iters": -1}, ValueError, r"^iters must be a non-negative int or None, got -1$"),
        ("q-vdit", {"layout": "bchw"}, ValueError, r"^layout must be one of"),
        ("q-vdit", {"iterz": 3}, TypeError, r"^method 'q-vdit' got unknown options \['iterz'\]; it accepts"),
        ("s2q-vdit", {"keep": 0.0}, ValueError, r"^keep must be in \(0, 1\], got 0.0$"),
        ("s2q-vdit", {"distill": "dense"}, ValueError, r"^distill must be one of"),
        ("mpq-dm", {"lr_scale": "x"}, ValueError, r"^lr_scale must be a number > 0 or 'budget'"),
        ("mpq-dm", {"checkpoint_every": 0}, ValueError, r"^checkpoint_every must be a positive int"),
        ("vidit-q", {"timeranges": [[0, 10]]}, ValueError, r"^timeranges must hold at least two"),
        ("q-diffusion", {"iters": 1.5}, ValueError, r"^iters must be a non-negative int \(per block\)"),
        ("rtn", {"alpha": 0.5}, TypeError, r"^method 'rtn' got unknown options \['alpha'\]; it accepts no options$"),
    ],
)
def test_bad_options_fail_early_with_one_line_naming_the_argument(method, options, error, match):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(error, match=match) as info:
        vqcore.quantize(model, method, calib=[torch.randn(2, 4)], options=options)
    assert "\n" not in str(info.value)
    assert not any(isinstance(m, vqcore.quant.QuantModule) for m in model.modules())  # nothing was touched


def test_options_of_another_method_or_type_are_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(TypeError, match="^options for method 'q-vdit' must be a QVDiTConfig or a dict, got S2QConfig$"):
        vqcore.quantize(model, "q-vdit", options=S2QConfig())
    with pytest.raises(TypeError, match="^options must be a QVDiTConfig, a dict or None, got list$"):
        vqcore.quantize(model, "q-vdit", options=[("iters", 3)])
    assert MPQDMConfig(lr_scale="budget").record()["lr_scale"] == "budget"
    assert MPQDMConfig(scheduler=object()).record()["scheduler"] == "<object>"  # objects recorded by type only

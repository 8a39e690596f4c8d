"""Expert recipes: pickle-free export of SB3 actors, the ``file:`` / ``shipped`` loaders, the lean TD3 tool."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from c2l import make_env, make_expert

TOOL = Path(__file__).resolve().parents[3] / "tools" / "c2l_expert_td3.py"


@pytest.mark.parametrize("algo,env", [("TD3", "pendulum"), ("SAC", "pendulum"), ("PPO", "lunarlander")])
def test_exported_actor_reproduces_sb3_deterministic_actions(tmp_path, algo, env):
    """The exported weights + JSON give SB3's deterministic action (tanh-scaled for TD3/SAC, clipped mean for PPO)
    on observations spread over the space, to float32 rounding; the loader needs neither SB3 nor a pickle."""
    sb3 = pytest.importorskip("stable_baselines3", reason="SB3 experts need the optional 'sb3' extra")
    from c2l.experts import export_actor

    model = getattr(sb3, algo)("MlpPolicy", make_env(env), seed=3, device="cpu",
                               **({"policy_kwargs": {"net_arch": [32, 32]}} if algo == "PPO" else {}))
    if algo == "PPO":  # SB3's init (gain 0.01) gives a near-zero mean: spread it so that clipping is exercised
        import torch

        torch.manual_seed(0)
        model.policy.action_net.weight.data.normal_(0.0, 1.0)
    export_actor(model, tmp_path / f"{env}_{algo}", {"note": "test"})
    expert = make_expert(env, f"file:{tmp_path / f'{env}_{algo}.safetensors'}")
    obs = np.random.default_rng(0).normal(0.0, 2.0, (64, make_env(env).observation_space.shape[0]))
    ref = model.predict(obs.astype(np.float32), deterministic=True)[0]
    # float32 network vs float64 re-evaluation: a few float32 ulps of outputs of order 1
    np.testing.assert_allclose(expert(obs), ref, atol=1e-5)
    np.testing.assert_allclose(expert(obs[0]), ref[0], atol=1e-5)
    if algo == "PPO":
        assert np.any(np.abs(ref) == 1.0), "clipping branch not exercised"
    assert json.loads((tmp_path / f"{env}_{algo}.json").read_text())["note"] == "test"


def test_file_and_shipped_experts_refuse_bad_input(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3", reason="SB3 experts need the optional 'sb3' extra")
    from stable_baselines3 import TD3

    import c2l.experts as ex

    with pytest.raises(FileNotFoundError, match="needs"):
        make_expert("pendulum", f"file:{tmp_path / 'missing.safetensors'}")
    ex.export_actor(TD3("MlpPolicy", make_env("pendulum"), device="cpu"), tmp_path / "pendulum_TD3")
    with pytest.raises(ValueError, match="3-D observations"):  # a pendulum actor for a MuJoCo env
        make_expert("halfcheetah", f"file:{tmp_path / 'pendulum_TD3.safetensors'}")
    meta = json.loads((tmp_path / "pendulum_TD3.json").read_text())
    (tmp_path / "pendulum_TD3.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(ValueError, match="not a c2l exported actor"):
        make_expert("pendulum", f"file:{tmp_path / 'pendulum_TD3.safetensors'}")
    (tmp_path / "pendulum_TD3.json").write_text(json.dumps(meta))
    # "shipped" looks in the package's experts_data folder
    monkeypatch.setattr(ex, "_PKG_EXPERTS", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="python -m c2l.experts --env pendulum"):
        make_expert("pendulum", "shipped")
    monkeypatch.setattr(ex, "_PKG_EXPERTS", tmp_path)
    assert make_expert("pendulum", "shipped")(np.zeros(3)).shape == (1,)


def test_shipped_halfcheetah_expert_card_is_consistent():
    """The shipped HalfCheetah expert (committed in c2l/experts_data/, so a missing one is a packaging error, not a
    skip): its card states the recipe, the steps run and a return, and the weights load for the 17-D observation; a
    deterministic action is in the action bounds."""
    from c2l.experts import ExportedActor, shipped_expert_path

    path = shipped_expert_path("halfcheetah")
    assert path is not None, "c2l/experts_data/halfcheetah_TD3.{safetensors,json} is missing from the package"
    actor = ExportedActor(path)
    assert actor.obs_dim == 17 and actor.act_dim == 6
    assert actor.meta["steps_run"] > 0 and np.isfinite(actor.meta["return_mean"]) and actor.meta["recipe"]
    a = actor(np.zeros(17))
    assert a.shape == (6,) and np.all(np.abs(a) <= 1.0)


@pytest.mark.skipif(not TOOL.is_file(), reason="tools/ is not part of an installed package")
def test_lean_td3_tool_trains_exports_and_keeps_the_best_actor(tmp_path):
    """tools/c2l_expert_td3.py at a tiny CPU budget: random actions until learning_starts, updates afterwards,
    evaluation curve, best-of-evaluations kept, files loadable through make_expert('file:...')."""
    spec = importlib.util.spec_from_file_location("c2l_expert_td3", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--env", "pendulum", "--max-steps", "600", "--learning-starts", "200", "--train-freq", "200",
                      "--gradient-steps", "20", "--net", "16", "16", "--eval-every", "400", "--eval-episodes", "1",
                      "--threads", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "pendulum_TD3.json").read_text())
    assert card["steps_run"] == 600 and card["hyper_parameters"]["net"] == [16, 16]
    steps = [s for s, _, _ in card["eval_curve"]]
    assert steps == [400, 600]  # the periodic evaluation, then the final weights
    best = max(r for _, r, _ in card["eval_curve"])
    kept = [r for s, r, _ in card["eval_curve"] if s == card["kept_weights_of_step"]]
    assert best in kept
    expert = make_expert("pendulum", f"file:{tmp_path / 'pendulum_TD3.safetensors'}")
    assert expert(np.zeros((5, 3))).shape == (5, 1)

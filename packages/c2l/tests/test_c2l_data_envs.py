"""Confounding model, datasets (npz round trip), environments, simulator resets, CLI."""

import numpy as np
import pytest

from c2l import (
    ConfoundingConfig,
    ConfoundingNoise,
    Simulator,
    Trajectory,
    TrajectoryDataset,
    evaluate_return,
    generate_dataset,
    make_env,
    make_expert,
)
from c2l.cli import main as cli_main


def _noise_series(cfg, n=20000, seed=0):
    noise = ConfoundingNoise(cfg, np.random.default_rng(seed))
    return np.array([noise.apply(np.zeros(1))[0] for _ in range(n)])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_additive_noise_is_correlated_over_exactly_k_steps(k):
    e = _noise_series(ConfoundingConfig(k=k, sigma=1.0))
    ac = [np.corrcoef(e[:-lag], e[lag:])[0, 1] for lag in range(1, 7)]
    for lag in range(1, 7):
        expected = max(k - lag, 0) / k  # MA(k-1) with equal weights
        assert abs(ac[lag - 1] - expected) < 0.04, (k, lag, ac)
    assert np.std(e) == pytest.approx(np.sqrt(k), rel=0.05)


def test_multiplicative_noise_follows_the_official_window_model():
    cfg = ConfoundingConfig(k=3, sigma=5.0, kind="multiplicative", window=10, window_start_max=5)
    noise = ConfoundingNoise(cfg, np.random.default_rng(0))
    out = np.array([noise.apply(np.ones(2))[0] for _ in range(30)])
    start = noise.window_start
    assert np.all(out[:start] == 1.0) and np.all(out[start + 10:] == 1.0)  # clean outside the window
    assert np.all(out[start:start + 2] == 0.0)  # zero noise history at the window start (official behaviour)
    assert np.all(out[start + 2:start + 10] != 1.0)


def test_multiplicative_default_is_the_official_random_100_step_window():
    cfg = ConfoundingConfig(k=3, sigma=5.0, kind="multiplicative")
    assert cfg.window == 100 and ConfoundingConfig(k=3).window is None  # additive: every step noisy
    assert ConfoundingConfig(k=3, kind="multiplicative", window=None).window is None  # explicit choice only
    noise = ConfoundingNoise(cfg, np.random.default_rng(1))
    starts = []
    for _ in range(30):
        noise.reset()
        out = np.array([noise.apply(np.ones(1))[0] for _ in range(260)])
        s = noise.window_start
        starts.append(s)
        assert np.all(out[:s] == 1.0) and np.all(out[s + 100:] == 1.0) and np.all(out[s + 2:s + 100] != 1.0)
    assert min(starts) >= 0 and max(starts) < 100 and len(set(starts)) > 10


def test_confounding_config_validation_and_round_trip():
    cfg = ConfoundingConfig(k=2, sigma=0.5, weights=(0.1, 8.0))
    assert ConfoundingConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.valid_lag == 1 and ConfoundingConfig(k=4).valid_lag == 3
    for bad in ({"k": 0}, {"sigma": -1}, {"kind": "mult"}, {"distribution": "cauchy"}, {"k": 2, "weights": (1,)},
                {"window": 0}):
        with pytest.raises(ValueError):
            ConfoundingConfig(**bad)
    with pytest.raises(TypeError, match="ConfoundingConfig"):
        ConfoundingNoise({"k": 2})


def test_dataset_save_load_round_trip(tmp_path):
    ds = generate_dataset("linear", 3, ConfoundingConfig(k=3, sigma=1.0), seed=5, max_steps=40)
    assert ds.has_expert_labels and ds.num_steps == 120 and ds.obs_dim == 2 and ds.act_dim == 1
    path = ds.save(tmp_path / "d.npz")
    back = TrajectoryDataset.load(path)
    assert len(back) == 3 and back.metadata["confounding"]["k"] == 3 and back.metadata["env"] == "linear"
    for a, b in zip(ds, back):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.acts, b.acts)
        np.testing.assert_array_equal(a.expert_acts, b.expert_acts)
        np.testing.assert_array_equal(a.rews, b.rews)
        np.testing.assert_array_equal(a.final_obs, b.final_obs)
    # the recorded actions are confounded: they differ from the clean expert labels
    assert np.mean(np.abs(ds[0].acts - ds[0].expert_acts)) > 0.3
    x, u, z = ds.lagged_arrays(2)
    assert len(x) == len(u) == len(z) == 3 * 38
    np.testing.assert_array_equal(z[2], x[0])
    assert ds[0].to_imitation_dict()["obs"].shape == (41, 2)


def test_dataset_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        Trajectory(np.zeros((5, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="at least one trajectory"):
        TrajectoryDataset([])
    with pytest.raises(ValueError, match="dims"):
        TrajectoryDataset([Trajectory(np.zeros((3, 2)), np.zeros((3, 1))),
                           Trajectory(np.zeros((3, 3)), np.zeros((3, 1)))])
    with pytest.raises(ValueError, match=".npz"):
        TrajectoryDataset([Trajectory(np.zeros((3, 2)), np.zeros((3, 1)))]).save(tmp_path / "d.pkl")
    with pytest.raises(FileNotFoundError):
        TrajectoryDataset.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a c2l trajectory file"):
        TrajectoryDataset.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="n_trajectories"):
        generate_dataset("linear", 0)
    with pytest.raises(ValueError, match="env must be one of"):
        make_env("cartpole")
    with pytest.raises(ValueError, match="heuristic expert"):
        make_expert("linear", "heuristic")


def _step_match(name, n_checks=5, tol=1e-6):
    env = make_env(name)
    sim = Simulator(name, seed=1)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(n_checks):
        a = rng.uniform(env.action_space.low, env.action_space.high)
        nxt, *_ = env.step(a.astype(env.action_space.dtype))
        pred, _ = sim.step_from(obs, a)
        errs.append(np.max(np.abs(pred - nxt)))
        obs = nxt
    return max(errs)


def test_simulator_reset_is_exact_for_pendulum_and_mujoco():
    assert _step_match("pendulum") < 1e-5
    pytest.importorskip("mujoco", reason="MuJoCo envs need the optional 'mujoco' extra")
    assert _step_match("halfcheetah") < 1e-8
    assert _step_match("ant") < 1e-8


def test_lunarlander_expert_and_simulator_reset():
    pytest.importorskip("Box2D", reason="LunarLander needs the optional 'box2d' extra")
    ds = generate_dataset("lunarlander", 2, None, seed=0)
    assert min(t.ret for t in ds) > 100  # the heuristic expert lands
    # resetting the simulator at a recorded state and replaying the action reproduces the next state closely
    sim = Simulator("lunarlander")
    t = ds[0]
    errs = [np.max(np.abs(sim.step_from(t.obs[i], t.acts[i])[0][:6] - t.obs[i + 1][:6])) for i in range(0, 60, 6)]
    assert max(errs) < 0.1, errs


def test_evaluate_return_clean_vs_noisy():
    expert = make_expert("linear")
    clean = evaluate_return(expert, "linear", n_episodes=3, max_steps=50)
    noisy = evaluate_return(expert, "linear", n_episodes=3, max_steps=50, confounding=ConfoundingConfig(k=3, sigma=1.0))
    assert clean["mean"] > noisy["mean"] and len(clean["returns"]) == 3


def test_cli_generate_identify_train_eval(tmp_path, capsys):
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    assert cli_main(["generate", "--env", "linear", "--n", "4", "--k", "3", "--sigma", "1", "--max-steps", "80",
                     "--out", str(train), "--no-progress"]) == 0
    assert cli_main(["generate", "--env", "linear", "--n", "2", "--sigma", "0", "--max-steps", "80",
                     "--out", str(test), "--no-progress"]) == 0
    iv = tmp_path / "iv.json"
    assert cli_main(["identify", str(train), "--max-lag", "4", "--nullsims", "100", "--out", str(iv),
                     "--no-progress"]) == 0
    assert "identified lag" in capsys.readouterr().out
    for learner in ("bc", "c2l_star", "c2l"):
        out = tmp_path / learner
        assert cli_main(["train", str(train), "--learner", learner, "--iv", str(iv), "--steps", "50",
                         "--checkpoint", str(tmp_path / f"{learner}.pt"), "--checkpoint-every", "20",
                         "--out", str(out), "--no-progress"]) == 0
        assert (tmp_path / f"{learner}.pt").is_file()
        assert (out / "model.safetensors").is_file()
    assert cli_main(["eval", str(tmp_path / "c2l"), "--test", str(test), "--env", "linear", "--episodes", "2",
                     "--max-steps", "50", "--sigma", "1", "--out", str(tmp_path / "ev.json")]) == 0
    text = capsys.readouterr().out
    assert "action_error[test.npz]" in text and "return_noisy" in text
    # C2L without an identified lag is refused with a clear message
    assert cli_main(["train", str(train), "--learner", "c2l", "--steps", "5", "--out", str(tmp_path / "x"),
                     "--no-progress"]) == 2
    assert "--hop" in capsys.readouterr().err


def test_cli_reports_bad_input(tmp_path, capsys):
    assert cli_main(["identify", str(tmp_path / "missing.npz"), "--no-progress"]) == 2
    assert "error" in capsys.readouterr().err


def test_smoke_runs():
    from c2l.smoke import main

    main()


def test_sb3_expert_is_trained_once_cached_and_loaded(tmp_path):
    pytest.importorskip("stable_baselines3", reason="SB3 experts need the optional 'sb3' extra")
    spec = "sb3-train:SAC:150"
    expert = make_expert("pendulum", spec, seed=0, cache_dir=tmp_path)
    cached = tmp_path / "pendulum_SAC_150_seed0.zip"
    assert cached.is_file()
    obs = np.array([1.0, 0.0, 0.5])
    a = expert(obs)
    assert a.shape == (1,) and np.all(np.abs(a) <= 2.0)
    again = make_expert("pendulum", spec, seed=0, cache_dir=tmp_path)  # loaded from the cache, same weights
    np.testing.assert_allclose(again(obs), a, rtol=1e-5)
    loaded = make_expert("pendulum", f"sb3:{cached}")
    np.testing.assert_allclose(loaded(np.stack([obs, obs])), np.stack([a, a]), rtol=1e-5)
    ds = generate_dataset("pendulum", 1, ConfoundingConfig(k=2, sigma=0.5), expert=loaded, max_steps=20)
    assert len(ds[0]) == 20 and ds.has_expert_labels
    with pytest.raises(ValueError, match="sb3-train"):
        make_expert("pendulum", "sb3-train:SAC")


def test_sb3_loader_names_why_each_algorithm_failed(tmp_path):
    pytest.importorskip("stable_baselines3", reason="SB3 experts need the optional 'sb3' extra")
    bad = tmp_path / "not_a_model.zip"
    bad.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip archive: no SB3 data inside
    with pytest.raises(ValueError) as info:
        make_expert("pendulum", f"sb3:{bad}")
    msg = str(info.value)
    assert all(f"{algo}: " in msg for algo in ("SAC", "TD3", "PPO", "A2C", "DDPG")), msg
    with pytest.raises(FileNotFoundError, match="no SB3 model file"):
        make_expert("pendulum", f"sb3:{tmp_path / 'missing.zip'}")


@pytest.mark.slow
def test_expert_recipe_writes_model_and_card(tmp_path):
    """The zoo recipe end to end at a tiny budget (the real budget is the zoo's, see c2l.experts)."""
    pytest.importorskip("stable_baselines3", reason="SB3 experts need the optional 'sb3' extra")
    import json

    from c2l.experts import ZOO
    from c2l.experts import main as experts_main

    assert ZOO["halfcheetah"][:2] == ("SAC", 1_000_000) and ZOO["pendulum"][2] == {"learning_rate": 1e-3}
    assert experts_main(["--env", "pendulum", "--steps", "120", "--eval-episodes", "1", "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "pendulum_SAC_120_seed0.json").read_text())
    assert card["steps"] == 120 and card["sb3_kwargs"] == {"learning_rate": 1e-3} and np.isfinite(card["return_mean"])
    # the saved model is what make_expert's cache finds, and the exported actor acts like it
    expert = make_expert("pendulum", "sb3-train:SAC:120", seed=0, cache_dir=tmp_path)
    exported = make_expert("pendulum", f"file:{tmp_path / 'pendulum_SAC.safetensors'}")
    obs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -3.0]])
    np.testing.assert_allclose(exported(obs), expert(obs), atol=1e-5)
    assert json.loads((tmp_path / "pendulum_SAC.json").read_text())["steps_run"] == 120
    # wall-clock budget and best-of-evaluation: TD3 with an evaluation every 100 steps
    from c2l.experts import train_expert

    card = train_expert("pendulum", tmp_path, algo="TD3", steps=200, eval_episodes=1, eval_every=100,
                        eval_every_episodes=1)
    assert [s for s, _, _ in card["eval_curve"]] == [100, 200, 200] and card["steps_run"] == 200
    kept = [r for s, r, _ in card["eval_curve"] if s == card["kept_weights_of_step"]]
    assert max(r for _, r, _ in card["eval_curve"]) in kept

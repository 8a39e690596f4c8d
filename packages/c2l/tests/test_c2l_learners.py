"""Stage-2 learners on a small confounded synthetic problem (k=3 additive noise on the linear system)."""

import numpy as np
import pytest
import torch

from c2l import (
    BC,
    ConfoundingConfig,
    DoubleSamplingIV,
    OAdam,
    ResidualGameIV,
    action_error,
    create_learner,
    generate_dataset,
    load_policy,
)

CC = ConfoundingConfig(k=3, sigma=1.0)
STEPS = 1500
SMALL = {"steps": STEPS, "hidden": 64, "lr": 1e-3}


@pytest.fixture(scope="module")
def data():
    train = generate_dataset("linear", 12, CC, seed=0, max_steps=150)
    test = generate_dataset("linear", 6, CC, seed=123, max_steps=150)
    bc = BC(steps=STEPS, hidden=64, lr=1e-3, seed=0).fit(train)
    return train, test, bc


def test_bc_reduces_its_loss_and_is_biased_under_confounding(data):
    train, test, bc = data
    final = np.mean(bc.history[-200:])
    assert final < np.mean(bc.history[:3])
    # the optimum of the BC regression here is (close to) the least-squares fit: BC must reach it
    x = np.concatenate([t.obs for t in train])
    u = np.concatenate([t.acts for t in train])
    xb = np.concatenate([x, np.ones((len(x), 1))], 1)
    ols = np.mean((u - xb @ np.linalg.lstsq(xb, u, rcond=None)[0]) ** 2)
    assert final < 1.1 * ols, (final, ols)
    # the confounded BC solution differs clearly from the expert (this is the bias IV methods remove)
    assert action_error(bc, test, "mse") > 0.3


def test_c2l_star_offline_beats_bc(data):
    train, test, bc = data
    learner = create_learner("c2l_star", hop=2, init="bc", seed=0, **SMALL)
    learner.fit(train, pi_bc=bc)
    assert isinstance(learner, ResidualGameIV)
    e_bc, e_iv = action_error(bc, test, "mse"), action_error(learner, test, "mse")
    assert e_iv < 0.7 * e_bc, (e_iv, e_bc)


def test_c2l_simulator_beats_bc_and_loss_falls(data):
    train, test, bc = data
    learner = create_learner("c2l", hop=2, init="bc", seed=0, **SMALL)
    learner.fit(train, "linear", pi_bc=bc)
    assert isinstance(learner, DoubleSamplingIV)
    assert learner.sigma_used is not None and np.all(learner.sigma_used > 0)
    e_bc, e_iv = action_error(bc, test, "mse"), action_error(learner, test, "mse")
    assert e_iv < 0.7 * e_bc, (e_iv, e_bc)
    # double-sampling loss estimates E_z||E[pi(s)|z] - a||^2 (minus noise); it must go down from the BC start
    assert np.mean(learner.history[-200:]) < np.mean(learner.history[:50])


def test_fixed_lag_baselines_are_hop_one_and_validate():
    assert create_learner("doubil").config.hop == 1
    assert create_learner("residuil").config.hop == 1
    with pytest.raises(ValueError, match="hop=1"):
        create_learner("doubil", hop=2)
    with pytest.raises(ValueError, match="hop"):
        create_learner("c2l")
    with pytest.raises(ValueError, match="unknown learner"):
        create_learner("gial")
    with pytest.raises(ValueError, match="nsamp"):
        create_learner("c2l", hop=2, nsamp=3)
    with pytest.raises(ValueError, match="pairing"):
        create_learner("c2l", hop=2, pairing="bad")
    with pytest.raises(ValueError, match="steps"):
        create_learner("bc", steps=0)


def test_policy_is_sb3_compatible_and_round_trips(tmp_path, data):
    train, _, bc = data
    obs = train[0].obs
    act, state = bc.predict(obs[0], deterministic=True)
    assert act.shape == (1,) and state is None
    batch, _ = bc.predict(obs)
    assert batch.shape == (len(obs), 1)
    bc.save(tmp_path / "bc")
    loaded = load_policy(tmp_path / "bc")
    np.testing.assert_allclose(loaded.predict(obs)[0], batch, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="last dimension"):
        loaded.predict(np.zeros(5))


def test_unfitted_learner_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        BC().predict(np.zeros(2))


def test_simulator_argument_is_checked(data):
    train, _, bc = data
    with pytest.raises(TypeError, match="simulator"):
        create_learner("c2l", hop=2, steps=1).fit(train, object(), pi_bc=bc)
    with pytest.raises(ValueError, match="env must be one of"):
        create_learner("c2l", hop=2, steps=1).fit(train, "nope", pi_bc=bc)


def _bilinear_game(opt_cls, steps=2000, **kw):
    x = torch.nn.Parameter(torch.tensor([1.0]))
    y = torch.nn.Parameter(torch.tensor([1.0]))
    ox, oy = opt_cls([x], **kw), opt_cls([y], **kw)
    for _ in range(steps):
        ox.zero_grad()
        oy.zero_grad()
        (x * y).sum().backward()
        y.grad.neg_()  # y ascends
        ox.step()
        oy.step()
    return float(x.detach().norm()), float(y.detach().norm())


def test_oadam_converges_on_bilinear_game():
    """min_x max_y x*y: simultaneous plain gradient steps spiral out; optimistic steps converge to (0, 0)."""
    xo, yo = _bilinear_game(OAdam, lr=0.05, betas=(0.0, 0.01))
    assert xo < 0.2 and yo < 0.2
    xs, ys = _bilinear_game(torch.optim.SGD, lr=0.05)
    assert np.hypot(xs, ys) > np.sqrt(2)  # plain simultaneous gradient descent-ascent moves away from the solution


@pytest.mark.parametrize("name", ["bc", "c2l_star"])
def test_interrupted_training_resumes_to_the_same_result(tmp_path, data, name):
    train, test, _ = data
    kw = {"hidden": 32, "lr": 1e-3, "seed": 3}
    if name == "c2l_star":
        kw.update(hop=2, bc={"steps": 50, "hidden": 32})
    full = create_learner(name, steps=120, **kw).fit(train)
    ckpt = tmp_path / f"{name}.pt"
    create_learner(name, steps=70, **kw).fit(train, checkpoint=ckpt, checkpoint_every=25)  # "interrupted" at 70
    resumed = create_learner(name, steps=120, **kw).fit(train, checkpoint=ckpt, checkpoint_every=25)
    assert resumed.resumed_step == 70 and len(resumed.history) == 120  # state came from the checkpoint
    obs = test[0].obs
    np.testing.assert_allclose(resumed.predict(obs)[0], full.predict(obs)[0], rtol=1e-5, atol=1e-6)


def test_checkpoint_refuses_another_config_or_data_set(tmp_path, data):
    train, test, _ = data
    kw = {"hidden": 16, "lr": 1e-3, "seed": 0}
    ckpt = tmp_path / "bc.pt"
    create_learner("bc", steps=20, **kw).fit(train, checkpoint=ckpt, checkpoint_every=10)
    for change in ({"lr": 2e-3}, {"seed": 1}, {"hidden": 32}):
        with pytest.raises(ValueError, match="different config"):
            create_learner("bc", steps=30, **{**kw, **change}).fit(train, checkpoint=ckpt)
    with pytest.raises(ValueError, match="different data set"):
        create_learner("bc", steps=30, **kw).fit(test, checkpoint=ckpt)
    assert create_learner("bc", steps=30, **kw).fit(train, checkpoint=ckpt).resumed_step == 20  # more steps: fine


@pytest.mark.slow
def test_divergence_guard_stops_c2l_and_keeps_the_best_weights(caplog):
    """A large lag with a large step size blows C2L up (its double-sampling loss is unbounded below once the two
    simulated halves separate); the guard stops, warns and keeps the best weights. Same run unguarded for contrast."""
    train = generate_dataset("linear", 8, CC, seed=0, max_steps=120)
    test = generate_dataset("linear", 4, CC, seed=123, max_steps=120)
    bc = BC(steps=300, hidden=64, lr=1e-3, seed=0).fit(train)
    kw = {"hop": 8, "steps": 600, "hidden": 64, "lr": 1e-2, "init": "bc", "sigma": 3.0, "guard_every": 50}
    free = create_learner("c2l", divergence_factor=0.0, **kw).fit(train, "linear", pi_bc=bc)
    with caplog.at_level("WARNING", logger="c2l.learners"):
        guarded = create_learner("c2l", **kw).fit(train, "linear", pi_bc=bc)
    e_bc, e_free, e_guard = (action_error(p, test, "mse") for p in (bc, free, guarded))
    assert free.diverged_at is None and e_free > 100 * e_bc, (e_free, e_bc)  # it really diverges unguarded
    assert guarded.diverged_at is not None and guarded.best_step < guarded.diverged_at
    assert "diverged" in caplog.text and len(guarded.history) == guarded.diverged_at
    assert e_guard < 5 * e_bc, (e_guard, e_bc)


def test_baselines_default_to_swamy_optimiser_settings():
    d, r = create_learner("doubil").config, create_learner("residuil").config
    assert (d.lr, d.weight_decay, r.lr, r.weight_decay) == (3e-4, 1e-3, 5e-5, 1e-3)
    c, s = create_learner("c2l", hop=2).config, create_learner("c2l_star", hop=2).config
    assert (c.lr, c.weight_decay, s.lr, s.weight_decay) == (3e-5, 1e-4, 9e-6, 1e-3)
    assert create_learner("residuil", lr=1e-3).config.lr == 1e-3  # explicit values win


def test_gail_comes_from_imitation_lazily():
    """Without ``imitation`` the learner still constructs and fit raises one clear ImportError; with it, a short run
    on the linear system trains a PPO generator through imitation's GAIL."""
    gail = create_learner("gail", total_timesteps=1024, n_envs=2, ppo_n_steps=256, ppo_batch_size=64,
                          demo_batch_size=256, gen_replay_buffer_capacity=256, max_steps=64)
    data = generate_dataset("linear", 4, CC, seed=0, max_steps=64)
    try:
        import imitation  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"c2l\[gail\]"):
            gail.fit(data, "linear")
        return
    gail.fit(data, "linear")
    act, _ = gail.predict(data[0].obs)
    assert act.shape == (64, 1) and np.all(np.isfinite(act))
    assert gail.trainer.gen_algo.num_timesteps >= 1024
    with pytest.raises(ValueError, match="observations"):
        create_learner("gail", total_timesteps=8).fit(data, "pendulum")

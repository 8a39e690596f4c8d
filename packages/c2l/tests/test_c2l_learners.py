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
        create_learner("gail")
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
    # a different seed proves the state comes from the checkpoint (weights, optimiser, RNG), not from a fresh start
    resumed = create_learner(name, steps=120, **{**kw, "seed": 99}).fit(train, checkpoint=ckpt, checkpoint_every=25)
    assert len(resumed.history) == 120
    obs = test[0].obs
    np.testing.assert_allclose(resumed.predict(obs)[0], full.predict(obs)[0], rtol=1e-5, atol=1e-6)

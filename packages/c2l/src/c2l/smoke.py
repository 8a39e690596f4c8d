"""Tiny end-to-end run (< 30 s on CPU): confounded data → IV identification → BC, C2L, C2L* → evaluation."""

from __future__ import annotations

import numpy as np


def main() -> None:
    from . import BC, ConfoundingConfig, action_error, create_learner, generate_dataset, identify_iv

    cc = ConfoundingConfig(k=3, sigma=1.0)
    train = generate_dataset("linear", 6, cc, seed=0, max_steps=120)
    test = generate_dataset("linear", 3, cc, seed=1, max_steps=120)
    res = identify_iv(train, max_lag=5, num_nullsims=200, seed=0)
    if not 1 <= res.lag <= 6 or len(res.tests) != 6 * 5:
        raise RuntimeError(f"identify_iv returned an inconsistent result: lag {res.lag}, {len(res.tests)} tests")
    bc = BC(steps=300, hidden=32, lr=1e-3).fit(train)
    star = create_learner("c2l_star", hop=2, steps=300, hidden=32, lr=1e-3, init="bc").fit(train, pi_bc=bc)
    sim = create_learner("c2l", hop=2, steps=300, hidden=32, lr=1e-3, init="bc").fit(train, "linear", pi_bc=bc)
    errs = {n: action_error(p, test, "mse") for n, p in (("bc", bc), ("c2l_star", star), ("c2l", sim))}
    if not all(np.isfinite(v) for v in errs.values()):
        raise RuntimeError(f"non-finite action errors: {errs}")
    act, _ = star.predict(test[0].obs[0])
    if act.shape != (1,):
        raise RuntimeError(f"predict returned shape {act.shape}, expected (1,)")
    print(f"c2l smoke ok: identified lag {res.lag}; action MSE vs expert {errs}")


if __name__ == "__main__":
    main()

"""load_official: the official trajectory files (C2L .pkl, causal_il .npz) read with a restricted unpickler."""

import os
import pickle

import numpy as np
import pytest

from c2l import TrajectoryDataset, load_official
from c2l.cli import main as cli_main
from c2l.safe_pickle import restricted_loads


def _official_trajs(n=4, seed=0):
    """(states [T, 6], actions [T, 2]) float64 tuples of different lengths, as the official drivers store them."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(40 + 7 * i, 6)), rng.normal(size=(40 + 7 * i, 2))) for i in range(n)]


def _object_array(trajs, two_d=True):
    arr = np.empty((len(trajs), 2) if two_d else len(trajs), dtype=object)
    for i, (s, a) in enumerate(trajs):
        if two_d:
            arr[i, 0], arr[i, 1] = s, a
        else:
            arr[i] = (s, a)
    return arr


def _check_same(ds, trajs):
    assert isinstance(ds, TrajectoryDataset) and len(ds) == len(trajs)
    for t, (s, a) in zip(ds, trajs):
        np.testing.assert_array_equal(t.obs, s)  # exact: float64 in, float64 out
        np.testing.assert_array_equal(t.acts, a)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_reads_the_c2l_pickle_format(tmp_path, protocol):
    trajs = _official_trajs()
    path = tmp_path / "train_10_0_ll_3_TCN.pkl"
    path.write_bytes(pickle.dumps(trajs, protocol=protocol))
    ds = load_official(path)
    _check_same(ds, trajs)
    assert ds.metadata["format"] == "c2l-pickle" and not ds.has_expert_labels
    labelled = load_official(path, expert_labels=True)  # official test sets: second array = pi_E(s)
    np.testing.assert_array_equal(labelled[1].expert_acts, trajs[1][1])


@pytest.mark.parametrize("two_d", [True, False])
def test_reads_the_causal_il_npz_format(tmp_path, two_d):
    trajs = _official_trajs(seed=1)
    path = tmp_path / "train_10_0.npz"
    np.savez(path, _object_array(trajs, two_d))  # what np.savez(path, trajs) stores: one object array
    ds = load_official(path)
    _check_same(ds, trajs)
    assert ds.metadata["format"] == "causal_il-npz"


def test_c2l_npz_and_extra_fields(tmp_path):
    trajs = _official_trajs(n=2)
    own = TrajectoryDataset([(s, a) for s, a in trajs], {"env": "x"}).save(tmp_path / "own.npz")
    assert load_official(own).metadata["env"] == "x"  # our own format is read as such
    path = tmp_path / "bullet.pkl"  # PyBullet files carry positions/velocities/contacts after (s, a)
    path.write_bytes(pickle.dumps([(s, a, np.zeros(3), np.zeros(3), np.zeros(2)) for s, a in trajs]))
    ds = load_official(path)
    _check_same(ds, trajs)
    assert ds.metadata["ignored_fields_per_trajectory"] == 3


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([(np.zeros((3, 2)), _Evil(marker))])
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="refusing to load (posix|nt).system"):
        load_official(path)
    assert not marker.exists()
    # the same payload inside a causal_il-style .npz (object arrays are pickles inside the .npy member)
    npy = tmp_path / "arr_0.npy"
    with open(npy, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        handle.write(payload)
    import zipfile

    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as zf:
        zf.write(npy, "arr_0.npy")
    with pytest.raises(ValueError, match="refusing to load"):
        load_official(tmp_path / "evil.npz")
    assert not marker.exists()


@pytest.mark.parametrize("obj, match", [
    ({"s": np.zeros(3)}, "dict"),  # built without any callable, refused by the structure check
    ([(np.zeros((3, 2)), "actions")], "str"),
    ([(np.zeros(3, dtype="U3"), np.zeros(3))], "dtype"),
    ([np.float64(1.0)], "refusing to load numpy"),  # NumPy scalars need multiarray.scalar: not allowed
    ([(np.zeros((3, 2)), 1.5j)], "complex"),
])
def test_anything_but_lists_tuples_and_numeric_arrays_is_refused(tmp_path, obj, match):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match=match):
        load_official(path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "missing.pkl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"\.pkl, \.pickle or \.npz"):
        load_official(tmp_path / "x.txt")
    (tmp_path / "trunc.pkl").write_bytes(pickle.dumps(_official_trajs(n=1))[:50])
    with pytest.raises(ValueError, match="not a readable trajectory pickle"):
        load_official(tmp_path / "trunc.pkl")
    (tmp_path / "short.pkl").write_bytes(pickle.dumps([(np.zeros((3, 2)),)]))
    with pytest.raises(ValueError, match="trajectory 0 must be a"):
        load_official(tmp_path / "short.pkl")
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(ValueError, match="expected one array"):
        load_official(tmp_path / "two.npz")
    # the restricted unpickler itself still builds ordinary arrays
    arr = restricted_loads(pickle.dumps(np.arange(6.0).reshape(2, 3)))
    np.testing.assert_array_equal(arr, np.arange(6.0).reshape(2, 3))


def test_cli_identify_and_train_read_official_files(tmp_path, capsys):
    rng = np.random.default_rng(3)
    trajs = []
    for _ in range(3):
        s = np.cumsum(rng.normal(size=(60, 2)), 0) * 0.1
        trajs.append((s, s[:, :1] + rng.standard_t(3, size=(60, 1))))
    path = tmp_path / "train_3_0_ll_3_TCN.pkl"
    path.write_bytes(pickle.dumps(trajs))
    assert cli_main(["identify", "--data", str(path), "--max-lag", "3", "--nullsims", "50", "--no-progress",
                     "--out", str(tmp_path / "iv.json")]) == 0
    assert "identified lag" in capsys.readouterr().out
    assert cli_main(["train", "--data", str(path), "--learner", "c2l_star", "--iv", str(tmp_path / "iv.json"),
                     "--steps", "5", "--out", str(tmp_path / "pi"), "--no-progress"]) == 0
    assert (tmp_path / "pi" / "model.safetensors").is_file()
    assert cli_main(["identify", str(path), "--data", str(path), "--no-progress"]) == 2
    assert "exactly one" in capsys.readouterr().err
    # the calibrated null and the intercept are reachable from the CLI; --sigma only where it means something
    assert cli_main(["identify", "--data", str(path), "--max-lag", "3", "--nullsims", "50", "--null", "shift",
                     "--center", "--no-progress", "--out", str(tmp_path / "iv2.json")]) == 0
    import json

    tests = json.loads((tmp_path / "iv2.json").read_text())["tests"]
    assert len(tests) == 9 and all(0 < t["pvalue"] <= 1 for t in tests)
    assert cli_main(["train", "--data", str(path), "--learner", "bc", "--sigma", "2", "--steps", "5",
                     "--out", str(tmp_path / "pi2"), "--no-progress"]) == 2
    assert "--sigma" in capsys.readouterr().err
    assert cli_main(["train", "--data", str(path), "--learner", "c2l", "--hop", "2", "--env", "linear", "--sigma",
                     "0.5", "--steps", "5", "--bc-steps", "5", "--out", str(tmp_path / "pi3"), "--no-progress"]) == 0
    cfg = json.loads(next((tmp_path / "pi3").glob("*.json")).read_text())
    assert cfg["learner_config"]["sigma"] == 0.5

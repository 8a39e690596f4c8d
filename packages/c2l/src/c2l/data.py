"""Trajectory datasets of (possibly confounded) demonstrations, saved and loaded as ``.npz`` files.

Layout follows the official code's ``(states, actions)`` pairs per trajectory, with ``obs[t]`` the state in which
``acts[t]`` was taken (so ``len(obs) == len(acts)``, unlike ``imitation``'s ``Trajectory`` where ``obs`` has one extra
final observation; :meth:`Trajectory.to_imitation_dict` gives that form when ``final_obs`` is known). Every
trajectory also carries the clean expert action ``π_E(s_t)`` at each visited state (the label the paper's action
error uses) and the rewards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Trajectory", "TrajectoryDataset", "as_trajectories", "load_official"]

_FORMAT = "c2l-trajectories-v1"


@dataclass
class Trajectory:
    """One demonstration: ``obs [T, ds]``, observed (confounded) ``acts [T, da]``, clean ``expert_acts [T, da]``."""

    obs: np.ndarray
    acts: np.ndarray
    expert_acts: np.ndarray | None = None
    rews: np.ndarray | None = None
    final_obs: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, dtype=np.float64)
        self.acts = np.asarray(self.acts, dtype=np.float64)
        if self.obs.ndim == 1:
            self.obs = self.obs[:, None]
        if self.acts.ndim == 1:
            self.acts = self.acts[:, None]
        if self.obs.ndim != 2 or self.acts.ndim != 2:
            raise ValueError(f"obs and acts must be [T, d] arrays, got {self.obs.shape} and {self.acts.shape}")
        if len(self.obs) != len(self.acts):
            raise ValueError(f"obs and acts must have the same length T, got {len(self.obs)} and {len(self.acts)}")
        if len(self.obs) == 0:
            raise ValueError("a trajectory must have at least one step")
        if self.expert_acts is not None:
            self.expert_acts = np.asarray(self.expert_acts, dtype=np.float64).reshape(self.acts.shape)
        if self.rews is not None:
            self.rews = np.asarray(self.rews, dtype=np.float64).reshape(len(self.acts))
        if self.final_obs is not None:
            self.final_obs = np.asarray(self.final_obs, dtype=np.float64).reshape(self.obs.shape[1])

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def ret(self) -> float:
        return float(np.sum(self.rews)) if self.rews is not None else float("nan")

    def to_imitation_dict(self) -> dict:
        """Fields of ``imitation.data.types.TrajectoryWithRew`` (``obs`` has T+1 rows; needs ``final_obs``)."""
        if self.final_obs is None:
            raise ValueError("to_imitation_dict needs final_obs (the observation after the last action)")
        return {"obs": np.concatenate([self.obs, self.final_obs[None]]), "acts": self.acts,
                "rews": self.rews if self.rews is not None else np.zeros(len(self)), "infos": None, "terminal": True}


@dataclass
class TrajectoryDataset:
    """A list of :class:`Trajectory` plus metadata (environment, expert, confounding config, seed)."""

    trajectories: list[Trajectory]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trajectories = [t if isinstance(t, Trajectory) else Trajectory(*t) for t in self.trajectories]
        if not self.trajectories:
            raise ValueError("a TrajectoryDataset needs at least one trajectory")
        ds, da = self.trajectories[0].obs.shape[1], self.trajectories[0].acts.shape[1]
        for i, t in enumerate(self.trajectories):
            if t.obs.shape[1] != ds or t.acts.shape[1] != da:
                raise ValueError(f"trajectory {i} has obs/action dims {t.obs.shape[1]}/{t.acts.shape[1]}, "
                                 f"expected {ds}/{da} like trajectory 0")

    def __len__(self) -> int:
        return len(self.trajectories)

    def __iter__(self) -> Iterator[Trajectory]:
        return iter(self.trajectories)

    def __getitem__(self, i: int) -> Trajectory:
        return self.trajectories[i]

    @property
    def obs_dim(self) -> int:
        return self.trajectories[0].obs.shape[1]

    @property
    def act_dim(self) -> int:
        return self.trajectories[0].acts.shape[1]

    @property
    def num_steps(self) -> int:
        return sum(len(t) for t in self.trajectories)

    @property
    def has_expert_labels(self) -> bool:
        return all(t.expert_acts is not None for t in self.trajectories)

    def subset(self, indices: Sequence[int]) -> TrajectoryDataset:
        return TrajectoryDataset([self.trajectories[i] for i in indices], dict(self.metadata))

    def lagged_arrays(self, lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenate ``(s_t, a_t, s_{t-lag})`` over all trajectories (trajectories shorter than lag+1 skipped)."""
        if not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
            raise ValueError(f"lag must be an int >= 0, got {lag!r}")
        xs, us, zs = [], [], []
        for t in self.trajectories:
            if len(t) <= lag:
                continue
            xs.append(t.obs[lag:])
            us.append(t.acts[lag:])
            zs.append(t.obs[: len(t) - lag])
        if not xs:
            raise ValueError(f"no trajectory is longer than lag={lag}")
        return np.concatenate(xs), np.concatenate(us), np.concatenate(zs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` (concatenated arrays + per-trajectory lengths + JSON metadata), atomically."""
        from commons.io import atomic_write

        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path must end in .npz, got {str(path)!r}")
        arrays = {
            "format": np.array(_FORMAT),
            "lengths": np.array([len(t) for t in self.trajectories], dtype=np.int64),
            "obs": np.concatenate([t.obs for t in self.trajectories]),
            "acts": np.concatenate([t.acts for t in self.trajectories]),
            "metadata": np.array(json.dumps(self.metadata, default=_json_default)),
        }
        if self.has_expert_labels:
            arrays["expert_acts"] = np.concatenate([t.expert_acts for t in self.trajectories])
        if all(t.rews is not None for t in self.trajectories):
            arrays["rews"] = np.concatenate([t.rews for t in self.trajectories])
        if all(t.final_obs is not None for t in self.trajectories):
            arrays["final_obs"] = np.stack([t.final_obs for t in self.trajectories])
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrajectoryDataset:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset file at {path}")
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is not a readable .npz dataset: {err}") from err
        with data:
            if "format" not in data or str(data["format"]) != _FORMAT:
                raise ValueError(f"{path} is not a c2l trajectory file (missing format tag {_FORMAT!r})")
            lengths = data["lengths"]
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            get = {k: data[k] for k in ("obs", "acts", "expert_acts", "rews", "final_obs") if k in data}
            metadata = json.loads(str(data["metadata"]))
        trajs = []
        for i in range(len(lengths)):
            s, e = bounds[i], bounds[i + 1]
            trajs.append(Trajectory(
                obs=get["obs"][s:e], acts=get["acts"][s:e],
                expert_acts=get["expert_acts"][s:e] if "expert_acts" in get else None,
                rews=get["rews"][s:e] if "rews" in get else None,
                final_obs=get["final_obs"][i] if "final_obs" in get else None,
            ))
        return cls(trajs, metadata)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


def as_trajectories(data) -> TrajectoryDataset:
    """Accept a :class:`TrajectoryDataset`, a path to a saved one, or a list of ``(obs, acts)`` pairs."""
    if isinstance(data, TrajectoryDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return TrajectoryDataset.load(data)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if len(data) == 0:
            raise ValueError("dataset is empty")
        items = []
        for i, item in enumerate(data):
            if isinstance(item, Trajectory):
                items.append(item)
            elif isinstance(item, (tuple, list)) and len(item) >= 2:
                items.append(Trajectory(item[0], item[1]))
            else:
                raise TypeError(f"dataset item {i} must be a Trajectory or an (obs, acts) pair, "
                                f"got {type(item).__name__}")
        return TrajectoryDataset(items)
    raise TypeError("dataset must be a TrajectoryDataset, a path to a .npz file or a list of (obs, acts) "
                    "pairs, "
                    f"got {type(data).__name__}")


# ---------------------------------------------------------------------------------------------- official files
def _pairs_from(obj, path: Path) -> list:
    """The list of per-trajectory tuples in a loaded official object (a list, or a causal_il object array)."""
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        if obj.ndim == 2:  # np.savez(path, trajs) of equal-arity tuples: rows are trajectories
            return [tuple(row) for row in obj]
        if obj.ndim == 1:
            return list(obj)
    if isinstance(obj, (list, tuple)):
        return list(obj)
    raise ValueError(f"{path}: expected a list of (states, actions) tuples, got {type(obj).__name__}"
                     + (f" of shape {obj.shape}" if isinstance(obj, np.ndarray) else ""))


def _to_dataset(pairs: list, path: Path, expert_labels: bool, layout: str) -> TrajectoryDataset:
    if not pairs:
        raise ValueError(f"{path}: the file holds no trajectories")
    trajs = []
    for i, item in enumerate(pairs):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"{path}: trajectory {i} must be a (states [T, d], actions [T, k]) tuple, "
                             f"got {type(item).__name__}" + (f" of length {len(item)}" if hasattr(item, "__len__")
                                                             else ""))
        s, a = item[0], item[1]
        if not isinstance(s, np.ndarray) or not isinstance(a, np.ndarray) or s.dtype == object or a.dtype == object:
            raise ValueError(f"{path}: trajectory {i} must hold two numeric arrays (states, actions)")
        s, a = np.asarray(s, np.float64), np.asarray(a, np.float64)
        try:
            trajs.append(Trajectory(s, a, expert_acts=a if expert_labels else None))
        except ValueError as err:
            raise ValueError(f"{path}: trajectory {i}: {err}") from None
    extra = len(pairs[0]) - 2
    meta = {"source": str(path.name), "format": layout, "env": None, "expert_labels": expert_labels,
            "ignored_fields_per_trajectory": extra}
    return TrajectoryDataset(trajs, meta)


def _read_npz_member(zf, name: str, path: Path):
    """One ``.npy`` member: numeric arrays through NumPy without pickle, object arrays through the restricted
    unpickler (their payload is a pickle of the array)."""
    from numpy.lib import format as npy_format

    from .safe_pickle import restricted_load

    with zf.open(name) as handle:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"{path}: member {name} has .npy format version {version} (expected 1.0 or 2.0)")
        if dtype.hasobject:
            return restricted_load(handle)
    with zf.open(name) as handle:
        return npy_format.read_array(handle, allow_pickle=False)


def load_official(path: str | os.PathLike, *, expert_labels: bool = False) -> TrajectoryDataset:
    """Read the official codes' trajectory files safely (never executing anything the file names).

    * ``.pkl`` / ``.pickle`` (YanaZeng/C2L, ``ll_train_data/train_{n}_{i}_ll_{k}_TCN.pkl``): a pickled list of
      ``(states [T, d], actions [T, k])`` tuples of float64 arrays;
    * ``.npz`` (gkswamy98/causal_il, ``data/train_{n}_{i}.npz``): ``np.savez(path, trajs)``, i.e. an object array of
      those tuples; a ``.npz`` written by :meth:`TrajectoryDataset.save` is read as such.

    Pickled payloads go through :class:`c2l.safe_pickle.RestrictedUnpickler`, which resolves only NumPy's array
    constructors: a file referencing any other global (e.g. ``os.system``) is refused with ``ValueError`` before
    anything is called. The loaded object must be lists/tuples of numeric arrays. Extra tuple fields (the PyBullet
    files' positions/velocities/contacts) are ignored and counted in the metadata.

    ``expert_labels=True`` marks the second array as the clean expert action (the official ``denoised_test`` /
    ``noisy_test`` sets store ``π_E(s)`` there), so :func:`c2l.action_error` can use the file. The official
    LunarLander files come from Swamy's 6-D custom environment, not gymnasium's 8-D ``LunarLander-v3``: offline
    learners and ``identify_iv`` work on them, the simulator-based ones need that environment.
    """
    import pickle
    import zipfile

    from .safe_pickle import UnsafePickleError, check_structure, restricted_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a .npz (zip) file")
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".npy")]
            if "format.npy" in names and "lengths.npy" in names:
                return TrajectoryDataset.load(path)
            if len(names) != 1:
                raise ValueError(f"{path}: expected one array (np.savez(path, trajs)) or a c2l dataset, "
                                 f"found members {names}")
            try:
                obj = _read_npz_member(zf, names[0], path)
            except UnsafePickleError as err:
                raise ValueError(f"{path}: {err}") from None
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, MemoryError) as err:
                raise ValueError(f"{path}: not a readable trajectory array ({err})") from None
        layout = "causal_il-npz"
    elif suffix in (".pkl", ".pickle"):
        try:
            with open(path, "rb") as handle:
                obj = restricted_load(handle)
        except UnsafePickleError as err:
            raise ValueError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                MemoryError) as err:
            raise ValueError(f"{path}: not a readable trajectory pickle ({type(err).__name__}: {err})") from None
        layout = "c2l-pickle"
    else:
        raise ValueError(f"path must end in .pkl, .pickle or .npz, got {str(path)!r}")
    check_structure(obj, str(path.name))
    return _to_dataset(_pairs_from(obj, path), path, expert_labels, layout)


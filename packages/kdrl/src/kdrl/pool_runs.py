"""One (pool, strategy, seed) distillation run of the teacher-pool benchmark (``tools/bench/kdrl.py``) as a function
of a JSON-able job, so that it runs the same in the caller's process and in a worker process (``commons.jobs``).

The caller trains (or loads) the pool's teachers once (:func:`kdrl.pools.build_pool`, safetensors in ``cache_dir``)
and puts their :func:`teacher_fingerprint` in every job; a worker loads them from ``cache_dir`` (never trains: a
missing file is an error), refuses teachers whose fingerprint differs, and keeps teachers, data and backend for its
later jobs. A run depends only on its job (the student is built after ``torch.manual_seed(seed)``, the distiller
reseeds every epoch), not on which process runs it or what ran before: on a CPU with the same thread count the
results are bit-identical whichever way the jobs are spread (``student_sha256`` in the returned record checks it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import torch
from torch import nn

__all__ = ["make_job", "prime", "run_unit", "state_digest", "teacher_fingerprint"]

#: per-process cache: context key -> (TeacherPool, train loader, test loader, backend)
_CONTEXT: dict[str, tuple] = {}


def state_digest(modules: list[nn.Module] | nn.Module) -> str:
    """sha256 (hex) of the modules' state dicts (names and raw bytes, in order)."""
    h = hashlib.sha256()
    for model in modules if isinstance(modules, list) else [modules]:
        for key, value in model.state_dict().items():
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def teacher_fingerprint(teachers: list[nn.Module]) -> str:
    """The first 16 hex digits of :func:`state_digest` of the teachers: units distilled from other teachers are not
    mixed."""
    return state_digest(list(teachers))[:16]


def make_job(pool: str, strategy: str, seed: int, *, epochs: int, teacher_epochs: int, batch_size: int,
             cache_dir: str, data_kwargs: dict[str, Any], fingerprint: str, device: str, threads: int,
             jobs: int = 1) -> dict[str, Any]:
    """The job dict of one unit (``key``/``kind``/``bench`` as :func:`commons.jobs.run_jobs` wants them). ``device``:
    ``"cpu"`` or ``"cuda"``; ``jobs``: how many units run at once (recorded with the unit's times)."""
    return {"key": f"{pool}/{strategy}/{seed}", "kind": f"{pool}/{strategy}", "bench": pool, "pool": pool,
            "strategy": strategy, "seed": int(seed), "epochs": int(epochs), "teacher_epochs": int(teacher_epochs),
            "batch_size": int(batch_size), "cache_dir": str(cache_dir), "data_kwargs": dict(data_kwargs),
            "fingerprint": fingerprint, "device": device, "threads": int(threads), "jobs": int(jobs)}


def _context_key(job: dict[str, Any]) -> str:
    keep = ("pool", "teacher_epochs", "batch_size", "cache_dir", "data_kwargs", "fingerprint", "device")
    return json.dumps({k: job[k] for k in keep}, sort_keys=True)


def prime(job: dict[str, Any], teachers, train, test, backend) -> None:
    """Hand this process's already built teachers (a ``TeacherPool``), loaders and backend to :func:`run_unit`
    for jobs like ``job`` (the caller's own process need not reload them)."""
    _CONTEXT[_context_key(job)] = (teachers, train, test, backend)


def _context(job: dict[str, Any]) -> tuple:
    key = _context_key(job)
    if key not in _CONTEXT:
        from commons.device import TrainingBackend

        from .pools import POOLS, build_pool, pool_loaders
        from .teachers import TeacherPool

        spec = dataclasses.replace(POOLS[job["pool"]], data_kwargs=dict(job["data_kwargs"]))
        train, test = pool_loaders(spec, job["batch_size"])
        teachers, names = build_pool(spec, train, job["teacher_epochs"], job["cache_dir"], train_missing=False)
        fp = teacher_fingerprint(teachers)
        if fp != job["fingerprint"]:
            raise RuntimeError(f"teachers in {job['cache_dir']} have fingerprint {fp}, the job expects "
                               f"{job['fingerprint']}")
        backend = TrainingBackend(cpu=job["device"] == "cpu")
        _CONTEXT[key] = (TeacherPool(teachers, names=names), train, test, backend)
    return _CONTEXT[key]


def run_unit(job: dict[str, Any]) -> dict[str, Any]:
    """Distil the pool's student with ``job["strategy"]`` for ``job["epochs"]`` epochs from ``job["seed"]``; returns
    the unit's record (final accuracy, per-epoch wall and strategy seconds, per-teacher weights, test curve, process
    time, ``student_sha256`` of the trained student and adaptors)."""
    from . import MultiTeacherDistiller, create_model, create_strategy
    from .config import digits_recipe
    from .pools import POOLS

    torch.set_num_threads(max(1, int(job["threads"])))
    if job["device"] != "cpu":
        torch.backends.cudnn.benchmark = True
    pool, train, test, backend = _context(job)
    spec = POOLS[job["pool"]]
    seed, name = job["seed"], job["strategy"]
    torch.manual_seed(seed)
    student = create_model(spec.student, **spec.student_kwargs)
    cfg = digits_recipe(job["epochs"], seed=seed, batch_size=job["batch_size"])
    d = MultiTeacherDistiller(student, pool, create_strategy(name), cfg, backend=backend)
    start, cpu0 = time.perf_counter(), time.process_time()
    hist = d.fit(train, test, progress=False)
    cpu_seconds = time.process_time() - cpu0
    seconds = time.perf_counter() - start
    eps = hist["epochs"]
    return {
        "strategy": name, "seed": seed, "final_top1": d.evaluate(test)["top1"],
        "seconds": seconds, "cpu_seconds": cpu_seconds, "epochs": len(eps),
        "epoch_seconds": [e["seconds"] for e in eps], "strategy_seconds": [e["strategy_seconds"] for e in eps],
        "logit_weights": [e["logit_weights"] for e in eps], "feat_weights": [e["feat_weights"] for e in eps],
        "test_curve": [e["test_top1"] for e in eps], "device": str(backend.device), "jobs": job["jobs"],
        "student_sha256": state_digest(d.model),
    }

"""A resumable job queue for benchmarks that run in calls of bounded length (a GPU lease of 10 minutes, say).

Each finished job is appended at once, as one JSON line, to a *partial* file; a later call passes that file back
(:func:`load_partial`) and runs only the jobs missing from it, with the same settings; :func:`run_jobs` submits no job
predicted to end after ``max_seconds``, so a call stops in time and writes what is done. Jobs are dicts with a unique
``key``, a ``kind`` (jobs of one kind take about as long) and a ``bench``; a ``threads`` entry is not part of a job's
identity. Used by ``tools/bench/clfreq.py`` and ``tools/bench/clfreq_prompt.py``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

__all__ = ["load_partial", "plain_json", "run_jobs"]


def plain_json(obj):
    """JSON form of a job or row: numpy scalars/arrays to Python, paths to strings."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def load_partial(paths: list[Path], jobs: list[dict]) -> dict[str, dict]:
    """Finished runs recorded in JSON-lines ``paths`` whose job equals one of ``jobs`` (key and every setting)."""
    wanted = {j["key"]: plain_json({k: v for k, v in j.items() if k != "threads"}) for j in jobs}
    done: dict[str, dict] = {}
    for path in paths:
        other = bad = 0
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                bad += 1
                continue
            if wanted.get(rec.get("key")) == rec.get("job"):
                done[rec["key"]] = rec
            else:
                other += 1
        print(f"resume: {path}: {len(done)} runs usable so far, {other} lines for other "
              f"jobs/settings ignored, {bad} unreadable", flush=True)
    return done


def run_jobs(jobs: list[dict], fn, workers: int, partial: Path | None, done: dict[str, dict],
             max_seconds: float | None, start: float, report) -> list[dict]:
    """Run the ``jobs`` not in ``done`` (in order, ``workers`` processes), appending each finished record to
    ``partial`` at once; returns the jobs left unrun. A job is submitted only while ``elapsed + predicted`` stays
    within ``max_seconds`` (predicted: 1.1 x the last finished run of its ``kind``, resumed ones included; for a kind
    not seen yet the longest finished run of its ``bench``; 0 if none)."""
    if partial is not None:  # the new partial file holds the resumed runs too, so it alone resumes the next call
        partial.parent.mkdir(parents=True, exist_ok=True)
        tmp = partial.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
        tmp.replace(partial)
    queue = [j for j in jobs if j["key"] not in done]
    failed: list[dict] = []
    last = {rec["job"]["kind"]: rec["seconds"] for rec in done.values()}

    def record(job: dict, row: dict, seconds: float) -> None:
        last[job["kind"]] = seconds
        rec = plain_json({"key": job["key"], "job": {k: v for k, v in job.items() if k != "threads"},
                      "seconds": round(seconds, 2), "row": row})
        done[job["key"]] = rec
        if partial is not None:
            with partial.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
        report(rec, time.perf_counter() - start)

    def predicted(job: dict) -> float:
        if job["kind"] in last:
            return 1.1 * last[job["kind"]]
        return max((v for k, v in last.items() if k.startswith(job["bench"] + "/")), default=0.0)

    def next_job() -> dict | None:
        elapsed = time.perf_counter() - start
        for i, job in enumerate(queue):
            if max_seconds is None or elapsed + predicted(job) <= max_seconds:
                return queue.pop(i)
        return None

    if workers <= 1:
        while (job := next_job()) is not None:
            t0 = time.perf_counter()
            record(job, fn(job), time.perf_counter() - t0)
        return failed + queue
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        running: dict = {}
        while True:
            while len(running) < workers and (job := next_job()) is not None:
                running[pool.submit(fn, job)] = (job, time.perf_counter())
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)  # as_completed, with refills in between
            for fut in finished:
                job, t0 = running.pop(fut)
                try:
                    row = fut.result()
                except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
                    print(f"{job['key']}: FAILED ({type(exc).__name__}: {exc})", flush=True)
                    failed.append(job)  # not retried in this call
                    if isinstance(exc, BrokenProcessPool):
                        return failed + [j for j, _ in running.values()] + queue
                    continue
                record(job, row, time.perf_counter() - t0)
    return failed + queue

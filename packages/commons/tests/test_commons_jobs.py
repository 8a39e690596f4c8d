"""commons.jobs: every finished job is on disk at once, a resume runs only what is missing, --max-seconds stops in
time, and a line cut by a kill or recorded with other settings is not reused."""

import json
import time

from commons.jobs import load_partial, run_jobs


def _jobs(n, lr=0.1):
    return [{"key": f"b/m/{i}", "kind": "b/m", "bench": "b", "lr": lr, "threads": 1} for i in range(n)]


def _square(job):
    return {"value": int(job["key"].rsplit("/", 1)[1]) ** 2}


def test_each_finished_job_is_appended_and_a_resume_runs_only_the_rest(tmp_path):
    partial, calls = tmp_path / "p.jsonl", []

    def fn(job):
        calls.append(job["key"])
        return _square(job)

    done = {}
    left = run_jobs(_jobs(3), fn, 1, partial, done, None, time.perf_counter(), lambda rec, t: None)
    assert left == [] and calls == ["b/m/0", "b/m/1", "b/m/2"]
    lines = [json.loads(x) for x in partial.read_text().splitlines()]
    assert [r["row"]["value"] for r in lines] == [0, 1, 4] and "threads" not in lines[0]["job"]

    # a killed call leaves a cut last line; a job recorded with another lr is not reused
    with partial.open("a") as fh:
        fh.write('{"key": "b/m/3", "job": {"key": "b/m/3", "ki')
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"key": "b/m/4", "job": {**_jobs(5, lr=0.5)[4], "threads": None},
                                 "seconds": 1.0, "row": {"value": -1}}) + "\n")
    jobs = _jobs(5)
    done = load_partial([partial, other], jobs)
    assert sorted(done) == ["b/m/0", "b/m/1", "b/m/2"]
    calls.clear()
    part2 = tmp_path / "p2.jsonl"
    left = run_jobs(jobs, fn, 1, part2, done, None, time.perf_counter(), lambda rec, t: None)
    assert left == [] and calls == ["b/m/3", "b/m/4"]
    assert [json.loads(x)["key"] for x in part2.read_text().splitlines()] == [f"b/m/{i}" for i in range(5)]


def test_max_seconds_submits_no_job_predicted_to_overrun(tmp_path):
    def slow(job):
        time.sleep(0.2)
        return _square(job)

    done = {}
    left = run_jobs(_jobs(10), slow, 1, None, done, 0.5, time.perf_counter(), lambda rec, t: None)
    # the first job runs (nothing is known yet), later ones only while elapsed + 1.1 x 0.2 s fits in 0.5 s
    assert 1 <= len(done) <= 3 and len(done) + len(left) == 10
    assert [j["key"] for j in left] == [f"b/m/{i}" for i in range(len(done), 10)]

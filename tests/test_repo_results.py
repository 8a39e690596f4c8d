"""Every generated results table in a README equals what its committed JSON renders to, and the mechanism works."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from commons.results import ResultsError, load_results, render_readme, write_results

REPO = Path(__file__).resolve().parents[1]


def test_every_readme_block_matches_its_json():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "results.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_results_file_is_valid_and_small():
    for path in sorted((REPO / "results").glob("*/*.json")):
        data = load_results(path)
        assert data["package"] == path.parent.name and data["bench"] == path.stem, path
        for key in ("git_commit", "date", "machine", "settings"):
            assert key in data, f"{path}: missing {key}"
        assert path.stat().st_size < 512 * 1024, f"{path} is over 512 KiB: results are numbers, not data"


def test_write_then_render_round_trip(tmp_path):
    rows = [{"table": "a", "method": "x", "score": 0.123456}, {"table": "a", "method": "y", "score": 2.0},
            {"table": "b", "method": "z", "score": 3.0}]
    path = write_results("pkg", "bench", rows, {"steps": 10}, root=tmp_path)
    data = json.loads(path.read_text())
    assert data["rows"] == rows and data["settings"] == {"steps": 10}
    readme = ("intro\n<!-- results bench=pkg/bench table=a columns=method,score digits=3 -->\nOLD\n"
              "<!-- /results -->\nend\n")
    out = render_readme(readme, tmp_path)
    assert "| x | 0.123 |" in out and "| y | 2 |" in out and "| z |" not in out and "OLD" not in out
    assert out.startswith("intro\n") and out.endswith("<!-- /results -->\nend\n")
    assert render_readme(out, tmp_path) == out  # idempotent


def test_bad_rows_and_blocks_fail_with_one_line(tmp_path):
    with pytest.raises(ResultsError, match=r"rows\[0\]\['x'\]"):
        write_results("pkg", "b", [{"x": [1, 2]}], {}, root=tmp_path)
    write_results("pkg", "b", [{"m": 1}], {}, root=tmp_path)
    with pytest.raises(ResultsError, match="columns"):
        render_readme("<!-- results bench=pkg/b columns=nope -->\n<!-- /results -->", tmp_path)
    with pytest.raises(ResultsError, match="does not exist"):
        render_readme("<!-- results bench=pkg/missing -->\n<!-- /results -->", tmp_path)

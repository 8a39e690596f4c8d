"""Benchmark results as committed data, and README tables rendered from them.

Every benchmark writes ``results/<package>/<bench>.json`` at the repository root through :func:`write_results`: the
rows (flat dicts of numbers and strings), the settings that produced them, and where they come from (git commit,
date, machine, library versions). A package README never holds a hand-typed number; it holds blocks such as::

    <!-- results bench=walmafa/walmafa table=main columns=method,psnr,ssim -->
    <!-- /results -->

and :func:`render_readme` (``python tools/results.py``) fills each block with the table built from the JSON, followed
by a provenance line. ``tests/test_repo_results.py`` fails when a README block differs from its JSON, so a number in a
README always traces to a run.

Block options: ``bench`` (``<package>/<bench>``, required), ``table`` (keep only rows whose ``"table"`` equals it),
``columns`` (comma-separated; default: every key in first-seen order except ``table``), ``digits`` (significant
digits, default 4), ``where`` (``key=value`` filters joined by ``&``, compared as strings).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from commons.reporting import markdown_table

__all__ = ["write_results", "load_results", "render_block", "render_readme", "machine_info", "results_root",
           "ResultsError"]

SCHEMA = "paperlab-results/1"
_BLOCK = re.compile(r"(<!-- results (?P<opts>[^>]*?)-->)(?P<body>.*?)(<!-- /results -->)", re.S)


class ResultsError(ValueError):
    """A results file or a README block that cannot be rendered, with the reason in one line."""


def results_root(start: str | os.PathLike | None = None) -> Path:
    """``<repo>/results``: the first folder upward from ``start`` (default: cwd) that holds ``packages/``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "packages").is_dir() and (folder / "pyproject.toml").is_file():
            return folder / "results"
    raise ResultsError(f"no repository root (a folder with packages/ and pyproject.toml) above {here}")


def _git_commit(cwd: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("PAPERLAB_GIT_COMMIT", "unknown")


def machine_info() -> dict[str, object]:
    """CPU, core count, GPU (name, driver) if any, Python, torch and Triton versions."""
    info: dict[str, object] = {"platform": platform.platform(), "machine": platform.machine(),
                               "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["cuda"] = torch.version.cuda
            try:
                drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
                if drv:
                    info["driver"] = drv[0]
            except (OSError, subprocess.SubprocessError):
                pass
        else:
            info["gpu"] = None
    except ImportError:
        pass
    try:  # Triton is torch's optional GPU compiler: read its version without importing it
        import importlib.metadata

        info["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        pass
    return info


def _check_rows(rows: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)) or not rows:
        raise ResultsError("rows must be a non-empty list of flat dicts")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ResultsError(f"rows[{i}] must be a dict, got {type(row).__name__}")
        clean: dict[str, object] = {}
        for key, value in row.items():
            if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
                value = value.item()
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise ResultsError(f"rows[{i}][{key!r}] must be a number, string, bool or None, got "
                                   f"{type(value).__name__}")
            clean[str(key)] = value
        out.append(clean)
    return out


def write_results(package: str, bench: str, rows: Sequence[Mapping[str, object]], settings: Mapping[str, object],
                  *, root: str | os.PathLike | None = None, extra: Mapping[str, object] | None = None,
                  machine: Mapping[str, object] | None = None) -> Path:
    """Write ``<root>/<package>/<bench>.json`` atomically and return its path.

    ``rows``: the numbers, one flat dict per row (an optional ``"table"`` key splits them into README tables).
    ``settings``: everything needed to re-run (steps, seeds, budget, command line). ``extra``: small JSON-able data
    kept beside the rows (per-seed curves, say). ``machine``: overrides :func:`machine_info`, for results computed
    on another machine (a GPU run whose JSON is written here).
    """
    if not re.fullmatch(r"[a-z0-9_]+", package) or not re.fullmatch(r"[A-Za-z0-9_.-]+", bench):
        raise ResultsError(f"package/bench must be simple names, got {package!r}/{bench!r}")
    folder = Path(root) if root is not None else results_root()
    payload = {
        "schema": SCHEMA,
        "package": package,
        "bench": bench,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(folder.parent if folder.parent.exists() else Path.cwd()),
        "machine": dict(machine) if machine is not None else machine_info(),
        "settings": json.loads(json.dumps(dict(settings), default=str)),
        "rows": _check_rows(rows),
    }
    if extra:
        payload["extra"] = json.loads(json.dumps(dict(extra), default=str))
    path = folder / package / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_results(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist (run its benchmark to create it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"results file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("rows"), list):
        raise ResultsError(f"results file {path} is not a {SCHEMA} file")
    return data


def _parse_opts(text: str) -> dict[str, str]:
    opts = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            raise ResultsError(f"results block option {token!r} must be key=value")
        opts[key] = value
    unknown = set(opts) - {"bench", "table", "columns", "digits", "where"}
    if unknown:
        raise ResultsError(f"unknown results block options {sorted(unknown)}")
    if "bench" not in opts:
        raise ResultsError("results block needs bench=<package>/<bench>")
    return opts


def _provenance(data: dict, rel: str) -> str:
    machine = data.get("machine") or {}
    where = machine.get("gpu") or f"CPU ({machine.get('machine', '?')}, {machine.get('cpu_count', '?')} cores)"
    versions = ", ".join(f"{k} {machine[k]}" for k in ("torch", "triton", "driver") if machine.get(k))
    return (f"<sub>Generated from `{rel}` · commit {data.get('git_commit', '?')} · {data.get('date', '?')[:10]} · "
            f"{where}{' · ' + versions if versions else ''}</sub>")


def render_block(opts_text: str, root: Path) -> str:
    """The markdown (table + provenance line) that a block with these options should hold."""
    opts = _parse_opts(opts_text)
    rel = f"results/{opts['bench']}.json"
    data = load_results(root / f"{opts['bench']}.json")
    rows = data["rows"]
    if "table" in opts:
        rows = [r for r in rows if str(r.get("table")) == opts["table"]]
    for cond in filter(None, opts.get("where", "").split("&")):
        key, _, value = cond.partition("=")
        rows = [r for r in rows if str(r.get(key)) == value]
    if not rows:
        raise ResultsError(f"{rel}: no rows for block '{opts_text.strip()}'")
    columns = opts["columns"].split(",") if "columns" in opts else None
    if columns is None:
        columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "table"]
    missing = [c for c in columns if all(c not in r for r in rows)]
    if missing:
        raise ResultsError(f"{rel}: columns {missing} are in no row")
    digits = int(opts.get("digits", 4))
    return markdown_table(rows, columns, digits=digits) + "\n\n" + _provenance(data, rel)


def render_readme(text: str, root: Path) -> str:
    """``text`` with every results block refilled from the JSON files under ``root``."""

    def fill(match: re.Match) -> str:
        return f"{match.group(1)}\n{render_block(match.group('opts'), root)}\n{match.group(4)}"

    return _BLOCK.sub(fill, text)


def readme_blocks(text: str) -> list[str]:
    """The option strings of every results block in ``text``."""
    return [m.group("opts").strip() for m in _BLOCK.finditer(text)]

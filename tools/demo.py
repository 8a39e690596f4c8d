#!/usr/bin/env python3
"""Run every package's quick demo and collect the results into one report.

Each package under ``packages/`` may provide ``<pkg>/demo.py`` with ``run(out_dir) -> commons.reporting.DemoSection``.
This script imports them in turn (commons first), gives each its own folder under ``--out``, and writes
``REPORT.md`` with every section, the images, and the time each demo took. A failing demo is reported and makes the
script exit non-zero, after the others have run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def discover_packages() -> list[str]:
    names = sorted(p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file())
    return ["commons"] + [n for n in names if n != "commons"] if "commons" in names else names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="report folder")
    parser.add_argument("--only", nargs="*", default=None, help="run only these packages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    packages = discover_packages()
    if args.only:
        unknown = sorted(set(args.only) - set(packages))
        if unknown:
            parser.error(f"--only: unknown packages {unknown}; known: {packages}")
        packages = [p for p in packages if p in args.only]

    sections, summary, failed = [], [], []
    for name in packages:
        try:
            module = importlib.import_module(f"{name}.demo")
        except ModuleNotFoundError as err:
            if err.name == f"{name}.demo":
                summary.append((name, "no demo", 0.0))
                continue
            raise
        print(f"== {name} demo ...", flush=True)
        start = time.perf_counter()
        try:
            section = module.run(out / name)
        except Exception:  # noqa: BLE001 - report every package, then fail
            seconds = time.perf_counter() - start
            failed.append(name)
            summary.append((name, "FAILED", seconds))
            sections.append(f"## {name}: FAILED\n\n```\n{traceback.format_exc()}\n```\n")
            print(traceback.format_exc(), file=sys.stderr)
            continue
        seconds = time.perf_counter() - start
        summary.append((name, section.summary or "ok", seconds))
        images = "\n".join(f"![{Path(p).stem}]({Path(p).resolve().relative_to(out)})" for p in section.images)
        sections.append(f"## {section.title}\n\n_{seconds:.1f} s_\n\n{section.markdown}\n\n{images}\n")

    table = ["| package | result | seconds |", "| --- | --- | --- |"]
    table += [f"| {n} | {s} | {t:.1f} |" for n, s, t in summary]
    report = "# Demo report\n\n" + "\n".join(table) + "\n\n" + "\n".join(sections)
    (out / "REPORT.md").write_text(report, encoding="utf-8")
    print("\n".join(table))
    print(f"\nreport: {out / 'REPORT.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

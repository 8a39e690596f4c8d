#!/usr/bin/env python3
"""Refresh every README's generated results tables from the committed ``results/<package>/<bench>.json`` files.

    python tools/results.py            # rewrite the blocks in place
    python tools/results.py --check    # exit 1 and list the READMEs whose blocks differ from their JSON

A block is ``<!-- results bench=<package>/<bench> [table=..] [columns=a,b] [where=k=v] -->`` ...
``<!-- /results -->``; see :mod:`commons.results`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packages" / "commons" / "src"))

from commons.results import ResultsError, render_readme  # noqa: E402


def readmes() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "packages").glob("*/README.md")),
            *sorted((REPO / "packages").glob("*/docs/*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if any block is stale")
    args = parser.parse_args(argv)
    stale, errors = [], []
    for path in readmes():
        text = path.read_text(encoding="utf-8")
        try:
            new = render_readme(text, REPO / "results")
        except ResultsError as err:
            errors.append(f"{path.relative_to(REPO)}: {err}")
            continue
        if new != text:
            stale.append(str(path.relative_to(REPO)))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if args.check and stale:
        print("stale results blocks (run: python tools/results.py): " + ", ".join(stale), file=sys.stderr)
    elif stale:
        print("refreshed: " + ", ".join(stale))
    return 1 if errors or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())

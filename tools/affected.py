#!/usr/bin/env python3
"""Print, as a JSON list, the packages CI must test for the changes since ``--base``.

A change under ``packages/<pkg>/`` selects ``<pkg>``; a change to ``commons`` or to anything outside ``packages/``
(tools, tests, workflows, root config) selects every package. With no usable base, every package is selected.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def all_packages() -> list[str]:
    return sorted(p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file())


def affected(changed: list[str]) -> list[str]:
    packages = all_packages()
    selected: set[str] = set()
    for path in changed:
        parts = Path(path).parts
        if len(parts) >= 2 and parts[0] == "packages" and parts[1] in packages and parts[1] != "commons":
            selected.add(parts[1])
        elif path.endswith(".md") and not path.startswith("packages/commons/"):
            continue
        else:
            return packages
    return sorted(selected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="", help="git revision to diff against")
    args = parser.parse_args()
    base = args.base.strip()
    if not base or set(base) == {"0"}:
        print(json.dumps(all_packages()))
        return
    proc = subprocess.run(["git", "diff", "--name-only", f"{base}...HEAD"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        print(json.dumps(all_packages()))
        return
    print(json.dumps(affected([line for line in proc.stdout.splitlines() if line])))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Release one package: bump its version, date its changelog, commit and (optionally) tag ``<pkg>-v<version>``.

    tools/release.py vqcore patch          # edit files, print the git commands to run
    tools/release.py vqcore minor --tag    # edit files, commit them and create the tag

Pushing the tag triggers ``.github/workflows/release.yml``, which builds and publishes exactly that package.
The package's ``CHANGELOG.md`` must have a non-empty ``## Unreleased`` section; its entries move under
``## [X.Y.Z] - YYYY-MM-DD`` and a fresh empty ``## Unreleased`` heading is left on top.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

VERSION_RE = re.compile(r'^__version__\s*=\s*"(\d+)\.(\d+)\.(\d+)"', re.MULTILINE)
UNRELEASED_RE = re.compile(r"^## Unreleased[ \t]*\n(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)


class ReleaseError(Exception):
    pass


def bump(version: tuple[int, int, int], part: str) -> tuple[int, int, int]:
    major, minor, patch = version
    if part == "major":
        return major + 1, 0, 0
    if part == "minor":
        return major, minor + 1, 0
    if part == "patch":
        return major, minor, patch + 1
    raise ReleaseError(f"part must be major, minor or patch, got {part!r}")


def release(repo: Path, package: str, part: str, tag: bool = False, today: dt.date | None = None) -> str:
    """Apply the release edits for ``package`` under ``repo``; return the new version."""
    pkg_dir = repo / "packages" / package
    init = pkg_dir / "src" / package / "__init__.py"
    changelog = pkg_dir / "CHANGELOG.md"
    if not pkg_dir.is_dir():
        known = sorted(p.name for p in (repo / "packages").iterdir() if p.is_dir())
        raise ReleaseError(f"unknown package {package!r}; known packages: {known}")
    for path in (init, changelog):
        if not path.is_file():
            raise ReleaseError(f"{path} is missing")
    init_text = init.read_text(encoding="utf-8")
    match = VERSION_RE.search(init_text)
    if not match:
        raise ReleaseError(f'{init} has no __version__ = "X.Y.Z" line')
    new = ".".join(map(str, bump(tuple(int(g) for g in match.groups()), part)))
    log = changelog.read_text(encoding="utf-8")
    section = UNRELEASED_RE.search(log)
    if not section:
        raise ReleaseError(f"{changelog} has no '## Unreleased' section")
    if not section.group(1).strip():
        raise ReleaseError(f"{changelog}: the Unreleased section is empty; describe the changes before releasing")
    date = (today or dt.date.today()).isoformat()
    new_log = log[: section.start()] + f"## Unreleased\n\n## [{new}] - {date}\n{section.group(1)}" + log[section.end():]
    if tag:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(pkg_dir)], cwd=repo, check=True,
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            raise ReleaseError(f"{pkg_dir} has uncommitted changes; commit them before releasing")
    init.write_text(VERSION_RE.sub(f'__version__ = "{new}"', init_text, count=1), encoding="utf-8")
    changelog.write_text(new_log, encoding="utf-8")
    tag_name = f"{package}-v{new}"
    commands = [
        ["git", "add", str(init.relative_to(repo)), str(changelog.relative_to(repo))],
        ["git", "commit", "-m", f"release {package} v{new}", "--", str(init.relative_to(repo)),
         str(changelog.relative_to(repo))],
        ["git", "tag", "-a", tag_name, "-m", f"{package} v{new}"],
    ]
    if tag:
        for cmd in commands:
            subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
        print(f"committed and tagged {tag_name}; push with: git push origin main {tag_name}")
    else:
        print(f"{package}: {'.'.join(match.groups())} -> {new}. To finish:")
        for cmd in commands:
            print("  " + " ".join(f"'{c}'" if " " in c else c for c in cmd))
        print(f"  git push origin main {tag_name}")
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="folder name under packages/")
    parser.add_argument("part", choices=["major", "minor", "patch"])
    parser.add_argument("--tag", action="store_true", help="commit the edits and create the annotated tag")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        release(args.repo, args.package, args.part, tag=args.tag)
    except ReleaseError as err:
        print(f"release: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

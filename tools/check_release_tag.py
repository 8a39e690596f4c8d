#!/usr/bin/env python3
"""CI guard for release.yml: ``<pkg>-v<X.Y.Z>`` must match the package's ``__version__`` and its changelog.

Prints the package name on success (the workflow builds that folder only); exits non-zero with a reason otherwise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAG_RE = re.compile(r"^(?P<pkg>[a-z0-9_]+)-v(?P<version>\d+\.\d+\.\d+)$")


def check(tag: str, repo: Path = REPO) -> str:
    match = TAG_RE.match(tag)
    if not match:
        raise ValueError(f"tag {tag!r} is not of the form <package>-v<X.Y.Z>")
    pkg, version = match["pkg"], match["version"]
    init = repo / "packages" / pkg / "src" / pkg / "__init__.py"
    if not init.is_file():
        raise ValueError(f"tag {tag!r} names package {pkg!r}, but {init} does not exist")
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', init.read_text(encoding="utf-8"), re.MULTILINE)
    if not found or found.group(1) != version:
        raise ValueError(f"tag {tag!r} says {version} but {init} has __version__ = {found and found.group(1)!r}")
    changelog = (repo / "packages" / pkg / "CHANGELOG.md").read_text(encoding="utf-8")
    if f"## [{version}]" not in changelog:
        raise ValueError(f"packages/{pkg}/CHANGELOG.md has no '## [{version}]' section")
    return pkg


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_release_tag.py <pkg>-v<X.Y.Z>")
    try:
        print(check(sys.argv[1]))
    except ValueError as err:
        sys.exit(f"release tag check failed: {err}")

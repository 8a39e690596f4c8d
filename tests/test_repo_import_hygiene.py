"""Static check: each package imports only the standard library, its declared dependencies, commons and itself.

Picks up new packages automatically. Declared means `dependencies` or any optional extra in the package's
pyproject.toml (optional imports must be lazy; the fresh-environment install test checks the package imports
without its extras).
"""

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file())
MODULE_TO_DISTS = md.packages_distributions()
# folder (= import name) -> distribution name: they differ for commons (distribution paperlab-commons)
DIST = {p: tomllib.loads((REPO / "packages" / p / "pyproject.toml").read_text())["project"]["name"] for p in PACKAGES}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions(pkg: str) -> set[str]:
    meta = tomllib.loads((REPO / "packages" / pkg / "pyproject.toml").read_text())["project"]
    reqs = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return {_norm(Requirement(r).name) for r in reqs}


def imported_top_modules(pkg: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "packages" / pkg / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_imports_only_declared_dependencies(pkg):
    commons_dist = _norm(DIST["commons"])
    declared = declared_distributions(pkg) | {_norm(DIST[pkg]), commons_dist}
    problems = []
    for module, where in imported_top_modules(pkg).items():
        if module in sys.stdlib_module_names or module == "__future__" or module == pkg:
            continue
        dists = {_norm(d) for d in MODULE_TO_DISTS.get(module, [])}
        if module == "commons":
            dists = {commons_dist}
        if not dists and _norm(module) in declared:
            continue  # an optional extra that is declared but not installed here (e.g. c2l[gail]: conflicting pins)
        if not dists:
            problems.append(f"{module} (no installed distribution provides it) at {where[0]}")
        elif not dists & declared:
            problems.append(f"{module} (from {sorted(dists)}) is not declared in packages/{pkg}/pyproject.toml; "
                            f"used at {where[0]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("pkg", [p for p in PACKAGES if p != "commons"])
def test_method_packages_do_not_import_each_other(pkg):
    others = set(PACKAGES) - {pkg, "commons"}
    offenders = {m: w for m, w in imported_top_modules(pkg).items() if m in others}
    assert not offenders, f"{pkg} imports sibling method packages: {offenders}"
    assert not declared_distributions(pkg) & {_norm(DIST[o]) for o in others}


def test_distribution_names():
    """Import names are the folder names; distribution names differ only where PyPI's name is taken (commons)."""
    assert DIST["commons"] == "paperlab-commons"
    assert all(DIST[p] == p for p in PACKAGES if p != "commons")
    for pkg in PACKAGES:  # every package that uses commons declares it by its distribution name
        meta = tomllib.loads((REPO / "packages" / pkg / "pyproject.toml").read_text())["project"]
        names = {_norm(Requirement(r).name) for r in meta.get("dependencies", [])}
        assert "commons" not in names, f"packages/{pkg}/pyproject.toml depends on PyPI's unrelated 'commons'"
        if pkg != "commons":
            assert "paperlab-commons" in names, f"packages/{pkg} does not declare paperlab-commons"


def test_commons_depends_on_torch_numpy_and_small_pure_packages_only():
    meta = tomllib.loads((REPO / "packages/commons/pyproject.toml").read_text())["project"]
    assert {_norm(Requirement(r).name) for r in meta["dependencies"]} <= {"torch", "numpy", "safetensors", "tqdm"}

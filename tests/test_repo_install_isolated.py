"""Every package installs alone: wheel built by hatchling, fresh venv, only declared dependencies, smoke entry point.

torch is 5.5 GB installed, so the fresh environments do not reinstall it: a session-wide folder of symbolic links to
the distributions of torch and torchvision (and what they require) is put on each venv's path through a ``.pth``
file. pip sees those distributions as installed and fetches only the package's other declared dependencies. The
smoke entry point (``python -m <pkg>.smoke``) then runs with nothing else importable than those.
"""

import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file())
SHARED_ROOTS = ("torch", "torchvision")
# folder (= import name) -> distribution name: they differ for commons (distribution paperlab-commons)
DIST = {p: tomllib.loads((REPO / "packages" / p / "pyproject.toml").read_text())["project"]["name"] for p in PACKAGES}

pytestmark = [pytest.mark.install, pytest.mark.slow]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots):
    seen, todo = {}, list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


@pytest.fixture(scope="session")
def shared_torch_site(tmp_path_factory):
    """A folder of symlinks to torch, torchvision and their requirements, as installed in this environment."""
    site = tmp_path_factory.mktemp("torch-site")
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    for dist in _closure(SHARED_ROOTS).values():
        base = Path(dist.locate_file("")).resolve()
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = base / top
            dst = site / top
            if src.exists() and not dst.exists() and src.parent == purelib:
                dst.symlink_to(src)
    assert (site / "torch").exists(), "torch not found in the test environment"
    return site


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    for pkg in PACKAGES:
        subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out),
                        str(REPO / "packages" / pkg)], check=True, capture_output=True, text=True)
    return out


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_installs_alone_and_runs_its_smoke_entry_point(pkg, wheelhouse, shared_torch_site, tmp_path):
    wheels = sorted(wheelhouse.glob(f"{DIST[pkg].replace('-', '_')}-*.whl"))
    assert len(wheels) == 1, f"expected one wheel for {pkg}, found {wheels}"
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "_shared_torch.pth").write_text(str(shared_torch_site) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--disable-pip-version-check",
          "--find-links", str(wheelhouse), str(wheels[0])], env=env, timeout=900)
    # the package is importable from the wheel, not from the source tree
    where = _run([str(py), "-c", f"import {pkg}; print({pkg}.__file__)"], env=env, cwd=tmp_path).stdout
    assert str(site) in where, where
    _run([str(py), "-m", f"{pkg}.smoke"], env=env, cwd=tmp_path, timeout=300)
    # nothing beyond the declared closure was installed: no sibling method package sneaked in
    installed = {_norm(d.metadata["Name"]) for d in md.distributions(path=[str(site)])}
    assert not installed & ({_norm(d) for d in DIST.values()} - {_norm(DIST[pkg]), _norm(DIST["commons"])}), installed

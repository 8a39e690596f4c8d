"""The README's "Adding a package" steps, followed on a throwaway package in a copy of the repo skeleton, give a
package that the Makefile, `tools/demo.py`, `tools/affected.py` (CI's matrix) and the wheel build all pick up."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _readme_steps() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text[text.index("## Adding a package"):]


@pytest.fixture
def skeleton(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "tools").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    for name in ("demo.py", "affected.py"):
        shutil.copy(REPO / "tools" / name, root / "tools" / name)
    for pkg in ("commons", "walmafa"):
        (root / "packages" / pkg).mkdir(parents=True)
        shutil.copy(REPO / "packages" / pkg / "pyproject.toml", root / "packages" / pkg / "pyproject.toml")
    return root


def _follow_the_steps(root: Path, name: str = "newpkg") -> Path:
    steps = _readme_steps()
    template = re.search(r"copy `packages/(\w+)/pyproject.toml`", steps).group(1)
    pkg = root / "packages" / name
    (pkg / "src" / name).mkdir(parents=True)
    (pkg / "tests").mkdir()
    text = (REPO / "packages" / template / "pyproject.toml").read_text()
    text = text.replace(f'name = "{template}"', f'name = "{name}"').replace(f"{template}.cli", f"{name}.cli")
    text = re.sub(rf"^{template} = ", f"{name} = ", text, flags=re.M)
    text = text.replace(f"src/{template}", f"src/{name}").replace(f"packages/{template}", f"packages/{name}")
    (pkg / "pyproject.toml").write_text(text)
    (pkg / "src" / name / "__init__.py").write_text('__version__ = "0.0.1"\n')
    (pkg / "src" / name / "cli.py").write_text("def main():\n    return 0\n")
    (pkg / "src" / name / "smoke.py").write_text("print('ok')\n")
    (pkg / "src" / name / "demo.py").write_text("def run(out_dir):\n    raise NotImplementedError\n")
    (pkg / "README.md").write_text(f"# {name}\n")
    (pkg / "CHANGELOG.md").write_text("# Changelog\n\n## Unreleased\n")
    (pkg / "tests" / f"test_{name}_smoke.py").write_text("def test_ok():\n    assert True\n")
    return pkg


def test_the_steps_name_the_real_distribution_and_a_real_template():
    steps = _readme_steps()
    assert "paperlab-commons>=0.1,<0.2" in steps
    template = re.search(r"copy `packages/(\w+)/pyproject.toml`", steps).group(1)
    text = (REPO / "packages" / template / "pyproject.toml").read_text()
    assert '"paperlab-commons>=0.1,<0.2"' in text and "[project.scripts]" in text and "test = [" in text


def test_a_package_made_by_the_steps_is_discovered_everywhere(skeleton: Path):
    pkg = _follow_the_steps(skeleton)
    make = subprocess.run(["make", "-s", "--eval", "print-%: ; @echo $($*)", "print-PACKAGES"], cwd=skeleton,
                          capture_output=True, text=True, check=True)
    assert make.stdout.split() == ["commons", "newpkg", "walmafa"]

    affected = subprocess.run([sys.executable, "tools/affected.py"], cwd=skeleton, capture_output=True, text=True,
                              check=True)
    assert "newpkg" in affected.stdout

    spec = importlib.util.spec_from_file_location("skeleton_demo", skeleton / "tools" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.discover_packages() == ["commons", "newpkg", "walmafa"]

    pytest.importorskip("hatchling")
    wheel = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir",
                            str(skeleton / "dist"), str(pkg)], capture_output=True, text=True)
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    assert [p.name for p in (skeleton / "dist").glob("*.whl")] == ["newpkg-0.0.1-py3-none-any.whl"]

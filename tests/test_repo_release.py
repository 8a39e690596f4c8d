"""tools/release.py and tools/check_release_tag.py, exercised on a temporary copy of a repository."""

import importlib.util
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = _load("release")
check_release_tag = _load("check_release_tag")


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def fake_repo(tmp_path):
    pkg = tmp_path / "packages" / "demo" / "src" / "demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""demo."""\n\n__version__ = "0.3.9"\n')
    (tmp_path / "packages" / "demo" / "CHANGELOG.md").write_text(
        "# Changelog\n\n## Unreleased\n\n### Added\n- a thing\n\n## [0.3.9] - 2026-01-01\n- old\n"
    )
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=t", "add", "-A")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-q", "-m", "init")
    return tmp_path


def test_bump_parts():
    assert release.bump((1, 2, 3), "patch") == (1, 2, 4)
    assert release.bump((1, 2, 3), "minor") == (1, 3, 0)
    assert release.bump((1, 2, 3), "major") == (2, 0, 0)
    with pytest.raises(release.ReleaseError):
        release.bump((1, 2, 3), "micro")


def test_release_edits_version_and_changelog(fake_repo, capsys):
    new = release.release(fake_repo, "demo", "minor", today=date(2026, 11, 24))
    assert new == "0.4.0"
    init = (fake_repo / "packages/demo/src/demo/__init__.py").read_text()
    assert '__version__ = "0.4.0"' in init
    log = (fake_repo / "packages/demo/CHANGELOG.md").read_text()
    assert log.index("## Unreleased") < log.index("## [0.4.0] - 2026-11-24") < log.index("- a thing")
    assert log.index("- a thing") < log.index("## [0.3.9]")
    assert "git tag -a demo-v0.4.0" in capsys.readouterr().out
    # the new Unreleased section is empty, so releasing again is refused
    with pytest.raises(release.ReleaseError, match="empty"):
        release.release(fake_repo, "demo", "patch")


def test_release_with_tag_commits_and_tags(fake_repo):
    env_cfg = ["-c", "user.email=a@b", "-c", "user.name=t"]
    subprocess.run(["git", *env_cfg, "config", "user.email", "a@b"], cwd=fake_repo, check=True)
    subprocess.run(["git", "config", "user.name", "t"], cwd=fake_repo, check=True)
    release.release(fake_repo, "demo", "patch", tag=True)
    assert "demo-v0.3.10" in _git(fake_repo, "tag")
    assert _git(fake_repo, "log", "-1", "--format=%s").strip() == "release demo v0.3.10"
    assert _git(fake_repo, "status", "--porcelain").strip() == ""
    assert check_release_tag.check("demo-v0.3.10", fake_repo) == "demo"
    with pytest.raises(ValueError, match="__version__"):
        check_release_tag.check("demo-v0.3.11", fake_repo)
    with pytest.raises(ValueError, match="form"):
        check_release_tag.check("demo-0.3.10", fake_repo)


def test_release_refuses_dirty_package_and_unknown_package(fake_repo):
    (fake_repo / "packages/demo/src/demo/extra.py").write_text("x = 1\n")
    with pytest.raises(release.ReleaseError, match="uncommitted"):
        release.release(fake_repo, "demo", "patch", tag=True)
    with pytest.raises(release.ReleaseError, match="unknown package"):
        release.release(fake_repo, "nope", "patch")


def test_release_cli_exit_code(fake_repo):
    proc = subprocess.run([sys.executable, str(REPO / "tools/release.py"), "nope", "patch", "--repo", str(fake_repo)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown package" in proc.stderr


def test_every_real_package_is_releasable():
    """Each package has what the release workflow checks: a __version__ and a changelog with Unreleased."""
    for pkg_dir in sorted((REPO / "packages").iterdir()):
        if not (pkg_dir / "pyproject.toml").is_file():
            continue
        init = pkg_dir / "src" / pkg_dir.name / "__init__.py"
        assert release.VERSION_RE.search(init.read_text()), f"{init} lacks __version__"
        log = (pkg_dir / "CHANGELOG.md").read_text()
        assert release.UNRELEASED_RE.search(log), f"{pkg_dir.name}/CHANGELOG.md lacks '## Unreleased'"


def test_affected_packages_selection():
    affected = _load("affected")
    everything = affected.all_packages()
    assert affected.affected(["packages/commons/src/commons/io.py"]) == everything
    assert affected.affected(["Makefile"]) == everything
    assert affected.affected(["README.md"]) == []
    others = [p for p in everything if p != "commons"]
    if others:
        assert affected.affected([f"packages/{others[0]}/src/x.py"]) == [others[0]]

"""The wheel carries rules/ and templates/ as porter.rules and porter.templates, and nothing else.

The repository keeps rules/ and templates/ at the top level, and pyproject.toml maps them under
porter. A mistake in that mapping passes every other test in a source checkout, where
porter/__init__.py finds the folders beside it, and breaks only for a user who installs the
wheel. So this test builds the wheel from a copy of the checkout, reads its file list, and
imports the unpacked wheel in a fresh interpreter that cannot see the checkout.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Files the code reads at run time; every one under rules/ and templates/ must ship.
_RUNTIME_SUFFIXES = {".py", ".toml", ".yaml", ".yml", ".json", ".j2"}
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".venv",
    "*.safetensors",
)
# What pip prints when the build backend must be downloaded and the index cannot be reached.
_OFFLINE_MARKERS = (
    "No matching distribution found for setuptools",
    "Could not find a version that satisfies the requirement setuptools",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
)


def _backend_installed() -> bool:
    """True when pyproject's build requirements are importable, so no download is needed."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    major, minor = (int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    # setuptools ships bdist_wheel itself from 70.1 on; older ones need the wheel package.
    return (major, minor) >= (70, 1) or (
        major >= 68 and importlib.util.find_spec("wheel") is not None
    )


def _runtime_files(folder: str) -> list[str]:
    base = ROOT / folder
    return sorted(
        p.relative_to(base).as_posix()
        for p in base.rglob("*")
        if p.is_file() and p.suffix in _RUNTIME_SUFFIXES and "__pycache__" not in p.parts
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy, so the checkout gains no build/ or egg-info folders."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this environment, so no wheel can be built")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    offline_ok = _backend_installed()
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(tmp / "dist")]
    cmd += ["--disable-pip-version-check", "--no-input"]
    if offline_ok:
        cmd.append("--no-build-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if not offline_ok and any(marker in output for marker in _OFFLINE_MARKERS):
            pytest.skip("setuptools is not installed here and the package index is unreachable")
        pytest.fail(f"pip wheel failed with exit code {proc.returncode}:\n{output}")
    wheels = list((tmp / "dist").glob("porter-*.whl"))
    assert len(wheels) == 1, f"expected one porter wheel, found {wheels}\n{output}"
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_has_only_the_porter_package(wheel_names: set[str]) -> None:
    top = {name.split("/", 1)[0] for name in wheel_names}
    for stray in ("rules", "templates", "generated", "tests"):
        assert stray not in top, f"top-level {stray}/ leaked into the wheel"
    extra = {name for name in top if name != "porter" and not name.endswith(".dist-info")}
    assert not extra, f"unexpected top-level entries in the wheel: {sorted(extra)}"


def test_wheel_nests_rules_under_porter(wheel_names: set[str]) -> None:
    expected = _runtime_files("rules")
    assert "__init__.py" in expected, "rules/__init__.py is missing from the checkout"
    missing = [
        f"porter/rules/{name}" for name in expected if f"porter/rules/{name}" not in wheel_names
    ]
    assert not missing, f"rules files missing from the wheel: {missing}"


def test_wheel_nests_templates_under_porter(wheel_names: set[str]) -> None:
    expected = _runtime_files("templates")
    assert any(name.endswith(".j2") for name in expected), "templates/ holds no .j2 file"
    missing = [
        f"porter/templates/{name}"
        for name in expected
        if f"porter/templates/{name}" not in wheel_names
    ]
    assert not missing, (
        f"template files missing from the wheel: {missing}; "
        "check [tool.setuptools.package-data] in pyproject.toml"
    )


def test_wheel_ships_every_porter_module(wheel_names: set[str]) -> None:
    # Modules and the data they read (recipes.toml).
    expected = sorted(p.name for p in (ROOT / "porter").iterdir() if p.suffix in _RUNTIME_SUFFIXES)
    missing = [f"porter/{name}" for name in expected if f"porter/{name}" not in wheel_names]
    assert not missing, f"porter modules missing from the wheel: {missing}"


def test_unpacked_wheel_imports_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    probe = (
        "import importlib.resources, porter, porter.cli, porter.rules\n"
        "print(porter.__file__)\n"
        "print(porter.rules.__file__)\n"
        # templates/ has no __init__.py, so this may be a MultiplexedPath: no rglob.
        "def walk(node):\n"
        "    for child in node.iterdir():\n"
        "        yield from walk(child) if child.is_dir() else [child.name]\n"
        "root = importlib.resources.files('porter.templates')\n"
        "print(sorted(name for name in walk(root) if name.endswith('.j2')))\n"
    )
    # PYTHONPATH comes before site-packages, so an installed porter cannot answer instead.
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    porter_file, rules_file, templates = proc.stdout.splitlines()
    assert Path(porter_file).is_relative_to(site), porter_file
    assert Path(rules_file) == site / "porter" / "rules" / "__init__.py"
    want = sorted(Path(name).name for name in _runtime_files("templates") if name.endswith(".j2"))
    assert templates == repr(want)

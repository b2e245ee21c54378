"""The wheel ships every package: pyproject.toml lists them by hand (the grammar folder is
mapped into `dslc.grammars`), so a new package left off the list would vanish on install."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_under_dslc_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "dslc").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert "dslc.grammars" in listed


def test_the_standard_library_is_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["dslc"]
    std = sorted((ROOT / "dslc" / "std").glob("*.dl"))
    assert std and "std/*.dl" in globs


def test_a_built_wheel_holds_the_data_files(tmp_path):
    """Build the wheel from a copy of the sources (setuptools writes build/ next to them)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("dslc", "grammars"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                           "build_meta.build_wheel(sys.argv[1])", str(out)],
                          cwd=src, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"dslc/std/{p.name}" for p in (ROOT / "dslc" / "std").glob("*.dl")}
    assert expected and expected <= names
    assert {"dslc/grammars/dslc.lark", "dslc/_tables.marshal", "dslc/ops/_index.py"} <= names

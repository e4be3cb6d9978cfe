"""The installed package is whole without the checkout: the config schema ships inside the wheel and loads from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from featsim.config import SCHEMA

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the package sources (the checkout gets no build/ or egg-info)."""
    pytest.importorskip("setuptools.build_meta")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-c", f"import setuptools.build_meta as b; b.build_wheel({str(out)!r})"],
                            cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("featsim-*.whl")
    return built


def test_the_wheel_holds_the_schema(wheel):
    with zipfile.ZipFile(wheel) as archive:
        assert f"featsim/{SCHEMA}" in archive.namelist()


def test_the_schema_loads_from_the_installed_wheel_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    check = ("import featsim, featsim.config as config\n"
             f"assert featsim.__file__.startswith({str(site)!r}), featsim.__file__\n"
             "schema = config.load_schema()\n"
             "print(sorted(schema['properties'])[:3], schema['properties']['null']['properties']['seed']['default'])\n")
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install's path
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(" 0")

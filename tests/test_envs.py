"""The conda environment of `--software-deployment-method conda`: builds from Snakemake's copy of the file
(no relative or editable paths), carries pyproject.toml's dependencies with the same pins, and its
post-deploy script installs featsim from the workflow checkout. conda itself is not needed: the script
runs against a stand-in `python` that records what it was asked to do."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "featsim.yaml"
POST_DEPLOY = REPO / "envs" / "featsim.post-deploy.sh"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def env_entries() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip requirements) of the environment file."""
    conda, pip = [], []
    for entry in yaml.safe_load(ENV_FILE.read_text())["dependencies"]:
        if isinstance(entry, dict):
            pip += entry["pip"]
        else:
            conda.append(entry)
    return conda, pip


def requirement_map(lines) -> dict[str, tuple[str, str, str]]:
    """Canonical name -> (specifier, extras, marker) of requirement strings."""
    parsed = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): (str(r.specifier), ",".join(sorted(r.extras)), str(r.marker or ""))
            for r in parsed}


def test_env_pins_match_pyproject_dependencies():
    _, pip = env_entries()
    assert requirement_map(pip) == requirement_map(PROJECT["dependencies"])
    assert len(pip) == len(PROJECT["dependencies"])  # no requirement listed twice


def test_env_python_satisfies_requires_python():
    conda, _ = env_entries()
    (python,) = [entry for entry in conda if entry.split("=")[0] == "python"]
    version = python.split("=", 1)[1].lstrip("=")
    assert SpecifierSet(PROJECT["requires-python"]).contains(f"{version}.0")


def test_env_has_no_relative_or_editable_path():
    """Snakemake builds from .snakemake/conda/<hash>.yaml: `-e ..` would point at .snakemake/."""
    conda, pip = env_entries()
    for entry in conda + pip:
        assert not entry.lstrip().startswith(("-e", "--editable", ".", "/", "file:")), entry
        assert ".." not in entry and "./" not in entry, entry


def fake_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A stand-in environment whose `python` records its arguments (one per line) and succeeds."""
    bin_dir, record = tmp_path / "env" / "bin", tmp_path / "python-calls"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{record}"\n')
    (bin_dir / "python").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, record


def run_post_deploy(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The post-deploy script as Snakemake runs it: from its copy under .snakemake/conda/, cwd = the run."""
    copy = tmp_path / ".snakemake" / "conda" / "0123abcd_.post-deploy.sh"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(POST_DEPLOY.read_bytes())
    interpreter = POST_DEPLOY.read_text().splitlines()[0].removeprefix("#!").split()
    return subprocess.run([*interpreter, str(copy)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)


def test_post_deploy_installs_the_workflow_checkout_editable_without_dependencies(tmp_path):
    env, record = fake_env(tmp_path)
    checkout = tmp_path / "elsewhere" / "featsim-checkout"  # not the cwd, not next to the script's copy
    checkout.mkdir(parents=True)
    (checkout / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    result = run_post_deploy(tmp_path, {**env, "FEATSIM_WORKFLOW_DIR": str(checkout)})
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == ["-m", "pip", "install", "--no-deps", "--editable", str(checkout)]


def test_post_deploy_refuses_a_directory_that_is_not_featsim(tmp_path):
    env, record = fake_env(tmp_path)
    for case, extra in {"unset": {}, "not-featsim": {"FEATSIM_WORKFLOW_DIR": str(tmp_path)}}.items():
        (tmp_path / case).mkdir()
        result = run_post_deploy(tmp_path / case, {**env, **extra})
        assert result.returncode != 0, case
        assert "FEATSIM_WORKFLOW_DIR" in result.stderr and "not a featsim checkout" in result.stderr, case
    assert not record.exists()  # nothing installed


def test_snakefile_exports_its_checkout_for_the_post_deploy_script(tmp_path):
    probe = ("import os, sys\nfrom snakemake.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('FEATSIM_WORKFLOW_DIR=' + os.environ.get('FEATSIM_WORKFLOW_DIR', ''))\n")
    env = {key: value for key, value in os.environ.items() if key != "FEATSIM_WORKFLOW_DIR"}
    result = subprocess.run([sys.executable, "-c", probe, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                             "--list-rules"], capture_output=True, text=True, timeout=120, env=env)
    assert f"FEATSIM_WORKFLOW_DIR={REPO.resolve()}" in result.stdout.splitlines(), result.stderr[-2000:]


def test_requires_python_admits_no_version_a_dependency_refuses():
    """pip cannot resolve featsim on a Python its dependencies refuse (snakemake 9 and the SLURM plugin
    need 3.11); the installed distributions' own Requires-Python are the oracle."""
    ours = SpecifierSet(PROJECT["requires-python"])
    admitted = [f"3.{minor}.0" for minor in range(8, 16) if ours.contains(f"3.{minor}.0")]
    for line in PROJECT["dependencies"]:
        theirs = importlib.metadata.metadata(Requirement(line).name).get("Requires-Python")
        if theirs:
            refused = [version for version in admitted if not SpecifierSet(theirs).contains(version)]
            assert not refused, f"{line} requires Python {theirs}; requires-python admits {refused}"


def test_readme_states_the_python_floor_of_pyproject():
    floor = re.fullmatch(r">=\s*(3\.\d+)", PROJECT["requires-python"].strip()).group(1)
    stated = set(re.findall(r"Python (3\.\d+)\+", (REPO / "README.md").read_text()))
    assert stated == {floor}

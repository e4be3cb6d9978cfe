"""Cluster placement and retries, through the real SLURM executor plugin with stub SLURM commands
(tests/slurm_stubs.py): what sbatch is asked for when a real experiment is submitted with profiles/slurm."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

import slurm_stubs

REPO = Path(__file__).resolve().parents[1]
PYTHIA = REPO / "configs" / "pythia-70m-vs-160m.yaml"
SLURM_PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = re.compile(r"activations_\w+|codes|correlate")


def snakemake_slurm(workdir: Path, state: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    """`snakemake --profile profiles/slurm --configfile X` from `workdir`, with SLURM stubs first on PATH
    that capture each sbatch call and then refuse it (so every job fails at once and is retried)."""
    account = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())["default-resources"]["slurm_account"]
    env = {**os.environ, **slurm_stubs.install(state / "bin", state), "SLURM_STUB_SBATCH_REJECTS": "1",
           "SLURM_STUB_ACCOUNTS": account,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--profile", str(SLURM_PROFILE), "--configfile", str(configfile), "--keep-going",
               "--slurm-init-seconds-before-status-checks", "1", *args]  # else shutdown waits 40 s for a poll
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=workdir)


def fake_output(path: Path, age: float) -> None:
    """An existing output (a store directory with one file, or a file) modified `age` seconds ago (recent:
    an output older than its rule's script is rebuilt as 'code changed')."""
    mtime = time.time() - age
    if path.suffix in (".zarr", ""):
        path.mkdir(parents=True, exist_ok=True)
        (path / "zarr.json").write_text("{}")
        os.utime(path / "zarr.json", (mtime, mtime))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    os.utime(path, (mtime, mtime))


@pytest.fixture(scope="module")
def pythia_submissions(tmp_path_factory):
    """Every sbatch call of configs/pythia-70m-vs-160m.yaml under profiles/slurm, in two submissions:
    the forward passes (tokens present), then codes, correlations and labels (activations and some codes
    present; the last layer of each model still to encode, and every cell whose codes exist to correlate)."""
    config = yaml.safe_load(PYTHIA.read_text())
    exp, models = config["experiment"], {name: entry["layers"] for name, entry in config["models"].items()}
    (_, layers_a), (_, layers_b) = models.items()
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "configs").symlink_to(REPO / "configs")  # the concept globs, relative to the run directory
    results = workdir / "results" / exp
    fake_output(results / "tokens.zarr", age=30)

    forward = [f"results/{exp}/acts/{model}/L{layer}.zarr" for model, layers in models.items() for layer in layers]
    forward_state = tmp_path_factory.mktemp("state")
    first = snakemake_slurm(workdir, forward_state, PYTHIA, *forward)

    for target in forward:
        fake_output(workdir / target, age=20)
    encoded = {(model, layer) for model, layers in models.items() for layer in layers[:-1]}
    for model, layer in encoded:
        fake_output(results / "codes" / model / f"L{layer}.zarr", age=10)
        fake_output(results / "saes" / model / f"L{layer}" / "decoder.npy", age=10)
        fake_output(results / "saes" / model / f"L{layer}" / "meta.json", age=10)
    cmp = next(iter(config["comparisons"]))
    targets = ([f"results/{exp}/codes/{model}/L{layers[-1]}.zarr" for model, layers in models.items()]
               + [f"results/{exp}/corr/{cmp}/A{la}_B{lb}.zarr" for la in layers_a[:-1] for lb in layers_b[:-1]]
               + [f"results/{exp}/labels/{model}/L{layer}.parquet" for model, layer in sorted(encoded)])
    rest_state = tmp_path_factory.mktemp("state")
    second = snakemake_slurm(workdir, rest_state, PYTHIA, *targets)
    for result in (first, second):  # every job fails (sbatch refuses it): a clean run would mean nothing ran
        assert result.returncode != 0 and "sbatch failed" in result.stderr, result.stderr[-3000:]
    return {"forward": slurm_stubs.submissions(forward_state), "rest": slurm_stubs.submissions(rest_state),
            "models": models, "n_cells": len(layers_a[:-1]) * len(layers_b[:-1]), "n_labels": len(encoded),
            "resources": config["resources"]}


def attempts(submissions: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Submissions grouped by job (rule, wildcards), in submission order."""
    jobs = defaultdict(list)
    for submission in submissions:
        jobs[submission["rule"], submission["wildcards"]].append(submission)
    return dict(jobs)


def test_every_forward_pass_codes_and_correlate_job_goes_to_the_gpu_partition(pythia_submissions):
    forward = attempts(pythia_submissions["forward"])
    rest = attempts(pythia_submissions["rest"])
    models = pythia_submissions["models"]
    assert {rule for rule, _ in forward} == {f"activations_{model}" for model in models}
    assert sum(rule == "codes" for rule, _ in rest) == len(models)
    assert sum(rule == "correlate" for rule, _ in rest) == pythia_submissions["n_cells"]
    gpu_jobs = [s for s in pythia_submissions["forward"] + pythia_submissions["rest"] if GPU_RULES.fullmatch(s["rule"])]
    for submission in gpu_jobs:
        assert submission["partition"] == "gpu", submission["args"]
        assert submission["gpus"] == "1", submission["args"]


def test_cpu_rules_request_no_gpu_and_stay_on_the_default_partition(pythia_submissions):
    cpu_jobs = [s for s in pythia_submissions["rest"] if not GPU_RULES.fullmatch(s["rule"])]
    assert {s["rule"] for s in cpu_jobs} == {"labels"}
    assert len(attempts(cpu_jobs)) == pythia_submissions["n_labels"]
    default_partition = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())["default-resources"]["slurm_partition"]
    for submission in cpu_jobs:
        assert submission["partition"] == default_partition, submission["args"]
        assert not [flag for flag in submission["flags"] if "gpu" in flag or flag == "--gres"], submission["args"]


def test_slurm_retries_give_three_attempts_with_growing_memory(pythia_submissions):
    base = pythia_submissions["resources"]["mem_mb"]
    jobs = attempts(pythia_submissions["forward"] + pythia_submissions["rest"])
    for (rule, _), tries in jobs.items():
        assert len(tries) == 3, (rule, [t["args"] for t in tries])
        memory = [t["mem_mb"] for t in tries]
        assert memory[0] < memory[1] < memory[2], (rule, memory)
        if GPU_RULES.fullmatch(rule):  # heavy rules: resources.mem_mb on the first attempt, doubled on each retry
            assert memory == [base, 2 * base, 4 * base], (rule, memory)


def test_the_local_default_profile_overrides_nothing_the_slurm_profile_sets():
    """profiles/default/ is loaded as the workflow profile even under --profile profiles/slurm, and its keys
    win; it must not set one the SLURM profile sets differently (it once halved the retries), and it does
    not retry locally (a local retry gets no more memory, and config or data errors only repeat)."""
    local = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    assert "retries" not in local and "restart-times" not in local
    clashes = {key: (value, slurm[key]) for key, value in local.items() if key in slurm and slurm[key] != value}
    assert not clashes
    assert slurm["retries"] == 2  # three attempts
    assert not (set(slurm.get("set-resources") or {}) & {"activations", "codes", "correlate"}), \
        "placement belongs to the rules (generated names like activations_<model> escape set-resources)"


def planned_resources(output: str) -> list[tuple[str, dict, dict]]:
    """(rule, wildcards, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"^(?=(?:local)?rule \w+:)", output, flags=re.MULTILINE)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        fields = {key: value for key, value in re.findall(r"^\s+(wildcards|resources): (.*)$", block, re.MULTILINE)}
        parse = lambda text: dict(item.split("=", 1) for item in text.split(", ")) if text else {}
        jobs.append((rule, parse(fields.get("wildcards", "")), parse(fields.get("resources", ""))))
    return jobs


def test_a_model_or_correlation_pinned_to_the_cpu_requests_no_gpu(tmp_path):
    """The old profile's set-resources gave codes and correlate a GPU whatever the config said."""
    config = yaml.safe_load(PYTHIA.read_text())
    cpu_model, gpu_model = "pythia160m", "pythia70m"
    config["models"][cpu_model]["device"] = "cpu"
    config["correlation"]["device"] = "cpu"
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "configs").symlink_to(REPO / "configs")
    cmp, layers = next(iter(config["comparisons"])), {name: entry["layers"] for name, entry in config["models"].items()}
    cells = [f"results/{config['experiment']}/corr/{cmp}/A{la}_B{lb}.zarr"
             for la in layers[config["comparisons"][cmp]["a"]] for lb in layers[config["comparisons"][cmp]["b"]]]
    result = snakemake_slurm(tmp_path, tmp_path / "state", tmp_path / "cpu.yaml", "-n", *cells)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [(rule, wc, res) for rule, wc, res in planned_resources(result.stdout + result.stderr)
            if GPU_RULES.fullmatch(rule)]
    on_gpu = {(rule, wc.get("model")) for rule, wc, res in jobs if res.get("gpu", "0") != "0"}
    assert on_gpu == {(f"activations_{gpu_model}", None), ("codes", gpu_model)}
    for rule, wildcards, resources in jobs:
        if (rule, wildcards.get("model")) in on_gpu:
            assert resources["slurm_partition"] == "gpu", (rule, wildcards, resources)
        elif rule == "codes":  # one rule for both models: a per-job partition has no profile default to fall to
            assert "slurm_partition" not in resources, (rule, wildcards, resources)  # sbatch: the cluster default
        else:
            assert resources["slurm_partition"] == "cpu", (rule, wildcards, resources)
    assert {rule for rule, _, _ in jobs} == {f"activations_{gpu_model}", f"activations_{cpu_model}", "codes", "correlate"}

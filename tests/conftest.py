"""Shared fixtures: the repository root, the default config, offline settings for every test."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def pytest_addoption(parser):
    parser.addoption("--run-benchmarks", action="store_true", help="run tests marked benchmark")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-benchmarks"):
        return
    skip = pytest.mark.skip(reason="benchmark: run with --run-benchmarks")
    for item in items:
        if "benchmark" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty HF hub cache used by huggingface_hub and transformers (offline mode is set above)."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def killed_codes_writer():
    """`kill(target, before_kill=None)`: a process opens a CodesWriter on `target`, writes one chunk and is
    SIGKILLed mid-write (after `before_kill()` runs, while it still holds the store); returns its pid."""
    def kill(target, before_kill=None) -> int:
        script = ("import numpy as np, time\n"
                  "from featsim.stores import CodesWriter\n"
                  f"with CodesWriter({str(target)!r}, 8) as w:\n"
                  "    w.append(np.eye(8)); print('started', flush=True); time.sleep(60)\n")
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "started"
            if before_kill is not None:
                before_kill(proc.pid)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        return proc.pid

    return kill

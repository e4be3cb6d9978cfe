"""Shared fixtures: the repository root, the default config, offline settings for every test."""

import os
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

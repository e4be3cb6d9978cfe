"""Test-only (the offline rehearsal): add the rehearsal's SAE releases to sae-lens's registry in every Python
process of the rehearsal workflow, so that sae-lens's own registry code paths load them (release -> repo and
folder, `conversion_func` such as `gemma_2` for the Gemma Scope params.npz layout, `config_overrides`).

Active only with this directory on PYTHONPATH and FEATSIM_REHEARSAL_REGISTRY naming a YAML file in the format
of sae-lens's pretrained_saes.yaml. The releases are added when sae-lens's registry module is first imported,
into the dict its cached `get_pretrained_saes_directory()` returns (the one every sae-lens loader reads).
"""

import importlib.abc
import importlib.util
import os
import sys

_MODULE = "sae_lens.loading.pretrained_saes_directory"


def register_releases(module, path: str) -> None:
    """Add the releases of the YAML file `path` to sae-lens's registry (module = its registry module)."""
    import yaml

    with open(path) as handle:
        releases = yaml.safe_load(handle) or {}
    directory = module.get_pretrained_saes_directory()
    for release, value in releases.items():
        saes_map = {sae["id"]: sae["path"] for sae in value["saes"]}
        directory[release] = module.PretrainedSAELookup(
            release=release, repo_id=value["repo_id"], model=value["model"],
            conversion_func=value.get("conversion_func"), saes_map=saes_map,
            expected_var_explained={k: 1.0 for k in saes_map}, expected_l0={k: 0.0 for k in saes_map},
            neuronpedia_id={}, norm_scaling_factor={}, config_overrides=value.get("config_overrides"))


class _AfterRegistryImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of sae-lens's registry module so the releases are added right after it runs."""

    def __init__(self, path: str):
        self.path = path

    def find_spec(self, name, import_path=None, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            register_releases(module, self.path)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("FEATSIM_REHEARSAL_REGISTRY"):
    sys.meta_path.insert(0, _AfterRegistryImport(os.environ["FEATSIM_REHEARSAL_REGISTRY"]))

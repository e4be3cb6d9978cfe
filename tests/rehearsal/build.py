"""Build the offline rehearsal of the real route: a temporary HF_HOME that stands in for the hub.

What `build_rehearsal(root)` writes, all in the formats users download (see hub_fixtures.py):
- `hf_home/hub/models--EleutherAI--pythia-14m` and `--pythia-31m`: tiny random GPT-NeoX checkpoints of
  different widths/depths under the real transformer-lens names (TL accepts only official names and
  builds its config from the checkpoint's config.json in the cache), sharing one BPE tokenizer;
- `datasets--rehearsal--openwebtext` at revision `refs/convert/parquet`: the corpus as parquet shards
  laid out as the hub's parquet export (`plain_text/partial-train/0000.parquet`, ...);
- SAEs that reconstruct their hook (top principal components of the hook's activations):
  `rehearsal/sae-pythia-14m` in the sparsify layout for pythia-14m; for pythia-31m, release
  `rehearsal-31m-res-jb` (a sae-lens repo with pre-6.0 cfg.json, like gemma-2b-res-jb) and release
  `rehearsal-scope-31m-res` (Gemma Scope params.npz, loaded by sae-lens's `gemma_2` converter);
  both releases are in `registry.yaml`, which site/sitecustomize.py adds to sae-lens's registry;
- `wrong-hook/`: an SAE whose cfg.json names a hook it was not built on (for the FVU gate test).

`rehearsal_env(root)` is the environment the workflow runs in: HF_HOME there, HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
if __package__:  # imported by the tests as rehearsal.build
    from . import hub_fixtures as hub
else:  # run as a script: python tests/rehearsal/build.py OUT_DIR
    sys.path.insert(0, str(HERE))
    import hub_fixtures as hub

CONFIG = HERE / "config.yaml"
SITE = HERE / "site"
CONTEXT_LENGTH = 64
MODELS = {  # official name -> checkpoint shape (different widths and depths)
    "EleutherAI/pythia-14m": {"hidden": 32, "layers": 3, "heads": 4, "seed": 0},
    "EleutherAI/pythia-31m": {"hidden": 48, "layers": 4, "heads": 2, "seed": 1},
}
SPARSIFY_REPO = "rehearsal/sae-pythia-14m"
JB_RELEASE, JB_REPO = "rehearsal-31m-res-jb", "rehearsal/pythia-31m-residual-stream-saes"
SCOPE_RELEASE, SCOPE_REPO = "rehearsal-scope-31m-res", "rehearsal/gemma-scope-2b-pt-res"  # gemma_2 reads "2b"/"res"
DATASET, DATASET_REVISION = "rehearsal/openwebtext", "refs/convert/parquet"
PCA_RANK = {"EleutherAI/pythia-14m": 16, "EleutherAI/pythia-31m": 24}


def hub_cache(root: Path) -> Path:
    return Path(root) / "hf_home" / "hub"


def rehearsal_env(root: Path) -> dict[str, str]:
    """Environment of the rehearsal: the stand-in HF_HOME, offline, the test registry."""
    root = Path(root)
    return {"HF_HOME": str(root / "hf_home"), "HF_HUB_CACHE": str(hub_cache(root)),
            "HF_DATASETS_CACHE": str(root / "hf_home" / "datasets"), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "FEATSIM_REHEARSAL_REGISTRY": str(root / "registry.yaml"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)}


def _write_dataset(root: Path, documents: list[str]) -> None:
    import pandas as pd

    source = root / "src" / "dataset"
    shards = np.array_split(np.arange(len(documents)), 2)
    for index, shard in enumerate(shards):
        path = source / "plain_text" / "partial-train" / f"{index:04d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": [documents[i] for i in shard]}).to_parquet(path)
    hub.install_repo(hub_cache(root), DATASET, source, repo_type="dataset", revision=DATASET_REVISION)


def _sae_repos(root: Path, rows: dict[str, dict[int, np.ndarray]]) -> dict:
    """The three SAE repos and the wrong-hook variant; returns the FVU of each SAE on its own hook."""
    source = root / "src"
    fvus = {}
    small, large = "EleutherAI/pythia-14m", "EleutherAI/pythia-31m"
    for layer in (0, 1):  # sparsify: layers.L = output of block L (the rehearsal config reads layers.1)
        sae = hub.pca_sae(rows[small][layer], PCA_RANK[small])
        hub.write_sparsify(source / "sparsify" / f"layers.{layer}", sae, k=PCA_RANK[small])
        fvus[f"sparsify/layers.{layer}"] = hub.fvu(rows[small][layer], sae)
    hub.install_repo(hub_cache(root), SPARSIFY_REPO, source / "sparsify")

    jb_folder = "pythia_31m_blocks.1.hook_resid_post_96"
    sae = hub.pca_sae(rows[large][1], PCA_RANK[large])
    hub.write_sae_lens_pre6(source / "jb" / jb_folder, sae, "blocks.1.hook_resid_post", 1, "pythia-31m")
    fvus["jb/blocks.1"] = hub.fvu(rows[large][1], sae)
    hub.install_repo(hub_cache(root), JB_REPO, source / "jb")

    scope_folder = "layer_2/width_16k/average_l0_30"
    sae = hub.pca_sae(rows[large][2], PCA_RANK[large])
    hub.write_gemma_scope(source / "scope" / scope_folder, sae)
    fvus["scope/layer_2"] = hub.fvu(rows[large][2], sae)
    hub.install_repo(hub_cache(root), SCOPE_REPO, source / "scope")

    registry = {
        JB_RELEASE: hub.registry_release(JB_RELEASE, JB_REPO, "pythia-31m",
                                         {"blocks.1.hook_resid_post": jb_folder}),
        # gemma_2 derives d_in (2304) and d_sae (16k) from the repo/folder names; overrides size them here
        SCOPE_RELEASE: hub.registry_release(SCOPE_RELEASE, SCOPE_REPO, "pythia-31m",
                                            {"layer_2/width_16k/canonical": scope_folder}, conversion_func="gemma_2",
                                            config_overrides={"d_in": MODELS[large]["hidden"], "d_sae": 2 * PCA_RANK[large],
                                                              "model_name": "pythia-31m"}),
    }
    (root / "registry.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))

    # wrong hook: the SAE of pythia-14m's block 0 output, saved (sae-lens 6 layout) as that of block 1
    wrong = hub.pca_sae(rows[small][0], PCA_RANK[small])
    hub.write_sparsify(root / "wrong-hook" / "layers.1", wrong, k=PCA_RANK[small])
    fvus["wrong-hook/layers.1 on block 1"] = hub.fvu(rows[small][1], wrong)
    return fvus


def build_rehearsal(root: Path, n_documents: int = 240) -> dict:
    """Write the stand-in hub and the experiment config under `root`; returns what was built."""
    root = Path(root)
    documents = hub.corpus_documents(n_documents, seed=0)
    tokenizer = hub.train_bpe_tokenizer(documents)
    rows = {}
    for name, shape in MODELS.items():
        checkpoint = hub.build_neox(root / "src" / name, tokenizer, shape["hidden"], shape["layers"], shape["heads"],
                                    shape["seed"])
        hub.install_repo(hub_cache(root), name, checkpoint)
        rows[name] = hub.residual_rows(checkpoint, tokenizer, documents, CONTEXT_LENGTH)
    _write_dataset(root, documents)
    fvus = _sae_repos(root, rows)
    (root / "config.yaml").write_text(CONFIG.read_text())
    summary = {"root": str(root), "vocab_size": len(tokenizer), "fvu": fvus}
    (root / "built.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    print(json.dumps(build_rehearsal(Path(sys.argv[1])), indent=2))

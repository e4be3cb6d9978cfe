# Input functions and target lists shared by the stage files (rules only live in the stage files).
import glob as _glob
from pathlib import Path as _Path

from featsim.config import comparison_layers, lm_owner, semantic_metrics, semantic_pairing

EXP = config["experiment"]
MODELS = config["models"]
COMPARISONS = config["comparisons"]
PAIRINGS = config["pairings"]
METRICS = config["metrics"]

wildcard_constraints:
    exp=r"[A-Za-z0-9_\-]+",
    model=r"[A-Za-z0-9_\-]+",
    cmp=r"[A-Za-z0-9_\-]+",
    pairing=r"[A-Za-z0-9_\-]+",
    metric=r"[A-Za-z0-9_\-]+",
    concept=r"[A-Za-z0-9_\-]+",
    layer=r"\d+",
    la=r"\d+",
    lb=r"\d+",


def model_layers(model):
    """Layers configured for a model entry."""
    return list(MODELS[model]["layers"])


def cmp_model(cmp, side):
    """Model entry on one side ('a' or 'b') of a comparison."""
    return COMPARISONS[cmp][side]


def cmp_layers(cmp, side):
    """Layers of one side of a comparison."""
    return comparison_layers(config, cmp, side)


def layer_pairs(cmp):
    """Every (layer of a, layer of b) cell of a comparison's grid."""
    return [(la, lb) for la in cmp_layers(cmp, "a") for lb in cmp_layers(cmp, "b")]


def _side_layer(wc, side):
    return wc.la if side == "a" else wc.lb


def codes_for(side):
    """Input function: the code store of one side of a comparison cell."""
    return lambda wc: f"results/{wc.exp}/codes/{cmp_model(wc.cmp, side)}/L{_side_layer(wc, side)}.zarr"


def decoder_for(side):
    """Input function: the decoder matrix of one side of a comparison cell."""
    return lambda wc: f"results/{wc.exp}/saes/{cmp_model(wc.cmp, side)}/L{_side_layer(wc, side)}/decoder.npy"


def sae_meta_for(side):
    """Input function: the SAE metadata json of one side of a comparison cell."""
    return lambda wc: f"results/{wc.exp}/saes/{cmp_model(wc.cmp, side)}/L{_side_layer(wc, side)}/meta.json"


def labels_for(side):
    """Input function: the per-latent labels of one side of a comparison cell."""
    return lambda wc: f"results/{wc.exp}/labels/{cmp_model(wc.cmp, side)}/L{_side_layer(wc, side)}.parquet"


def lm_entry(model):
    """The model entry that owns `model`'s LM (itself, or its lm_from)."""
    return lm_owner(config, model)


def heavy_mem_mb(wildcards, attempt):
    """Memory of a heavy (GPU-capable) job; doubles on each retry after an OOM."""
    return config["resources"]["mem_mb"] * 2 ** (attempt - 1)


def heavy_runtime(wildcards, attempt):
    """Runtime (minutes) of a heavy job; grows with each retry."""
    return config["resources"]["runtime"] * attempt


GPUS = config["resources"]["gpu"]


def concept_files():
    """Concept name (file stem) -> concept yaml path, from semantic.concepts globs."""
    found = {}
    for pattern in config["semantic"]["concepts"]:
        matches = sorted(_glob.glob(pattern)) or ([pattern] if _Path(pattern).exists() else [])
        if not matches:
            raise ValueError(f"config key 'semantic.concepts': pattern {pattern!r} matches no file")
        for path in matches:
            found[_Path(path).stem] = path
    return found


CONCEPTS = concept_files()
SEMANTIC_PAIRING = semantic_pairing(config)
SEMANTIC_METRICS = semantic_metrics(config)


def pairs_files(exp, cmp, pairing):
    """All pairs files of one comparison and pairing variant."""
    return [f"results/{exp}/pairs/{cmp}/{pairing}/A{la}_B{lb}.parquet" for la, lb in layer_pairs(cmp)]


def score_files(exp, cmp, pairing):
    """All score jsons of one comparison and pairing variant (every metric and layer pair)."""
    return [f"results/{exp}/scores/{cmp}/{pairing}/{metric}/A{la}_B{lb}.json"
            for metric in METRICS for la, lb in layer_pairs(cmp)]


def semantic_files(exp, cmp, pairing):
    """All concept-subspace score jsons of one comparison."""
    return [f"results/{exp}/semantic/{cmp}/{concept}/{pairing}/{metric}/A{la}_B{lb}.json"
            for concept in CONCEPTS for metric in SEMANTIC_METRICS for la, lb in layer_pairs(cmp)]


def all_targets():
    """What `snakemake --cores all` builds: summaries, figures and browser pages of every comparison."""
    targets = []
    for cmp in COMPARISONS:
        for pairing in PAIRINGS:
            targets.append(f"results/{EXP}/summary/{cmp}/{pairing}.csv")
    return targets

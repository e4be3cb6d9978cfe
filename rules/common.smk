# Input functions and target lists shared by the stage files (rules only live in the stage files).
import glob as _glob
from pathlib import Path as _Path

from featsim import layout
from featsim.activations import activation_layers, activation_owner, activation_owners, activation_users
from featsim.concepts import concept_paths, concept_root
from featsim.config import comparison_layers, lm_owner, semantic_metrics, semantic_pairing
from featsim.config import lm_owner as _lm_owner_of
from featsim import tokenstores

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
    return lambda wc: layout.fill(layout.CODES, exp=wc.exp, model=cmp_model(wc.cmp, side), layer=_side_layer(wc, side))


def decoder_for(side):
    """Input function: the decoder matrix of one side of a comparison cell."""
    return lambda wc: layout.fill(layout.DECODER, exp=wc.exp, model=cmp_model(wc.cmp, side), layer=_side_layer(wc, side))


def sae_meta_for(side):
    """Input function: the SAE metadata json of one side of a comparison cell."""
    return lambda wc: layout.fill(layout.SAE_META, exp=wc.exp, model=cmp_model(wc.cmp, side), layer=_side_layer(wc, side))


def members_for(side):
    """Input function: the concept-membership table of one side of a concept cell."""
    return lambda wc: layout.fill(layout.MEMBERS, exp=wc.exp, model=cmp_model(wc.cmp, side),
                                  layer=_side_layer(wc, side), concept=wc.concept)


def labels_for(side):
    """Input function: the per-latent labels of one side of a comparison cell."""
    return lambda wc: layout.fill(layout.LABELS, exp=wc.exp, model=cmp_model(wc.cmp, side), layer=_side_layer(wc, side))


def lm_entry(model):
    """The model entry that owns `model`'s LM (itself, or its lm_from)."""
    return lm_owner(config, model)


def heavy_mem_mb(wildcards, attempt):
    """Memory of a heavy (GPU-capable) job; doubles on each retry after an OOM."""
    return config["resources"]["mem_mb"] * 2 ** (attempt - 1)


def heavy_runtime(wildcards, attempt):
    """Runtime (minutes) of a heavy job; grows with each retry."""
    return config["resources"]["runtime"] * attempt


SPLIT = {"heldout_fraction": config["data"]["heldout_fraction"], "seed": config["data"]["seed"]}
"""The held-out split (featsim.split): labels read the held-out token sequences, correlations the rest."""

GPUS = config["resources"]["gpu"]
HEAVY_THREADS = config["resources"]["threads"]


def concept_files():
    """Concept id (file stem) -> concept yaml, from the semantic.concepts globs; every file validated now.

    Patterns are relative to the working directory, or to the workflow when they match nothing there.
    """
    patterns = config["semantic"]["concepts"]
    root = concept_root(patterns, _Path.cwd(), workflow.basedir)
    return {concept: str(path) for concept, path in concept_paths(patterns, root).items()}


CONCEPTS = concept_files()
SEMANTIC_PAIRING = semantic_pairing(config)
PRIMARY_PAIRING = SEMANTIC_PAIRING
SEMANTIC_METRICS = semantic_metrics(config)


def pairs_files(exp, cmp, pairing):
    """All pairs files of one comparison and pairing variant."""
    return [layout.fill(layout.PAIRS, exp=exp, cmp=cmp, pairing=pairing, la=la, lb=lb) for la, lb in layer_pairs(cmp)]


def score_files(exp, cmp, pairing):
    """All score jsons of one comparison and pairing variant (every metric and layer pair)."""
    return [layout.fill(layout.SCORE, exp=exp, cmp=cmp, pairing=pairing, metric=metric, la=la, lb=lb)
            for metric in METRICS for la, lb in layer_pairs(cmp)]


def semantic_files(exp, cmp, pairing):
    """All concept-subspace score jsons of one comparison."""
    return [layout.fill(layout.CONCEPT_SCORE, exp=exp, cmp=cmp, concept=concept, pairing=pairing, metric=metric, la=la, lb=lb)
            for concept in CONCEPTS for metric in SEMANTIC_METRICS for la, lb in layer_pairs(cmp)]


def all_targets():
    """What `snakemake --cores all` builds: summaries, figures, browser pages and overviews."""
    targets = []
    for pairing in PAIRINGS:
        targets.append(layout.fill(layout.OVERVIEW, exp=EXP, pairing=pairing))
        targets.append(layout.fill(layout.OVERVIEW_PAIRS_FIGURE, exp=EXP, pairing=pairing))
        targets += [layout.fill(layout.OVERVIEW_FIGURE, exp=EXP, pairing=pairing, metric=metric) for metric in METRICS]
        for cmp in COMPARISONS:
            targets.append(layout.fill(layout.SUMMARY, exp=EXP, cmp=cmp, pairing=pairing))
            targets.append(layout.fill(layout.PAIRS_FIGURE, exp=EXP, cmp=cmp, pairing=pairing, figure="n"))
            if pairing == PRIMARY_PAIRING:  # the pair browser shows the semantic (primary) pairing variant
                targets += [layout.fill(layout.BROWSER, exp=EXP, cmp=cmp, pairing=pairing, la=la, lb=lb) for la, lb in layer_pairs(cmp)]
    if CONCEPTS:
        sp = SEMANTIC_PAIRING
        targets += [layout.fill(layout.CONCEPT_OVERVIEW_FIGURE, exp=EXP, pairing=sp, metric=metric) for metric in SEMANTIC_METRICS]
        for cmp in COMPARISONS:
            targets.append(layout.fill(layout.CONCEPT_SUMMARY, exp=EXP, cmp=cmp, pairing=sp))
            targets += [layout.fill(layout.CONCEPT_GRID_FIGURE, exp=EXP, cmp=cmp, pairing=sp, metric=metric) for metric in SEMANTIC_METRICS]
        if config["data"]["source"] == "toy":
            targets += [layout.fill(layout.MEMBER_ACCURACY, exp=EXP, model=model, layer=layer) for model, layer in MEMBER_LAYERS]
        targets += concept_evidence_targets(EXP)
        targets += steering_targets(EXP)
    return targets


MEMBER_LAYERS = sorted({(cmp_model(cmp, side), layer) for cmp in COMPARISONS for side in ("a", "b")
                        for layer in cmp_layers(cmp, side)})
"""Every (model, layer) a comparison reads: where concept membership is computed."""


def semantic_cell_inputs(cmp):
    """Input function of `semantic_<cmp>`: per-cell lists (in layer_pairs order) plus the concept file."""
    a, b = cmp_model(cmp, "a"), cmp_model(cmp, "b")

    def inputs(wc):
        cells = layer_pairs(cmp)
        junk = PAIRINGS[wc.pairing].get("junk_tokens")
        return {
            "codes_a": [layout.fill(layout.CODES, exp=wc.exp, model=a, layer=la) for la, _ in cells],
            "codes_b": [layout.fill(layout.CODES, exp=wc.exp, model=b, layer=lb) for _, lb in cells],
            "labels_a": [layout.fill(layout.LABELS, exp=wc.exp, model=a, layer=la) for la, _ in cells],
            "labels_b": [layout.fill(layout.LABELS, exp=wc.exp, model=b, layer=lb) for _, lb in cells],
            "members_a": [layout.fill(layout.MEMBERS, exp=wc.exp, model=a, layer=la, concept=wc.concept) for la, _ in cells],
            "members_b": [layout.fill(layout.MEMBERS, exp=wc.exp, model=b, layer=lb, concept=wc.concept) for _, lb in cells],
            "decoder_a": [layout.fill(layout.DECODER, exp=wc.exp, model=a, layer=la) for la, _ in cells],
            "decoder_b": [layout.fill(layout.DECODER, exp=wc.exp, model=b, layer=lb) for _, lb in cells],
            "concept": CONCEPTS[wc.concept],
            **comparison_rows_inputs(wc.exp, cmp),  # the held-out split of its rows (and the aligned rows)
            "junk_tokens": [junk] if isinstance(junk, str) else [],  # a junk file is an input: edits rebuild
        }

    return inputs


def semantic_cell_outputs(cmp, **values):
    """Per layer cell of a comparison (layer_pairs order): its concept pairs and, per metric, the score json and
    null array. `values` fill wildcards (exp, concept, pairing); the rest stay wildcards."""
    cells = []
    for la, lb in layer_pairs(cmp):
        scores = {metric: layout.fill(layout.CONCEPT_SCORE, cmp=cmp, metric=metric, la=la, lb=lb, **values)
                  for metric in SEMANTIC_METRICS}
        cells.append({"layer_a": la, "layer_b": lb,
                      "pairs": layout.fill(layout.CONCEPT_PAIRS, cmp=cmp, la=la, lb=lb, **values),
                      "scores": {metric: [score, layout.sibling_template(score, layout.NULL)]
                                 for metric, score in scores.items()}})
    return cells


# ---------------------------------------------------------------- toy route


def toy_sae_models():
    """Model entries whose SAEs are trained here (sae.source toy): one `toy_sae_<model>` rule each."""
    return [model for model, entry in MODELS.items() if entry["sae"]["source"] == "toy"]


# ---------------------------------------------------------------- activations and codes



def acts_store(exp, model, layer):
    """The activation store that model entry `model` reads at `layer` (its LM owner's when shared)."""
    return layout.fill(layout.ACTS, exp=exp, model=activation_owner(config, model), layer=layer)


def gpu_request(model):
    """GPUs for a model's GPU-capable jobs: resources.gpu unless the entry is pinned to the CPU (at least one
    when it is pinned to cuda, which cannot run without)."""
    return device_gpus(MODELS[model]["device"])


def device_gpus(device):
    """GPUs a job on `device` (auto, cpu, cuda) requests: none on cpu, resources.gpu on auto, >= 1 on cuda."""
    return {"cpu": 0, "cuda": max(GPUS, 1)}.get(device, GPUS)


def gpu_job_resources(gpus):
    """Placement of a GPU-capable job: with GPUs, their count and resources.gpu_partition (what the SLURM
    executor turns into --gpus and -p); without, no GPU and resources.cpu_partition, or nothing, so the
    profile's default partition applies."""
    if gpus:
        return {"gpu": gpus, "slurm_partition": config["resources"]["gpu_partition"]}
    cpu_partition = config["resources"]["cpu_partition"]
    return {"slurm_partition": cpu_partition} if cpu_partition else {}


def cuda_pinned_resources(*devices):
    """Placement of a CPU-first job (score, semantic): a GPU only when one of its device settings is cuda;
    on auto it stays where CPU rules go (nulls and concept subsets are CPU work; a GPU there is optional)."""
    return gpu_job_resources(device_gpus("cuda")) if "cuda" in devices else {}


def codes_gpu_resources():
    """Placement of `codes` jobs (one rule for every model): fixed when all models agree; per model when some
    are pinned to the CPU (those jobs then go to resources.cpu_partition, or the cluster's default partition:
    a resource set per job cannot fall back to the profile's default)."""
    requests = {gpu_request(model) for model in MODELS}
    if len(requests) == 1:
        return gpu_job_resources(requests.pop())
    return {"gpu": lambda wc: gpu_request(wc.model),
            "slurm_partition": lambda wc: gpu_job_resources(gpu_request(wc.model)).get("slurm_partition")}


def lm_dirs(exp, model):
    """The LM checkpoint directory of a model entry when it is a file here (toy, local); hf LMs: none."""
    owner = _lm_owner_of(config, model)
    lm = MODELS[owner]["lm"]
    return {"toy": [layout.fill(layout.TOY_LM, exp=exp, model=owner)], "local": [lm.get("path", "")]}.get(lm["source"], [])


def sae_dirs(exp, model, layers):
    """SAE directories that are files of this workflow (toy) or of the user (local), so changes rebuild;
    for the neuron baseline, the LM checkpoint whose W_out is the decoder."""
    sae = MODELS[model]["sae"]
    if sae["source"] == "toy":
        return [layout.fill(layout.TOY_SAE, exp=exp, model=model, layer=layer) for layer in layers]
    if sae["source"] == "local":
        return [sae["path"].format(layer=layer) for layer in layers]
    if sae["source"] == "neurons":
        return lm_dirs(exp, model)
    return []


def activations_inputs(owner):
    """Input function of `activations_<owner>`: tokens, the LM checkpoint and the SAE directories."""
    def inputs(wc):
        lm_dir = lm_dirs(wc.exp, owner)
        saes = [d for user, entry in activation_users(config, owner).items()
                for d in sae_dirs(wc.exp, user, entry["layers"])]
        return {"tokens": tokens_of(wc.exp, owner), "lm": lm_dir,
                "saes": [d for d in dict.fromkeys(saes) if d not in lm_dir]}
    return inputs


def activations_outputs(owner):
    """One store per layer; temporary unless keep_activations."""
    stores = [directory(layout.fill(layout.ACTS, model=owner, layer=layer)) for layer in activation_layers(config, owner)]
    return stores if config["keep_activations"] else [temp(store) for store in stores]


# ---------------------------------------------------------------- tokens


def tokens_inputs(wc):
    """Input function: the toy corpus directory (toy route) or the local document files (edits rebuild)."""
    data = config["data"]
    if data["source"] == "toy":
        return {"corpus": layout.fill(layout.TOY_CORPUS, exp=wc.exp)}
    if data["source"] == "local":
        return {"documents": sorted(p for pattern in data["local"]["paths"] for p in _glob.glob(pattern))}
    return {}


def tokenizer_models():
    """The LM slices that define the tokenizer of each model reading the experiment's token store (what the
    shared-tokenizer check reads)."""
    return {name: ({"lm": entry["lm"]} if "lm" in entry else {"lm_from": entry["lm_from"]})
            for name, entry in MODELS.items() if TOKEN_STORES[name] == tokenstores.EXPERIMENT_STORE}


TOKEN_STORES = tokenstores.token_store_names(config)
"""Model entry -> the token store it reads (featsim.tokenstores: one per tokenizer of an aligned comparison)."""
FURTHER_STORES = tokenstores.further_stores(config)
"""Store name -> the models reading it, for the stores besides results/{exp}/tokens.zarr."""


def tokens_of(exp, model):
    """The token store a model entry reads (activations, code rows, labels)."""
    return tokenstores.store_path(exp, TOKEN_STORES[model])


def comparison_rows_inputs(exp, cmp):
    """The token stores (and alignment) that say which rows a comparison correlates over."""
    return tokenstores.comparison_row_inputs(config, exp, cmp)


def comparison_rows_input(wc):
    """Input function (unpacked) of the per-cell comparison rules: `tokens`, and `tokens_b` + `alignment` for a
    comparison across token stores."""
    return comparison_rows_inputs(wc.exp, wc.cmp)


def further_tokens_inputs(wc):
    """Input function of `tokens_further`: the experiment store (its documents), the documents and the LM
    directory holding the tokenizer (toy, local)."""
    owner = FURTHER_STORES[wc.store][0]
    return {**tokens_inputs(wc), "experiment_tokens": layout.fill(layout.TOKENS, exp=wc.exp),
            "lm": lm_dirs(wc.exp, _lm_owner_of(config, owner))}


def alignment_store_input(side):
    """Input function of `alignment`: the token store of one side."""
    return lambda wc: tokenstores.store_path(wc.exp, wc.store_a if side == "a" else wc.store_b)


# ---------------------------------------------------------------- concept evidence (rules/concepts.smk)


CONTRASTS = {cmp: list(entry.get("contrast") or []) for cmp, entry in COMPARISONS.items()}
"""Comparison -> the comparisons it is tested against (config comparisons.<name>.contrast)."""


def concept_label_files(exp):
    """Concept labels of every (model, layer) a comparison reads, in MEMBER_LAYERS order."""
    return [layout.fill(layout.CONCEPT_LABELS, exp=exp, model=model, layer=layer) for model, layer in MEMBER_LAYERS]


def concept_evidence_targets(exp):
    """Concept agreement and contrast tables of every pairing variant, and the shared-concepts answer."""
    targets = [layout.fill(layout.EVIDENCE_TABLE, exp=exp, table=table, pairing=pairing) for pairing in PAIRINGS
               for table in ("concept_agreement", "contrasts")]
    return targets + [layout.fill(layout.SHARED_CONCEPTS, exp=exp), layout.sibling_template(layout.fill(layout.SHARED_CONCEPTS, exp=exp), layout.HTML)]


def did_comparisons():
    """Comparisons whose best correlations a contrast reads (X and Y of a contrast sharing side A)."""
    return sorted({name for x, others in CONTRASTS.items() for y in others
                   if cmp_model(x, "a") == cmp_model(y, "a") for name in (x, y)})


def evidence_comparisons():
    """The comparison slice the concept evidence depends on: sides, layers, cells and contrasts."""
    return {cmp: {"a": cmp_model(cmp, "a"), "b": cmp_model(cmp, "b"), "layers_a": cmp_layers(cmp, "a"),
                  "layers_b": cmp_layers(cmp, "b"), "cells": [list(cell) for cell in layer_pairs(cmp)],
                  "contrast": CONTRASTS[cmp]} for cmp in COMPARISONS}


def concept_evidence_inputs(wc):
    """Input function of `concept_evidence`: concept labels, pairs of every comparison (`pairs__<cmp>`) and the
    correlation stores the difference-in-differences reads (`corr__<cmp>`), each in layer_pairs order."""
    inputs = {"labels": concept_label_files(wc.exp)}
    for cmp in COMPARISONS:
        inputs[f"pairs__{cmp}"] = pairs_files(wc.exp, cmp, wc.pairing)
    for cmp in did_comparisons():
        inputs[f"corr__{cmp}"] = [layout.fill(layout.CORR, exp=wc.exp, cmp=cmp, la=la, lb=lb) for la, lb in layer_pairs(cmp)]
    return inputs


# ---------------------------------------------------------------- steering (rules/steering.smk)


STEERING = config["steering"]  # checked at start-up (featsim.preflight.check_steering)
STEERING_CONCEPTS = sorted(STEERING["concepts"] or CONCEPTS)


def steering_cells(cmp):
    """Layer cells a comparison is steered in (steering.layer_pairs, default every cell), in layer_pairs order."""
    chosen = STEERING["layer_pairs"]
    return [cell for cell in layer_pairs(cmp) if chosen is None or list(cell) in [list(c) for c in chosen]]


def steering_concept_outputs(cmp, **values):
    """Per steered cell (steering_cells order): concept -> its json. `values` fill wildcards (exp); the rest stay."""
    return [{concept: layout.fill(layout.STEERING_CONCEPT, cmp=cmp, concept=concept, la=la, lb=lb, **values)
             for concept in STEERING_CONCEPTS} for la, lb in steering_cells(cmp)]


def steering_side(model):
    """What the steering job needs to load a model entry's LM (its lm_from owner's LM) and its SAEs."""
    owner = lm_entry(model)
    return {"model": model, "lm_owner": owner, "lm": MODELS[owner]["lm"], "dtype": MODELS[model]["dtype"],
            "sae": MODELS[model]["sae"]}


def steering_later_cells(cmp):
    """Cells of a comparison after some steered cell on both sides: their SAEs are read out (downstream effects)."""
    steered = steering_cells(cmp)
    return [(la2, lb2) for la2, lb2 in layer_pairs(cmp) if any(la2 > la and lb2 > lb for la, lb in steered)]


def steering_inputs(cmp):
    """Input function of `steering_<cmp>`: per-cell lists in steering_cells order; concept tables cell-major."""
    a, b = cmp_model(cmp, "a"), cmp_model(cmp, "b")

    def inputs(wc):
        cells, later = steering_cells(cmp), steering_later_cells(cmp)
        return {
            "tokens": layout.fill(layout.TOKENS, exp=wc.exp),
            "lm": list(dict.fromkeys(lm_dirs(wc.exp, a) + lm_dirs(wc.exp, b))),
            "decoder_a": [layout.fill(layout.DECODER, exp=wc.exp, model=a, layer=la) for la, _ in cells],
            "decoder_b": [layout.fill(layout.DECODER, exp=wc.exp, model=b, layer=lb) for _, lb in cells],
            "meta_a": [layout.fill(layout.SAE_META, exp=wc.exp, model=a, layer=la) for la, _ in cells],
            "meta_b": [layout.fill(layout.SAE_META, exp=wc.exp, model=b, layer=lb) for _, lb in cells],
            "pairs": [layout.fill(layout.PAIRS, exp=wc.exp, cmp=cmp, pairing=SEMANTIC_PAIRING, la=la, lb=lb) for la, lb in cells],
            # concept latents of A (featsim.steering_transfer.concept_latents): its concept labels (no junk list)
            "labels_a": [layout.fill(layout.CONCEPT_LABELS, exp=wc.exp, model=a, layer=la) for la, _ in cells],
            "concept_files": [CONCEPTS[c] for c in STEERING_CONCEPTS],
            # later cells read out for downstream effects (steering_later_cells order) and their SAEs
            "later_meta_a": [layout.fill(layout.SAE_META, exp=wc.exp, model=a, layer=la) for la, _ in later],
            "later_meta_b": [layout.fill(layout.SAE_META, exp=wc.exp, model=b, layer=lb) for _, lb in later],
            "later_labels_a": [layout.fill(layout.CONCEPT_LABELS, exp=wc.exp, model=a, layer=la) for la, _ in later],
            "later_labels_b": [layout.fill(layout.CONCEPT_LABELS, exp=wc.exp, model=b, layer=lb) for _, lb in later],
            "later_pairs": [layout.fill(layout.PAIRS, exp=wc.exp, cmp=cmp, pairing=SEMANTIC_PAIRING, la=la, lb=lb)
                            for la, lb in later],
            "later_sae": list(dict.fromkeys(sae_dirs(wc.exp, a, sorted({la for la, _ in later}))
                                            + sae_dirs(wc.exp, b, sorted({lb for _, lb in later})))),
        }

    return inputs


def steering_targets(exp):
    """Summary tables and figures of every steered comparison."""
    return [path for cmp in STEERING["comparisons"] for path in (
        layout.fill(layout.STEERING_SUMMARY, exp=exp, cmp=cmp), layout.fill(layout.STEERING_SPECIFICITY, exp=exp, cmp=cmp),
        layout.fill(layout.STEERING_FIGURE, exp=exp, cmp=cmp, figure="effects"), layout.fill(layout.STEERING_FIGURE, exp=exp, cmp=cmp, figure="matrix"),
        layout.fill(layout.STEERING_DOWNSTREAM, exp=exp, cmp=cmp),
        layout.fill(layout.STEERING_FIGURE, exp=exp, cmp=cmp, figure="downstream"))]

# Activations: one LM forward pass per model entry writes every layer its SAEs need (at the hooks named in
# the SAEs' own metadata); entries with lm_from reuse their LM owner's stores, except MLP-neuron entries
# (sae.source: neurons, hook blocks.L.mlp.hook_post), which get their own. Codes: each layer's SAE codes
# (sparse), decoder and quality, from the stored activations (for neurons: the activations and W_out rows).
#
# A rule's outputs cannot depend on a wildcard, and each model has its own layer list, so there is one
# activations rule per model entry that runs a forward pass: `activations_<model>`.
from featsim.activations import activation_layers, activation_owner, activation_owners, activation_users
from featsim.config import lm_owner as _lm_owner_of


def acts_store(exp, model, layer):
    """The activation store that model entry `model` reads at `layer` (its LM owner's when shared)."""
    return f"results/{exp}/acts/{activation_owner(config, model)}/L{layer}.zarr"


def gpu_request(model):
    """GPUs for a model's GPU-capable jobs: resources.gpu unless the entry is pinned to the CPU."""
    return 0 if MODELS[model]["device"] == "cpu" else GPUS


def lm_dirs(exp, model):
    """The LM checkpoint directory of a model entry when it is a file here (toy, local); hf LMs: none."""
    owner = _lm_owner_of(config, model)
    lm = MODELS[owner]["lm"]
    return {"toy": [f"results/{exp}/toy/lm/{owner}"], "local": [lm.get("path", "")]}.get(lm["source"], [])


def sae_dirs(exp, model, layers):
    """SAE directories that are files of this workflow (toy) or of the user (local), so changes rebuild;
    for the neuron baseline, the LM checkpoint whose W_out is the decoder."""
    sae = MODELS[model]["sae"]
    if sae["source"] == "toy":
        return [f"results/{exp}/toy/sae/{model}/L{layer}" for layer in layers]
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
        return {"tokens": f"results/{wc.exp}/tokens.zarr", "lm": lm_dir,
                "saes": [d for d in dict.fromkeys(saes) if d not in lm_dir]}
    return inputs


def activations_outputs(owner):
    """One store per layer; temporary unless keep_activations."""
    stores = [directory(f"results/{{exp}}/acts/{owner}/L{layer}.zarr") for layer in activation_layers(config, owner)]
    return stores if config["keep_activations"] else [temp(store) for store in stores]


for _owner in activation_owners(config):

    rule:
        name:
            f"activations_{_owner}"
        input:
            unpack(activations_inputs(_owner)),
        output:
            activations_outputs(_owner),
        log:
            f"results/{{exp}}/logs/activations/{_owner}.log",
        params:
            model=_owner,
            lm_owner=_lm_owner_of(config, _owner),
            lm=MODELS[_lm_owner_of(config, _owner)]["lm"],
            runtime={key: MODELS[_owner][key] for key in ("dtype", "device", "batch_size")},
            layers=activation_layers(config, _owner),
            users=activation_users(config, _owner),
            legacy={"layer_offset": config["legacy"]["layer_offset"]},
        threads: 4
        resources:
            mem_mb=heavy_mem_mb,
            runtime=heavy_runtime,
            gpu=gpu_request(_owner),
        conda:
            "../envs/featsim.yaml"
        script:
            "../workflow/scripts/activations.py"


rule codes:
    input:
        acts=lambda wc: acts_store(wc.exp, wc.model, wc.layer),
        sae=lambda wc: sae_dirs(wc.exp, wc.model, [wc.layer]),
    output:
        codes=directory("results/{exp}/codes/{model}/L{layer}.zarr"),
        decoder="results/{exp}/saes/{model}/L{layer}/decoder.npy",
        meta="results/{exp}/saes/{model}/L{layer}/meta.json",
    log:
        "results/{exp}/logs/codes/{model}/L{layer}.log",
    params:
        sae=lambda wc: MODELS[wc.model]["sae"],
        activation=lambda wc: MODELS[wc.model]["activation"],
        device=lambda wc: MODELS[wc.model]["device"],
        legacy={key: config["legacy"][key] for key in ("layer_offset", "keep_special_tokens")},
    threads: 4
    resources:
        mem_mb=heavy_mem_mb,
        runtime=heavy_runtime,
        gpu=lambda wc: gpu_request(wc.model),
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/codes.py"

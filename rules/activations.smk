# Activations: one LM forward pass per model entry writes every layer its SAEs need (at the hooks named in
# the SAEs' own metadata); entries with lm_from reuse their LM owner's stores, except MLP-neuron entries
# (sae.source: neurons, hook blocks.L.mlp.hook_post), which get their own. Codes: each layer's SAE codes
# (sparse), decoder and quality, from the stored activations (for neurons: the activations and W_out rows).
#
# A rule's outputs cannot depend on a wildcard, and each model has its own layer list, so there is one
# activations rule per model entry that runs a forward pass: `activations_<model>`.
for _owner in activation_owners(config):

    rule:
        name:
            f"activations_{_owner}"
        input:
            unpack(activations_inputs(_owner)),
        output:
            activations_outputs(_owner),
        log:
            layout.log("activations", f"{_owner}"),
        params:
            model=_owner,
            lm_owner=_lm_owner_of(config, _owner),
            lm=MODELS[_lm_owner_of(config, _owner)]["lm"],
            runtime={key: MODELS[_owner][key] for key in ("dtype", "device", "batch_size")},
            layers=activation_layers(config, _owner),
            users=activation_users(config, _owner),
            legacy={"layer_offset": config["legacy"]["layer_offset"]},
        threads: HEAVY_THREADS
        resources:
            mem_mb=heavy_mem_mb,
            runtime=heavy_runtime,
            **gpu_job_resources(gpu_request(_owner)),
        conda:
            "../envs/featsim.yaml"
        script:
            "../workflow/scripts/activations.py"


rule codes:
    input:
        acts=lambda wc: acts_store(wc.exp, wc.model, wc.layer),
        sae=lambda wc: sae_dirs(wc.exp, wc.model, [wc.layer]),
    output:
        codes=directory(layout.CODES),
        decoder=layout.DECODER,
        meta=layout.SAE_META,
    log:
        layout.log("codes", "{model}/L{layer}"),
    params:
        sae=lambda wc: MODELS[wc.model]["sae"],
        activation=lambda wc: MODELS[wc.model]["activation"],
        device=lambda wc: MODELS[wc.model]["device"],
        legacy={key: config["legacy"][key] for key in ("layer_offset", "keep_special_tokens")},
    threads: HEAVY_THREADS
    resources:
        mem_mb=heavy_mem_mb,
        runtime=heavy_runtime,
        **codes_gpu_resources(),
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/codes.py"

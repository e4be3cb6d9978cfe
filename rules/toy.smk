# Toy route (data.source toy): story corpus + ground truth + tokenizer, toy LMs, toy TopK SAEs.
# One target per corpus, LM and (model, layer) SAE, so nothing is trained twice; each rule's params are
# only the config slice it depends on. Jobs run single-threaded: these models are so small that per-op
# overhead dominates, and two 1-thread jobs on 2 cores beat one 2-thread job. One job trains every layer's
# SAE of a model entry (`toy_sae_<model>`: outputs cannot depend on a wildcard): importing sae-lens costs
# more CPU than training one toy SAE, and training several in one process gives bit-identical weights.


rule toy_corpus:
    output:
        directory(layout.TOY_CORPUS),
    log:
        layout.log("toy_corpus", "corpus"),
    params:
        toy=config["data"].get("toy", {}),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/toy_corpus.py"


rule toy_lm:
    input:
        corpus=layout.TOY_CORPUS,
    output:
        directory(layout.TOY_LM),
    log:
        layout.log("toy_lm", "{model}"),
    params:
        toy=lambda wc: MODELS[wc.model]["lm"].get("toy", {}),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/toy_lm.py"


for _model in toy_sae_models():

    rule:
        name:
            f"toy_sae_{_model}"
        input:
            corpus=layout.TOY_CORPUS,
            lm=layout.fill(layout.TOY_LM, model=lm_entry(_model)),
        output:
            [directory(layout.fill(layout.TOY_SAE, model=_model, layer=layer))
             for layer in model_layers(_model)],
        log:
            layout.log("toy_sae", _model),
        params:
            model=_model,
            layers=model_layers(_model),
            toy=MODELS[_model]["sae"].get("toy", {}),
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 4000 * attempt,
            runtime=lambda wc, attempt: 30 * attempt,
        conda:
            "../envs/featsim.yaml"
        script:
            "../workflow/scripts/toy_sae.py"

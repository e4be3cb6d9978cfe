# Toy route (data.source toy): story corpus + ground truth + tokenizer, toy LMs, toy TopK SAEs.
# One target per corpus, LM and (model, layer) SAE, so nothing is trained twice; each rule's params are
# only the config slice it depends on. Jobs run single-threaded: these models are so small that per-op
# overhead dominates, and two 1-thread jobs on 2 cores beat one 2-thread job.


rule toy_corpus:
    output:
        directory("results/{exp}/toy/corpus"),
    log:
        "results/{exp}/logs/toy_corpus/corpus.log",
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
        corpus="results/{exp}/toy/corpus",
    output:
        directory("results/{exp}/toy/lm/{model}"),
    log:
        "results/{exp}/logs/toy_lm/{model}.log",
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


rule toy_sae:
    input:
        corpus="results/{exp}/toy/corpus",
        lm=toy_lm_dir,
    output:
        directory("results/{exp}/toy/sae/{model}/L{layer}"),
    log:
        "results/{exp}/logs/toy_sae/{model}/L{layer}.log",
    params:
        toy=lambda wc: MODELS[wc.model]["sae"].get("toy", {}),
        lm=lambda wc: toy_lm_slice(wc.model),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/toy_sae.py"

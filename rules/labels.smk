# Labels: per latent its firing count, mean activations and top-k activating positions with token, word and context,
# over the held-out token sequences when data.heldout_fraction > 0 (featsim.split).


rule labels:
    input:
        codes=layout.CODES,
        tokens=lambda wc: tokens_of(wc.exp, wc.model),  # the model's own token store
    output:
        labels=layout.LABELS,
    log:
        layout.log("labels", "{model}/L{layer}"),
    params:
        labels=lambda wc: config["labels"],
        split=SPLIT,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/labels.py"

# Labels: per latent its firing count, mean activations and top-k activating positions with token, word and context,
# over the held-out token sequences when data.heldout_fraction > 0 (featsim.split).


rule labels:
    input:
        codes="results/{exp}/codes/{model}/L{layer}.zarr",
        tokens="results/{exp}/tokens.zarr",
    output:
        labels="results/{exp}/labels/{model}/L{layer}.parquet",
    log:
        "results/{exp}/logs/labels/{model}/L{layer}.log",
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

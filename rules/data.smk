# Tokens: documents (toy held-out stories, a Hugging Face dataset or local files) -> token rows + keep-mask,
# with the one tokenizer all models share (checked here).


rule tokens:
    input:
        unpack(tokens_inputs),
    output:
        tokens=directory("results/{exp}/tokens.zarr"),
    log:
        "results/{exp}/logs/tokens/tokens.log",
    params:
        data={key: value for key, value in config["data"].items() if key != "heldout_fraction"},  # split: later
        models=tokenizer_models(),
        legacy={"keep_special_tokens": config["legacy"]["keep_special_tokens"]},
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/tokens.py"

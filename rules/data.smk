# Tokens: documents (toy held-out stories, a Hugging Face dataset or local files) -> token rows + keep-mask,
# with the one tokenizer all models share (checked here).
import glob as _tokens_glob


def tokens_inputs(wc):
    """Input function: the toy corpus directory (toy route) or the local document files (edits rebuild)."""
    data = config["data"]
    if data["source"] == "toy":
        return {"corpus": f"results/{wc.exp}/toy/corpus"}
    if data["source"] == "local":
        return {"documents": sorted(p for pattern in data["local"]["paths"] for p in _tokens_glob.glob(pattern))}
    return {}


def tokenizer_models():
    """The LM slices that define each model's tokenizer (what the shared-tokenizer check reads)."""
    return {name: ({"lm": entry["lm"]} if "lm" in entry else {"lm_from": entry["lm_from"]})
            for name, entry in MODELS.items()}


rule tokens:
    input:
        unpack(tokens_inputs),
    output:
        tokens=directory("results/{exp}/tokens.zarr"),
    log:
        "results/{exp}/logs/tokens/tokens.log",
    params:
        data=config["data"],
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

# Tokens: documents (toy held-out stories, a Hugging Face dataset or local files) -> token rows + keep-mask,
# with the one tokenizer all models of the experiment store share (checked here). A model whose tokenizer
# differs and that a comparison with `align` reads gets a store of its own (featsim.tokenstores): the same
# documents, tokenized by its tokenizer, with character spans; `alignment` pairs the rows of two stores that
# end a token at the same character of the same document (featsim.alignment).


rule tokens:
    input:
        unpack(tokens_inputs),
    output:
        tokens=directory(layout.TOKENS),
    log:
        layout.log("tokens", "tokens"),
    params:
        data={key: value for key, value in config["data"].items() if key != "heldout_fraction"},  # split: later
        models=tokenizer_models(),
        legacy={"keep_special_tokens": config["legacy"]["keep_special_tokens"]},
        **({"spans": True} if FURTHER_STORES else {}),  # only then: same-tokenizer experiments keep their params
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/tokens.py"


rule tokens_further:
    input:
        unpack(further_tokens_inputs),
    output:
        tokens=directory(layout.TOKENIZER_TOKENS),
    log:
        layout.log("tokens", "{store}"),
    wildcard_constraints:
        store="|".join(FURTHER_STORES) or "(?!)",
    params:
        data={key: value for key, value in config["data"].items() if key != "heldout_fraction"},
        owner=lambda wc: _lm_owner_of(config, FURTHER_STORES[wc.store][0]),
        lm=lambda wc: MODELS[_lm_owner_of(config, FURTHER_STORES[wc.store][0])]["lm"],
        legacy={"keep_special_tokens": config["legacy"]["keep_special_tokens"]},
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/tokens_further.py"


rule alignment:
    input:
        tokens_a=alignment_store_input("a"),
        tokens_b=alignment_store_input("b"),
    output:
        alignment=directory(layout.ALIGNMENT),
    log:
        layout.log("alignment", "{store_a}/{store_b}/{mode}"),
    wildcard_constraints:
        store_a=r"[A-Za-z0-9_\-]+",
        store_b=r"[A-Za-z0-9_\-]+",
        mode="token|word",
    params:
        min_share=config["alignment"]["min_share"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/alignment.py"

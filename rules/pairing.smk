# Pairing: named variants (config `pairings`) turn a correlation result into latent pairs + filter diagnostics.


rule pair:
    input:
        corr=layout.CORR,
        labels_a=labels_for("a"),
        labels_b=labels_for("b"),
        # a junk list given as a file is an input, so editing the file rebuilds this variant only
        junk_tokens=lambda wc: [PAIRINGS[wc.pairing]["junk_tokens"]]
        if isinstance(PAIRINGS[wc.pairing].get("junk_tokens"), str)
        else [],
    output:
        pairs=layout.PAIRS,
        diagnostics=layout.sibling_template(layout.PAIRS, layout.DIAGNOSTICS),
    log:
        layout.log("pair", "{cmp}/{pairing}/A{la}_B{lb}"),
    params:
        variant=lambda wc: config["pairings"][wc.pairing],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/pair.py"

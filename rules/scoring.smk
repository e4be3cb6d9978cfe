# Scoring: every metric and its shuffled-pairing null per (comparison, pairing variant, layer pair).
# One job per cell writes one json + null.npy per metric (a process start per metric would dominate the
# toy run). params carry only `null`, the metric list and their options, so editing `metrics` rebuilds
# only scores and what reads them.


rule score:
    input:
        pairs=layout.PAIRS,
        decoder_a=decoder_for("a"),
        decoder_b=decoder_for("b"),
    output:
        scores=[layout.fill(layout.SCORE, metric=metric) for metric in METRICS],
        nulls=[layout.sibling_template(layout.fill(layout.SCORE, metric=metric), layout.NULL) for metric in METRICS],
    log:
        layout.log("score", "{cmp}/{pairing}/A{la}_B{lb}"),
    params:
        null=lambda wc: config["null"],
        metrics=METRICS,
        options=lambda wc: {metric: config["metric_options"].get(metric) or {} for metric in METRICS},
        alpha=lambda wc: config["alpha"],
    threads: HEAVY_THREADS
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
        **cuda_pinned_resources(config["null"]["device"]),
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/score.py"

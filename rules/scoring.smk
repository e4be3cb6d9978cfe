# Scoring: every metric and its shuffled-pairing null per (comparison, pairing variant, layer pair).
# One job per cell writes one json + null.npy per metric (a process start per metric would dominate the
# toy run). params carry only `null`, the metric list and their options, so editing `metrics` rebuilds
# only scores and what reads them.


rule score:
    input:
        pairs="results/{exp}/pairs/{cmp}/{pairing}/A{la}_B{lb}.parquet",
        decoder_a=decoder_for("a"),
        decoder_b=decoder_for("b"),
    output:
        scores=expand("results/{{exp}}/scores/{{cmp}}/{{pairing}}/{metric}/A{{la}}_B{{lb}}.json", metric=METRICS),
        nulls=expand("results/{{exp}}/scores/{{cmp}}/{{pairing}}/{metric}/A{{la}}_B{{lb}}.null.npy", metric=METRICS),
    log:
        "results/{exp}/logs/score/{cmp}/{pairing}/A{la}_B{lb}.log",
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

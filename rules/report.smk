# Report stage: summary tables with adjusted p, figures, the pair browser; every output is marked for
# `snakemake --report results/{exp}/report.html`. Captions live in workflow/report/*.rst.
import re as _re

# Wildcards of this stage range over configured names only, so that e.g. summary/{cmp}/{pairing}.csv
# cannot also match summary/{cmp}/semantic_{pairing}.csv.
_PAIRING_NAMES = "|".join(_re.escape(name) for name in PAIRINGS)
_SEMANTIC_PAIRING_NAME = _re.escape(SEMANTIC_PAIRING)
_OVERVIEW = "1 Overview (all comparisons)"
_COMPARISON = "2 Comparison {cmp}"


rule summary:
    input:
        scores=lambda wc: score_files(wc.exp, wc.cmp, wc.pairing),
        diagnostics=lambda wc: [p.replace(".parquet", ".diagnostics.json")
                                for p in pairs_files(wc.exp, wc.cmp, wc.pairing)],
    output:
        table=report("results/{exp}/summary/{cmp}/{pairing}.csv", caption="../workflow/report/summary.rst",
                     category=_COMPARISON, subcategory="{pairing}: tables"),
        html=report("results/{exp}/summary/{cmp}/{pairing}.html", caption="../workflow/report/summary.rst",
                    category=_COMPARISON, subcategory="{pairing}: tables"),
        provenance="results/{exp}/summary/{cmp}/{pairing}.provenance.json",
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        "results/{exp}/logs/summary/{cmp}/{pairing}.log",
    params:
        correction=lambda wc: config["correction"],
        alpha=lambda wc: config["alpha"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/summary.py"


rule semantic_summary:
    input:
        scores=lambda wc: semantic_files(wc.exp, wc.cmp, wc.pairing),
    output:
        table=report("results/{exp}/summary/{cmp}/semantic_{pairing}.csv",
                     caption="../workflow/report/semantic_summary.rst",
                     category=_COMPARISON, subcategory="{pairing}: tables"),
        html=report("results/{exp}/summary/{cmp}/semantic_{pairing}.html",
                    caption="../workflow/report/semantic_summary.rst",
                    category=_COMPARISON, subcategory="{pairing}: tables"),
        provenance="results/{exp}/summary/{cmp}/semantic_{pairing}.provenance.json",
    wildcard_constraints:
        pairing=_SEMANTIC_PAIRING_NAME,
    log:
        "results/{exp}/logs/semantic_summary/{cmp}/{pairing}.log",
    params:
        correction=lambda wc: config["correction"],
        alpha=lambda wc: config["alpha"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/semantic_summary.py"


rule figures:
    input:
        summary="results/{exp}/summary/{cmp}/{pairing}.csv",
        scores=lambda wc: score_files(wc.exp, wc.cmp, wc.pairing),
        nulls=lambda wc: [p[: -len(".json")] + ".null.npy" for p in score_files(wc.exp, wc.cmp, wc.pairing)],
        diagnostics=lambda wc: [p.replace(".parquet", ".diagnostics.json")
                                for p in pairs_files(wc.exp, wc.cmp, wc.pairing)],
    output:
        observed=report(expand("results/{{exp}}/figures/{{cmp}}/{{pairing}}/{metric}_observed.png", metric=METRICS),
                        caption="../workflow/report/heatmap_observed.rst",
                        category=_COMPARISON, subcategory="{pairing}: whole-space figures"),
        z=report(expand("results/{{exp}}/figures/{{cmp}}/{{pairing}}/{metric}_z.png", metric=METRICS),
                 caption="../workflow/report/heatmap_z.rst",
                 category=_COMPARISON, subcategory="{pairing}: whole-space figures"),
        null=report(expand("results/{{exp}}/figures/{{cmp}}/{{pairing}}/{metric}_null.png", metric=METRICS),
                    caption="../workflow/report/null_histograms.rst",
                    category=_COMPARISON, subcategory="{pairing}: whole-space figures"),
        n_pairs=report("results/{exp}/figures/{cmp}/{pairing}/pairs_n.png",
                       caption="../workflow/report/heatmap_n_pairs.rst",
                       category=_COMPARISON, subcategory="{pairing}: pairs"),
        correlation=report("results/{exp}/figures/{cmp}/{pairing}/pairs_correlation.png",
                           caption="../workflow/report/heatmap_correlation.rst",
                           category=_COMPARISON, subcategory="{pairing}: pairs"),
        many_to_one=report("results/{exp}/figures/{cmp}/{pairing}/pairs_many_to_one.png",
                           caption="../workflow/report/many_to_one.rst",
                           category=_COMPARISON, subcategory="{pairing}: pairs"),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        "results/{exp}/logs/figures/{cmp}/{pairing}.log",
    params:
        metrics=lambda wc: config["metrics"],
        comparison=lambda wc: config["comparisons"][wc.cmp],
        correction=lambda wc: config["correction"],
        null_histograms=lambda wc: config["report"]["null_histograms"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/figures.py"


rule semantic_figures:
    input:
        summary="results/{exp}/summary/{cmp}/semantic_{pairing}.csv",
    output:
        grids=report(expand("results/{{exp}}/figures/{{cmp}}/{{pairing}}/semantic_{metric}.png",
                            metric=SEMANTIC_METRICS),
                     caption="../workflow/report/semantic_grid.rst",
                     category=_COMPARISON, subcategory="{pairing}: concept figures"),
    wildcard_constraints:
        pairing=_SEMANTIC_PAIRING_NAME,
    log:
        "results/{exp}/logs/semantic_figures/{cmp}/{pairing}.log",
    params:
        metrics=lambda wc: SEMANTIC_METRICS,
        comparison=lambda wc: config["comparisons"][wc.cmp],
        correction=lambda wc: config["correction"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/semantic_figures.py"


rule comparison_figures:
    input:
        summaries=lambda wc: [f"results/{wc.exp}/summary/{cmp}/{wc.pairing}.csv" for cmp in COMPARISONS],
    output:
        figures=report(expand("results/{{exp}}/figures/comparisons_{{pairing}}_{metric}.png", metric=METRICS),
                       caption="../workflow/report/comparison_figure.rst",
                       category=_OVERVIEW, subcategory="{pairing}: whole space"),
        pairs=report("results/{exp}/figures/comparisons_{pairing}_pairs.png",
                     caption="../workflow/report/comparison_pairs.rst",
                     category=_OVERVIEW, subcategory="{pairing}: whole space"),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        "results/{exp}/logs/comparison_figures/{pairing}.log",
    params:
        metrics=lambda wc: config["metrics"],
        comparisons=lambda wc: config["comparisons"],
        correction=lambda wc: config["correction"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/comparison_figures.py"


rule semantic_comparison_figures:
    input:
        summaries=lambda wc: [f"results/{wc.exp}/summary/{cmp}/semantic_{wc.pairing}.csv" for cmp in COMPARISONS],
    output:
        figures=report(expand("results/{{exp}}/figures/comparisons_semantic_{{pairing}}_{metric}.png",
                              metric=SEMANTIC_METRICS),
                       caption="../workflow/report/semantic_comparison_figure.rst",
                       category=_OVERVIEW, subcategory="{pairing}: concepts"),
    wildcard_constraints:
        pairing=_SEMANTIC_PAIRING_NAME,
    log:
        "results/{exp}/logs/semantic_comparison_figures/{pairing}.log",
    params:
        metrics=lambda wc: SEMANTIC_METRICS,
        comparisons=lambda wc: config["comparisons"],
        correction=lambda wc: config["correction"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/semantic_comparison_figures.py"


rule comparison_overview:
    input:
        summaries=lambda wc: [f"results/{wc.exp}/summary/{cmp}/{wc.pairing}.csv" for cmp in COMPARISONS],
        # concept-level rows exist for the semantic pairing only (and only when concepts are configured)
        semantic=lambda wc: [f"results/{wc.exp}/summary/{cmp}/semantic_{wc.pairing}.csv" for cmp in COMPARISONS]
        if CONCEPTS and wc.pairing == SEMANTIC_PAIRING
        else [],
    output:
        table=report("results/{exp}/summary/comparisons_{pairing}.csv", caption="../workflow/report/overview.rst",
                     category=_OVERVIEW, subcategory="{pairing}: tables"),
        html=report("results/{exp}/summary/comparisons_{pairing}.html", caption="../workflow/report/overview.rst",
                    category=_OVERVIEW, subcategory="{pairing}: tables"),
        provenance="results/{exp}/summary/comparisons_{pairing}.provenance.json",
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        "results/{exp}/logs/comparison_overview/{pairing}.log",
    params:
        comparisons=lambda wc: config["comparisons"],
        correction=lambda wc: config["correction"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/comparison_overview.py"


rule browser:
    input:
        pairs="results/{exp}/pairs/{cmp}/{pairing}/A{la}_B{lb}.parquet",
        labels_a=labels_for("a"),
        labels_b=labels_for("b"),
        codes_a=codes_for("a"),
        codes_b=codes_for("b"),
        tokens="results/{exp}/tokens.zarr",  # the held-out split: the scatter shows the pairing tokens
    output:
        html=report("results/{exp}/browser/{cmp}/{pairing}/A{la}_B{lb}.html", caption="../workflow/report/browser.rst",
                    category=_COMPARISON, subcategory="{pairing}: pair browser",
                    labels={"layer pair": "A{la}_B{lb}", "view": "top pairs and contexts"}),
        scatter=report("results/{exp}/browser/{cmp}/{pairing}/A{la}_B{lb}.scatter.png",
                       caption="../workflow/report/browser_scatter.rst",
                       category=_COMPARISON, subcategory="{pairing}: pair browser",
                       labels={"layer pair": "A{la}_B{lb}", "view": "activation scatter"}),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        "results/{exp}/logs/browser/{cmp}/{pairing}/A{la}_B{lb}.log",
    params:
        split=SPLIT,
        browser=lambda wc: {key: config["report"][key] for key in ("browser_pairs", "scatter_pairs")},
        comparison=lambda wc: config["comparisons"][wc.cmp],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/browser.py"

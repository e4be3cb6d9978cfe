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
        diagnostics=lambda wc: [layout.sibling_template(p, layout.DIAGNOSTICS)
                                for p in pairs_files(wc.exp, wc.cmp, wc.pairing)],
    output:
        table=report(layout.SUMMARY, caption="../workflow/report/summary.rst",
                     category=_COMPARISON, subcategory="{pairing}: tables"),
        html=report(layout.sibling_template(layout.SUMMARY, layout.HTML), caption="../workflow/report/summary.rst",
                    category=_COMPARISON, subcategory="{pairing}: tables"),
        provenance=layout.sibling_template(layout.SUMMARY, layout.PROVENANCE),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        layout.log("summary", "{cmp}/{pairing}"),
    params:
        scope="whole",
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
        table=report(layout.CONCEPT_SUMMARY,
                     caption="../workflow/report/semantic_summary.rst",
                     category=_COMPARISON, subcategory="{pairing}: tables"),
        html=report(layout.sibling_template(layout.CONCEPT_SUMMARY, layout.HTML),
                    caption="../workflow/report/semantic_summary.rst",
                    category=_COMPARISON, subcategory="{pairing}: tables"),
        provenance=layout.sibling_template(layout.CONCEPT_SUMMARY, layout.PROVENANCE),
    wildcard_constraints:
        pairing=_SEMANTIC_PAIRING_NAME,
    log:
        layout.log("semantic_summary", "{cmp}/{pairing}"),
    params:
        scope="concept",
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


rule figures:
    input:
        summary=layout.SUMMARY,
        scores=lambda wc: score_files(wc.exp, wc.cmp, wc.pairing),
        nulls=lambda wc: [layout.sibling_template(p, layout.NULL) for p in score_files(wc.exp, wc.cmp, wc.pairing)],
        diagnostics=lambda wc: [layout.sibling_template(p, layout.DIAGNOSTICS)
                                for p in pairs_files(wc.exp, wc.cmp, wc.pairing)],
    output:
        observed=report([layout.fill(layout.METRIC_FIGURE, metric=metric, figure="observed") for metric in METRICS],
                        caption="../workflow/report/heatmap_observed.rst",
                        category=_COMPARISON, subcategory="{pairing}: whole-space figures"),
        z=report([layout.fill(layout.METRIC_FIGURE, metric=metric, figure="z") for metric in METRICS],
                 caption="../workflow/report/heatmap_z.rst",
                 category=_COMPARISON, subcategory="{pairing}: whole-space figures"),
        null=report([layout.fill(layout.METRIC_FIGURE, metric=metric, figure="null") for metric in METRICS],
                    caption="../workflow/report/null_histograms.rst",
                    category=_COMPARISON, subcategory="{pairing}: whole-space figures"),
        n_pairs=report(layout.fill(layout.PAIRS_FIGURE, figure="n"),
                       caption="../workflow/report/heatmap_n_pairs.rst",
                       category=_COMPARISON, subcategory="{pairing}: pairs"),
        correlation=report(layout.fill(layout.PAIRS_FIGURE, figure="correlation"),
                           caption="../workflow/report/heatmap_correlation.rst",
                           category=_COMPARISON, subcategory="{pairing}: pairs"),
        many_to_one=report(layout.fill(layout.PAIRS_FIGURE, figure="many_to_one"),
                           caption="../workflow/report/many_to_one.rst",
                           category=_COMPARISON, subcategory="{pairing}: pairs"),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        layout.log("figures", "{cmp}/{pairing}"),
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
        summary=layout.CONCEPT_SUMMARY,
    output:
        grids=report([layout.fill(layout.CONCEPT_GRID_FIGURE, metric=metric) for metric in SEMANTIC_METRICS],
                     caption="../workflow/report/semantic_grid.rst",
                     category=_COMPARISON, subcategory="{pairing}: concept figures"),
    wildcard_constraints:
        pairing=_SEMANTIC_PAIRING_NAME,
    log:
        layout.log("semantic_figures", "{cmp}/{pairing}"),
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
        summaries=lambda wc: [layout.fill(layout.SUMMARY, exp=wc.exp, cmp=cmp, pairing=wc.pairing) for cmp in COMPARISONS],
    output:
        figures=report([layout.fill(layout.OVERVIEW_FIGURE, metric=metric) for metric in METRICS],
                       caption="../workflow/report/comparison_figure.rst",
                       category=_OVERVIEW, subcategory="{pairing}: whole space"),
        pairs=report(layout.OVERVIEW_PAIRS_FIGURE,
                     caption="../workflow/report/comparison_pairs.rst",
                     category=_OVERVIEW, subcategory="{pairing}: whole space"),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        layout.log("comparison_figures", "{pairing}"),
    params:
        scope="whole",
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
        summaries=lambda wc: [layout.fill(layout.CONCEPT_SUMMARY, exp=wc.exp, cmp=cmp, pairing=wc.pairing) for cmp in COMPARISONS],
    output:
        figures=report([layout.fill(layout.CONCEPT_OVERVIEW_FIGURE, metric=metric) for metric in SEMANTIC_METRICS],
                       caption="../workflow/report/semantic_comparison_figure.rst",
                       category=_OVERVIEW, subcategory="{pairing}: concepts"),
    wildcard_constraints:
        pairing=_SEMANTIC_PAIRING_NAME,
    log:
        layout.log("semantic_comparison_figures", "{pairing}"),
    params:
        scope="concept",
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
        "../workflow/scripts/comparison_figures.py"


rule comparison_overview:
    input:
        summaries=lambda wc: [layout.fill(layout.SUMMARY, exp=wc.exp, cmp=cmp, pairing=wc.pairing) for cmp in COMPARISONS],
        # concept-level rows exist for the semantic pairing only (and only when concepts are configured)
        semantic=lambda wc: [layout.fill(layout.CONCEPT_SUMMARY, exp=wc.exp, cmp=cmp, pairing=wc.pairing) for cmp in COMPARISONS]
        if CONCEPTS and wc.pairing == SEMANTIC_PAIRING
        else [],
    output:
        table=report(layout.OVERVIEW, caption="../workflow/report/overview.rst",
                     category=_OVERVIEW, subcategory="{pairing}: tables"),
        html=report(layout.sibling_template(layout.OVERVIEW, layout.HTML), caption="../workflow/report/overview.rst",
                    category=_OVERVIEW, subcategory="{pairing}: tables"),
        provenance=layout.sibling_template(layout.OVERVIEW, layout.PROVENANCE),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        layout.log("comparison_overview", "{pairing}"),
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
        unpack(comparison_rows_input),  # the held-out split (and aligned rows): the scatter shows the pairing tokens
        pairs=layout.PAIRS,
        labels_a=labels_for("a"),
        labels_b=labels_for("b"),
        codes_a=codes_for("a"),
        codes_b=codes_for("b"),
    output:
        html=report(layout.BROWSER, caption="../workflow/report/browser.rst",
                    category=_COMPARISON, subcategory="{pairing}: pair browser",
                    labels={"layer pair": "A{la}_B{lb}", "view": "top pairs and contexts"}),
        scatter=report(layout.sibling_template(layout.BROWSER, layout.SCATTER),
                       caption="../workflow/report/browser_scatter.rst",
                       category=_COMPARISON, subcategory="{pairing}: pair browser",
                       labels={"layer pair": "A{la}_B{lb}", "view": "activation scatter"}),
    wildcard_constraints:
        pairing=_PAIRING_NAMES,
    log:
        layout.log("browser", "{cmp}/{pairing}/A{la}_B{lb}"),
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

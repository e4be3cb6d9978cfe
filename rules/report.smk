# Report stage: summary tables with adjusted p, figures, the pair browser; every output is marked for
# `snakemake --report results/{exp}/report.html`. Captions live in workflow/report/*.rst.
import re as _re
from dataclasses import dataclass as _dataclass
from typing import Callable as _Callable

# Wildcards of this stage range over configured names only, so that e.g. summary/{cmp}/{pairing}.csv
# cannot also match summary/{cmp}/semantic_{pairing}.csv.
_PAIRING_NAMES = "|".join(_re.escape(name) for name in PAIRINGS)
_SEMANTIC_PAIRING_NAME = _re.escape(SEMANTIC_PAIRING)
_OVERVIEW = "1 Overview (all comparisons)"
_COMPARISON = "2 Comparison {cmp}"


@_dataclass(frozen=True)
class _ReportScope:
    """What the rules of one summary scope (featsim.summary.SCOPES) differ in: `summary` and `comparison_figures`
    below are declared once and generated per scope. The input functions are written here, one per scope, because
    a lambda in the loop body would see the loop variable's last value when Snakemake calls it."""

    rule_prefix: str  # rule names and log folders: "" (summary, ...) or "semantic_" (semantic_summary, ...)
    summary: str  # layout template of the summary table
    scores: _Callable  # input function: the score jsons summarised
    diagnostics: _Callable | None  # input function: the pairs' diagnostics the summary joins (whole space only)
    summary_caption: str
    pairing_names: str  # wildcard constraint: the pairings summarised in this scope
    metrics: list[str]
    overview_figure: str  # layout template of one metric's cross-comparison figure
    pairs_overview_figure: str | None  # layout template of the pairs cross-comparison figure (whole space only)
    overview_caption: str
    overview_subcategory: str


_REPORT_SCOPES = {
    "whole": _ReportScope(
        rule_prefix="",
        summary=layout.SUMMARY,
        scores=lambda wc: score_files(wc.exp, wc.cmp, wc.pairing),
        diagnostics=lambda wc: [layout.sibling_template(p, layout.DIAGNOSTICS)
                                for p in pairs_files(wc.exp, wc.cmp, wc.pairing)],
        summary_caption="../workflow/report/summary.rst",
        pairing_names=_PAIRING_NAMES,
        metrics=METRICS,
        overview_figure=layout.OVERVIEW_FIGURE,
        pairs_overview_figure=layout.OVERVIEW_PAIRS_FIGURE,
        overview_caption="../workflow/report/comparison_figure.rst",
        overview_subcategory="{pairing}: whole space",
    ),
    "concept": _ReportScope(
        rule_prefix="semantic_",
        summary=layout.CONCEPT_SUMMARY,
        scores=lambda wc: semantic_files(wc.exp, wc.cmp, wc.pairing),
        diagnostics=None,
        summary_caption="../workflow/report/semantic_summary.rst",
        pairing_names=_SEMANTIC_PAIRING_NAME,
        metrics=SEMANTIC_METRICS,
        overview_figure=layout.CONCEPT_OVERVIEW_FIGURE,
        pairs_overview_figure=None,
        overview_caption="../workflow/report/semantic_comparison_figure.rst",
        overview_subcategory="{pairing}: concepts",
    ),
}


for _scope, _rules in _REPORT_SCOPES.items():

    rule:
        name:
            f"{_rules.rule_prefix}summary"
        input:
            scores=_rules.scores,
            # only the whole space joins the pairs' diagnostics; the concept rule has no such input
            **({"diagnostics": _rules.diagnostics} if _rules.diagnostics else {}),
        output:
            table=report(_rules.summary, caption=_rules.summary_caption,
                         category=_COMPARISON, subcategory="{pairing}: tables"),
            html=report(layout.sibling_template(_rules.summary, layout.HTML), caption=_rules.summary_caption,
                        category=_COMPARISON, subcategory="{pairing}: tables"),
            provenance=layout.sibling_template(_rules.summary, layout.PROVENANCE),
        wildcard_constraints:
            pairing=_rules.pairing_names,
        log:
            layout.log(f"{_rules.rule_prefix}summary", "{cmp}/{pairing}"),
        params:
            scope=_scope,
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


for _scope, _rules in _REPORT_SCOPES.items():

    rule:
        name:
            f"{_rules.rule_prefix}comparison_figures"
        input:
            summaries=[layout.fill(_rules.summary, cmp=cmp) for cmp in COMPARISONS],
        output:
            figures=report([layout.fill(_rules.overview_figure, metric=metric) for metric in _rules.metrics],
                           caption=_rules.overview_caption,
                           category=_OVERVIEW, subcategory=_rules.overview_subcategory),
            # a named output cannot be empty: `pairs` is declared only where the scope has it
            **({"pairs": report(_rules.pairs_overview_figure, caption="../workflow/report/comparison_pairs.rst",
                                category=_OVERVIEW, subcategory=_rules.overview_subcategory)}
               if _rules.pairs_overview_figure else {}),
        wildcard_constraints:
            pairing=_rules.pairing_names,
        log:
            layout.log(f"{_rules.rule_prefix}comparison_figures", "{pairing}"),
        params:
            scope=_scope,
            metrics=_rules.metrics,
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

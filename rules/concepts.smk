# Concept evidence: concept labels of latents (held-out rows) -> concept agreement of pairs with a
# label-permutation null -> tests between comparisons -> the report's answer to "does featsim see shared
# concepts?". Few, large jobs of cheap numpy: one for all labels, one per pairing variant for agreement and
# contrasts (every comparison and cell), one for the answer table.
import re as _re_concepts

_EVIDENCE_PAIRINGS = "|".join(_re_concepts.escape(name) for name in PAIRINGS)
_ANSWER = "0 Does featsim see shared concepts?"


rule concept_labels:
    input:
        labels=[layout.fill(layout.LABELS, model=model, layer=layer) for model, layer in MEMBER_LAYERS],
        concepts=list(CONCEPTS.values()),
    output:
        labels=[layout.fill(layout.CONCEPT_LABELS, model=model, layer=layer) for model, layer in MEMBER_LAYERS],
    log:
        layout.log("concept_labels", "concept_labels"),
    params:
        rule=lambda wc: {key: config["semantic"][key] for key in ("min_fraction", "min_keywords", "min_examples")},
        model_layers=MEMBER_LAYERS,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/concept_labels.py"


rule concept_evidence:
    input:
        unpack(concept_evidence_inputs),
    output:
        agreement=report(layout.fill(layout.EVIDENCE_TABLE, table="concept_agreement"),
                         caption="../workflow/report/concept_agreement.rst", category=_ANSWER,
                         subcategory="{pairing}"),
        contrasts=report(layout.fill(layout.EVIDENCE_TABLE, table="contrasts"), caption="../workflow/report/contrasts.rst",
                         category=_ANSWER, subcategory="{pairing}"),
        provenance=[layout.sibling_template(layout.fill(layout.EVIDENCE_TABLE, table="concept_agreement"), layout.PROVENANCE),
                    layout.sibling_template(layout.fill(layout.EVIDENCE_TABLE, table="contrasts"), layout.PROVENANCE)],
    wildcard_constraints:
        pairing=_EVIDENCE_PAIRINGS,
    log:
        layout.log("concept_evidence", "{pairing}"),
    params:
        comparisons=lambda wc: evidence_comparisons(),
        model_layers=MEMBER_LAYERS,
        permutations=lambda wc: config["semantic"]["agreement_permutations"],
        alternative=lambda wc: config["semantic"]["contrast_alternative"],
        alpha=lambda wc: config["alpha"],
        seed=lambda wc: config["null"]["seed"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/concept_evidence.py"


rule shared_concepts:
    input:
        summaries=lambda wc: [layout.fill(layout.SUMMARY, exp=wc.exp, cmp=cmp, pairing=pairing) for cmp in COMPARISONS
                              for pairing in PAIRINGS],
        semantic=lambda wc: [layout.fill(layout.CONCEPT_SUMMARY, exp=wc.exp, cmp=cmp, pairing=SEMANTIC_PAIRING) for cmp in COMPARISONS],
        agreement=lambda wc: [layout.fill(layout.EVIDENCE_TABLE, exp=wc.exp, table="concept_agreement", pairing=pairing) for pairing in PAIRINGS],
        contrasts=lambda wc: [layout.fill(layout.EVIDENCE_TABLE, exp=wc.exp, table="contrasts", pairing=pairing) for pairing in PAIRINGS],
    output:
        table=report(layout.SHARED_CONCEPTS, caption="../workflow/report/shared_concepts.rst",
                     category=_ANSWER, subcategory="answer"),
        html=report(layout.sibling_template(layout.SHARED_CONCEPTS, layout.HTML), caption="../workflow/report/shared_concepts.rst",
                    category=_ANSWER, subcategory="answer"),
        provenance=layout.sibling_template(layout.SHARED_CONCEPTS, layout.PROVENANCE),
    log:
        layout.log("shared_concepts", "shared_concepts"),
    params:
        comparisons=lambda wc: list(COMPARISONS),
        pairings=lambda wc: list(PAIRINGS),
        semantic_pairing=lambda wc: SEMANTIC_PAIRING,
        contrasts=lambda wc: CONTRASTS,
        correction=lambda wc: config["correction"],
        alpha=lambda wc: config["alpha"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/shared_concepts.py"

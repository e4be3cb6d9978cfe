# Concept evidence: concept labels of latents (held-out rows) -> concept agreement of pairs with a
# label-permutation null -> tests between comparisons -> the report's answer to "does featsim see shared
# concepts?". Few, large jobs of cheap numpy: one for all labels, one per pairing variant for agreement and
# contrasts (every comparison and cell), one for the answer table.
import re as _re_concepts

_EVIDENCE_PAIRINGS = "|".join(_re_concepts.escape(name) for name in PAIRINGS)
_ANSWER = "0 Does featsim see shared concepts?"


rule concept_labels:
    input:
        labels=[f"results/{{exp}}/labels/{model}/L{layer}.parquet" for model, layer in MEMBER_LAYERS],
        concepts=list(CONCEPTS.values()),
    output:
        labels=[f"results/{{exp}}/concepts/labels/{model}/L{layer}.parquet" for model, layer in MEMBER_LAYERS],
    log:
        "results/{exp}/logs/concept_labels.log",
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
        agreement=report("results/{exp}/summary/concept_agreement_{pairing}.csv",
                         caption="../workflow/report/concept_agreement.rst", category=_ANSWER,
                         subcategory="{pairing}"),
        contrasts=report("results/{exp}/summary/contrasts_{pairing}.csv", caption="../workflow/report/contrasts.rst",
                         category=_ANSWER, subcategory="{pairing}"),
        provenance=["results/{exp}/summary/concept_agreement_{pairing}.provenance.json",
                    "results/{exp}/summary/contrasts_{pairing}.provenance.json"],
    wildcard_constraints:
        pairing=_EVIDENCE_PAIRINGS,
    log:
        "results/{exp}/logs/concept_evidence/{pairing}.log",
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
        summaries=lambda wc: [f"results/{wc.exp}/summary/{cmp}/{pairing}.csv" for cmp in COMPARISONS
                              for pairing in PAIRINGS],
        semantic=lambda wc: [f"results/{wc.exp}/summary/{cmp}/semantic_{SEMANTIC_PAIRING}.csv" for cmp in COMPARISONS],
        agreement=lambda wc: [f"results/{wc.exp}/summary/concept_agreement_{pairing}.csv" for pairing in PAIRINGS],
        contrasts=lambda wc: [f"results/{wc.exp}/summary/contrasts_{pairing}.csv" for pairing in PAIRINGS],
    output:
        table=report("results/{exp}/summary/shared_concepts.csv", caption="../workflow/report/shared_concepts.rst",
                     category=_ANSWER, subcategory="answer"),
        html=report("results/{exp}/summary/shared_concepts.html", caption="../workflow/report/shared_concepts.rst",
                    category=_ANSWER, subcategory="answer"),
        provenance="results/{exp}/summary/shared_concepts.provenance.json",
    log:
        "results/{exp}/logs/shared_concepts.log",
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

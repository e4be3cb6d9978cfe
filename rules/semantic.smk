# Semantic subspaces: latents tied to a concept's keywords, paired and scored within the concept.
# Every target of a concept has that concept's yaml as an input, so editing one concept file rebuilds
# only that concept's targets (and the toy accuracy summary). Jobs are per concept (membership in every
# compared layer) and per (comparison, concept, pairing) (all layer cells, all metrics): a process per
# cell and metric would dominate the run time; outputs stay one file per cell and metric.


rule concept_members:
    input:
        labels=[layout.fill(layout.LABELS, model=model, layer=layer) for model, layer in MEMBER_LAYERS],
        concept=lambda wc: CONCEPTS[wc.concept],
    output:
        members=[layout.fill(layout.MEMBERS, model=model, layer=layer) for model, layer in MEMBER_LAYERS],
    log:
        layout.log("concept_members", "{concept}"),
    params:
        min_examples=lambda wc: config["semantic"]["min_examples"],
        min_fraction=lambda wc: config["semantic"]["min_fraction"],
        model_layers=MEMBER_LAYERS,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/concept_members.py"


for _cmp in COMPARISONS:

    rule:
        name:
            f"semantic_{_cmp}"
        input:
            unpack(semantic_cell_inputs(_cmp)),
        output:
            pairs=[cell["pairs"] for cell in semantic_cell_outputs(_cmp)],
            scores=[files[0] for cell in semantic_cell_outputs(_cmp) for files in cell["scores"].values()],
            nulls=[files[1] for cell in semantic_cell_outputs(_cmp) for files in cell["scores"].values()],
        log:
            layout.log("semantic", f"{_cmp}/{{concept}}/{{pairing}}"),
        params:
            comparison=_cmp,
            cells=lambda wc, cmp=_cmp: semantic_cell_outputs(cmp, exp=wc.exp, concept=wc.concept, pairing=wc.pairing),
            variant=lambda wc: config["pairings"][wc.pairing],
            correlation=lambda wc: config["correlation"],
            split=SPLIT,
            min_latents=lambda wc: config["semantic"]["min_latents"],
            null=lambda wc: config["null"],
            options=lambda wc: {metric: config["metric_options"].get(metric) or {} for metric in SEMANTIC_METRICS},
            alpha=lambda wc: config["alpha"],
        threads: HEAVY_THREADS
        resources:
            mem_mb=lambda wc, attempt: 4000 * attempt,
            runtime=lambda wc, attempt: 60 * attempt,
            **cuda_pinned_resources(config["null"]["device"], config["correlation"]["device"]),
        conda:
            "../envs/featsim.yaml"
        script:
            "../workflow/scripts/semantic_score.py"


rule semantic_accuracy:
    input:
        labels=layout.LABELS,
        members=lambda wc: [layout.fill(layout.MEMBERS, exp=wc.exp, model=wc.model, layer=wc.layer, concept=concept)
                            for concept in CONCEPTS],
        concepts=lambda wc: list(CONCEPTS.values()),
        # the toy corpus directory (a directory output); its categories.json maps word -> category
        corpus=layout.TOY_CORPUS,
    output:
        accuracy=layout.MEMBER_ACCURACY,
    log:
        layout.log("semantic_accuracy", "{model}/L{layer}"),
    params:
        min_examples=lambda wc: config["semantic"]["min_examples"],
        truth_min_fraction=lambda wc: config["semantic"]["truth_min_fraction"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/semantic_accuracy.py"

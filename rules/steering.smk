# Steering (issue #14): concept vectors of A steer A and, carried through the pairing (or a Procrustes map),
# steer B at the paired layer; B's next-token effect is compared with A's against random pairings. One job
# per comparison (every concept and cell): each LM is loaded once and every batch of steering vectors
# (concepts, random directions, random pairings) goes through it as one forward pass.
for _cmp in STEERING["comparisons"]:

    rule:
        name:
            f"steering_{_cmp}"
        input:
            unpack(steering_inputs(_cmp)),
        output:
            concepts=[path for cell in steering_concept_outputs(_cmp) for path in cell.values()],
            agreement=[layout.fill(layout.STEERING_AGREEMENT, cmp=_cmp, la=la, lb=lb) for la, lb in steering_cells(_cmp)],
            summary=report(layout.fill(layout.STEERING_SUMMARY, cmp=_cmp),
                           caption="../workflow/report/steering_summary.rst", category="Steering"),
            specificity=report(layout.fill(layout.STEERING_SPECIFICITY, cmp=_cmp),
                               caption="../workflow/report/steering_specificity.rst", category="Steering"),
            effects_figure=report(layout.fill(layout.STEERING_FIGURE, cmp=_cmp, figure="effects"),
                                  caption="../workflow/report/steering_effects.rst", category="Steering"),
            matrix_figure=report(layout.fill(layout.STEERING_FIGURE, cmp=_cmp, figure="matrix"),
                                 caption="../workflow/report/steering_matrix.rst", category="Steering"),
            downstream=report(layout.fill(layout.STEERING_DOWNSTREAM, cmp=_cmp),
                              caption="../workflow/report/steering_downstream.rst", category="Steering"),
            downstream_figure=report(layout.fill(layout.STEERING_FIGURE, cmp=_cmp, figure="downstream"),
                                     caption="../workflow/report/steering_downstream.rst", category="Steering"),
        log:
            layout.log("steering", f"{_cmp}"),
        params:
            comparison=_cmp,
            pairing=SEMANTIC_PAIRING,
            cells=steering_cells(_cmp),
            concept_outputs=lambda wc, cmp=_cmp: steering_concept_outputs(cmp, exp=wc.exp),
            later_cells=steering_later_cells(_cmp),
            concepts=STEERING_CONCEPTS,
            side_a=steering_side(cmp_model(_cmp, "a")),
            side_b=steering_side(cmp_model(_cmp, "b")),
            split=SPLIT,
            steering={key: value for key, value in STEERING.items() if key != "comparisons"},
            alpha=config["alpha"],
        threads: HEAVY_THREADS
        resources:
            mem_mb=heavy_mem_mb,
            runtime=heavy_runtime,
            **gpu_job_resources(device_gpus(STEERING["device"])),
        conda:
            "../envs/featsim.yaml"
        script:
            "../workflow/scripts/steering.py"

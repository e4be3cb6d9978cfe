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
            concepts=[f"results/{{exp}}/steering/{_cmp}/{concept}/A{la}_B{lb}.json"
                      for la, lb in steering_cells(_cmp) for concept in STEERING_CONCEPTS],
            agreement=[f"results/{{exp}}/steering/{_cmp}/A{la}_B{lb}.agreement.json" for la, lb in steering_cells(_cmp)],
            summary=report(f"results/{{exp}}/summary/steering_{_cmp}.csv",
                           caption="../workflow/report/steering_summary.rst", category="Steering"),
            specificity=report(f"results/{{exp}}/summary/steering_{_cmp}_specificity.csv",
                               caption="../workflow/report/steering_specificity.rst", category="Steering"),
            effects_figure=report(f"results/{{exp}}/figures/{_cmp}/steering_effects.png",
                                  caption="../workflow/report/steering_effects.rst", category="Steering"),
            matrix_figure=report(f"results/{{exp}}/figures/{_cmp}/steering_matrix.png",
                                 caption="../workflow/report/steering_matrix.rst", category="Steering"),
        log:
            f"results/{{exp}}/logs/steering/{_cmp}.log",
        params:
            comparison=_cmp,
            pairing=SEMANTIC_PAIRING,
            cells=steering_cells(_cmp),
            concepts=STEERING_CONCEPTS,
            side_a=steering_side(cmp_model(_cmp, "a")),
            side_b=steering_side(cmp_model(_cmp, "b")),
            split=SPLIT,
            steering={key: value for key, value in STEERING.items() if key != "comparisons"},
        threads: HEAVY_THREADS
        resources:
            mem_mb=heavy_mem_mb,
            runtime=heavy_runtime,
            **gpu_job_resources(device_gpus(STEERING["device"])),
        conda:
            "../envs/featsim.yaml"
        script:
            "../workflow/scripts/steering.py"

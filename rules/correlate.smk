# Correlation: exact Pearson correlation of every A latent with every B latent of one layer pair, both
# directions, top-k partners per latent (sparse numba kernel on CPU, dense torch tiles on a GPU), over the
# token rows outside the held-out split (data.heldout_fraction).


rule correlate:
    input:
        unpack(comparison_rows_input),  # the held-out split of its rows (across token stores: aligned rows)
        codes_a=codes_for("a"),
        codes_b=codes_for("b"),
    output:
        corr=directory(layout.CORR),
    log:
        layout.log("correlate", "{cmp}/A{la}_B{lb}"),
    params:
        correlation=config["correlation"],
        split=SPLIT,
        models=lambda wc: {side: COMPARISONS[wc.cmp][side] for side in ("a", "b")},
    threads: HEAVY_THREADS
    resources:
        mem_mb=heavy_mem_mb,
        runtime=heavy_runtime,
        **gpu_job_resources(device_gpus(config["correlation"]["device"])),
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/correlate.py"

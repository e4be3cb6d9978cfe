# Correlation: exact Pearson correlation of every A latent with every B latent of one layer pair, both
# directions, top-k partners per latent (sparse numba kernel on CPU, dense torch tiles on a GPU), over the
# token rows outside the held-out split (data.heldout_fraction).


rule correlate:
    input:
        codes_a=codes_for("a"),
        codes_b=codes_for("b"),
        tokens="results/{exp}/tokens.zarr",  # the held-out split of its rows
    output:
        corr=directory("results/{exp}/corr/{cmp}/A{la}_B{lb}.zarr"),
    log:
        "results/{exp}/logs/correlate/{cmp}/A{la}_B{lb}.log",
    params:
        correlation=config["correlation"],
        split=SPLIT,
    threads: HEAVY_THREADS
    resources:
        mem_mb=heavy_mem_mb,
        runtime=heavy_runtime,
        **gpu_job_resources(device_gpus(config["correlation"]["device"])),
    conda:
        "../envs/featsim.yaml"
    script:
        "../workflow/scripts/correlate.py"

# Time the training step and the generation of every method's default setting against LoRA and the
# base model, in one process on the workflow's base model, with trainable parameters and memory.
# The config's `efficiency` section (benchmark settings, see excitor_bench.benchmark.BenchmarkSettings)
# is merged over these defaults, which keep the rule under a minute on 2 CPU cores with the tiny model.
EFFICIENCY = {
    "rounds": 5,
    "steps_per_round": 2,
    "batch_size": 4,
    "sequence_length": 64,
    "generation_batch": 2,
    "prompt_length": 16,
    "new_tokens": 16,
    "device": config["training"]["device"],
    "dtype": config["training"]["dtype"],
    **(config.get("efficiency") or {}),
}


rule efficiency:
    input:
        base_model_input,
    output:
        csv=report("results/efficiency.csv", caption="../report/efficiency.rst", category="Efficiency"),
        json="results/efficiency.json",
        plot=report(
            "results/plots/efficiency.png", caption="../report/efficiency_plot.rst", category="Efficiency"
        ),
    params:
        model=BASE_MODEL,
        methods=quoted_json(
            {
                method: {"setting": setting, "hyperparameters": SETTINGS[(method, setting)].hyperparameters}
                for method, setting in DEFAULT_SETTINGS.items()
            }
        ),
        settings=quoted_json(EFFICIENCY),
    # All cores, so that no other job of a local run competes with the timings.
    threads: workflow.cores
    log:
        "results/logs/efficiency.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} benchmark --model {params.model} --methods {params.methods}"
        " --settings {params.settings} --out {output.json} --csv {output.csv} --plot {output.plot} > {log} 2>&1"

# Evaluate the untuned base model: the reference row of the table.
rule evaluate_base:
    input:
        base_model_input,
        data=evaluation_data,
    output:
        "results/base/eval/{evaluation}.json",
    params:
        settings=evaluation_settings,
        data=lambda wildcards: DATA[wildcards.evaluation],
        base_model=BASE_MODEL,
    threads: 1
    log:
        "results/logs/evaluate/base/{evaluation}.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} evaluate {wildcards.evaluation} --base-model {params.base_model}"
        " --data {params.data} --settings {params.settings} --out {output} > {log} 2>&1"


# Evaluate one tuned run, rebuilt from its saved adapter onto a fresh base model.
rule evaluate_run:
    input:
        base_model_input,
        adapter="results/runs/{method}/{setting}/seed{seed}/adapter",
        data=evaluation_data,
    output:
        "results/runs/{method}/{setting}/seed{seed}/eval/{evaluation}.json",
    params:
        settings=evaluation_settings,
        data=lambda wildcards: DATA[wildcards.evaluation],
        base_model=BASE_MODEL,
        run=lambda wildcards, input: Path(input.adapter).parent,
    threads: 1
    log:
        "results/logs/evaluate/{method}/{setting}/seed{seed}/{evaluation}.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} evaluate {wildcards.evaluation} --base-model {params.base_model}"
        " --run {params.run} --data {params.data} --settings {params.settings} --out {output} > {log} 2>&1"

# Tune one run: a method, one setting of its hyper-parameters and a seed, under the shared budget.
rule train:
    input:
        base_model_input,
        data=DATA["alpaca"],
    output:
        spec="results/runs/{method}/{setting}/seed{seed}/spec.json",
        figures="results/runs/{method}/{setting}/seed{seed}/train.json",
        adapter=directory("results/runs/{method}/{setting}/seed{seed}/adapter"),
    params:
        spec=lambda wildcards: quoted_json(run_spec(wildcards)),
        out=lambda wildcards, output: Path(output.spec).parent,
    threads: 1
    log:
        "results/logs/train/{method}/{setting}/seed{seed}.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} train --spec {params.spec} --out {params.out} > {log} 2>&1"

# Collect every evaluation into one row per run, the per-setting table and the trade-off plot.
rule aggregate:
    input:
        all_evaluations(),
    output:
        runs="results/runs.csv",
        table="results/table.csv",
        plot="results/plots/knowledge_vs_instructions.png",
    log:
        "results/logs/aggregate.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench aggregate --evaluations {input} --runs-csv {output.runs} --table-csv {output.table}"
        " --plot {output.plot} > {log} 2>&1"

# Collect every evaluation into one row per run, the per-setting table and the plots.
VISUAL_PLOT = {"visual_plot": "results/plots/visual_scores.png"} if VISUAL["enabled"] else {}


rule aggregate:
    input:
        all_evaluations(),
        all_visual_evaluations(),
    output:
        runs="results/runs.csv",
        table="results/table.csv",
        plot="results/plots/knowledge_vs_instructions.png",
        **VISUAL_PLOT,
    params:
        visual_plot=lambda wildcards, output: f"--visual-plot {output.visual_plot}" if VISUAL_PLOT else "",
    log:
        "results/logs/aggregate.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench aggregate --evaluations {input} --runs-csv {output.runs} --table-csv {output.table}"
        " --plot {output.plot} {params.visual_plot} > {log} 2>&1"
